"""Narrow fakes for the inputs of a session actor and its send executor.

Each stands in for exactly the calls the code under test makes (see
services/session_actor/host.py); behaviour that matters for the guarantees (compare-and-set
revisions of the KV, fencing of status writes, ack/nak of queued messages) is kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from contracts.internal import QueuedSend
from contracts.subjects import Subjects
from contracts.types import utcnow
from services.common.bus import encode
from services.common.config import Settings
from services.common.connection import Reconnections
from services.common.media import MediaLimits
from services.credentials.vault import Restored, VaultError
from services.sending.journal import SendJournal
from services.sending.ledger import Ledger
from services.sending.policy import RetryPolicy, default_pacing
from services.session_actor import machine as m
from services.session_actor.adapters.base import (
    ClientFactory,
    Clock,
    Emit,
    Outgoing,
    SendError,
    SendResult,
    WhatsAppClient,
)
from services.session_actor.commands import CommandHandler, Unlisten
from services.session_actor.host import ActorHost
from services.session_actor.inbound import InboundKit
from services.session_actor.inbound_media import InboundMediaPolicy
from services.session_actor.media_store import StoredFile
from services.session_actor.outbound import SendingKit
from services.session_actor.store_files import StoreFiles

SUBJECTS = Subjects("t", "ts")


class FakeKV:
    """A KV bucket in memory, with the revisions compare-and-set relies on."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, int]] = {}
        self._revisions = itertools.count(1)

    async def create(self, key: str, value: bytes, **_: Any) -> int:
        if key in self._data:
            raise KeyWrongLastSequenceError(description=f"{key} exists")
        return self._store(key, value)

    async def update(self, key: str, value: bytes, last: int | None = None, **_: Any) -> int:
        current = self._data.get(key)
        if current is None or current[1] != last:
            raise KeyWrongLastSequenceError(description=f"{key} is not at revision {last}")
        return self._store(key, value)

    async def put(self, key: str, value: bytes, **_: Any) -> int:
        return self._store(key, value)

    async def get(self, key: str) -> KeyValue.Entry:
        if key not in self._data:
            raise KeyNotFoundError
        value, revision = self._data[key]
        return KeyValue.Entry("fake", key, value, revision, None, None, None)

    async def delete(self, key: str, **_: Any) -> bool:
        self._data.pop(key, None)
        return True

    def _store(self, key: str, value: bytes) -> int:
        revision = next(self._revisions)
        self._data[key] = (value, revision)
        return revision


@dataclass
class Published:
    subject: str
    body: dict[str, Any]


class FakeJetStream:
    """What the ledger publishes (events, dead letters), decoded."""

    def __init__(self) -> None:
        self.published: list[Published] = []
        self.failing = 0  # the next publishes that fail, as during a leader election

    async def publish(self, subject: str, payload: bytes = b"", **_: Any) -> None:
        if self.failing:
            self.failing -= 1
            raise nats.errors.TimeoutError
        self.published.append(Published(subject, msgspec.json.decode(payload)))

    def outbound_states(self, send_id: str) -> list[str]:
        return [p.body["state"] for p in self.published if p.body.get("id") == send_id and "state" in p.body]

    def dead_letters(self) -> list[dict[str, Any]]:
        return [p.body for p in self.published if p.subject.startswith(SUBJECTS.dead_letter("").rstrip("."))]


class FakeMsg:
    """A queued send as JetStream hands it out; `outcome` is how it was settled."""

    def __init__(self, queue: FakeQueue, item: QueuedSend) -> None:
        self._queue = queue
        self.item = item
        self.data = encode(item)
        self.outcome: str | None = None
        self.nak_delay: float | None = None
        self.in_progress_calls = 0

    async def ack(self) -> None:
        self.outcome = "ack"

    async def nak(self, delay: float | None = None) -> None:
        self.outcome, self.nak_delay = "nak", delay
        self._queue.redeliver(self)

    async def in_progress(self) -> None:
        self.in_progress_calls += 1


class FakeQueue:
    """One session's queue: one message in flight; a NAKed message keeps its place."""

    def __init__(self) -> None:
        self._waiting: list[FakeMsg] = []
        self._ready = asyncio.Event()
        self.delivered: list[FakeMsg] = []
        self.forgotten = False
        # Pull requests the server forgot (the client's connection went away): a fetch under
        # way then sees nothing more until its own timeout.
        self.requests_lost = False
        self.fetches: list[float] = []  # the timeout of each fetch made

    def add(self, item: QueuedSend) -> FakeMsg:
        msg = FakeMsg(self, item)
        self._waiting.append(msg)
        self._ready.set()
        return msg

    def redeliver(self, msg: FakeMsg) -> None:
        self._waiting.insert(0, FakeMsg(self, msg.item))
        self._ready.set()

    # SendQueues
    async def open(self, sid: str) -> FakeQueue:
        return self

    async def forget(self, sid: str) -> None:
        self.forgotten = True

    # the pull subscription
    async def fetch(self, batch: int = 1, timeout: float = 5.0) -> list[FakeMsg]:
        if self.delivered and self.delivered[-1].outcome is None:
            raise AssertionError("fetched while a message was still in flight")
        self.fetches.append(timeout)
        async with asyncio.timeout(timeout):
            while not self._waiting or self.requests_lost:
                self._ready.clear()
                await self._ready.wait()
        msg = self._waiting.pop(0)
        self.delivered.append(msg)
        return [msg]

    async def unsubscribe(self) -> None:
        pass


def queued(send_id: str, sid: str = "s1", text: str = "hi", **fields: Any) -> QueuedSend:
    return QueuedSend(id=send_id, session_id=sid, to="15550001111", text=text, accepted_at=utcnow(), **fields)


def sending_kit(kv: FakeKV, js: FakeJetStream, queue: FakeQueue, **settings: Any) -> SendingKit:
    values: dict[str, Any] = {"pacing_enabled": False, "send_max_attempts": 3, **settings}
    config = Settings(**values)
    return SendingKit(
        ledger=Ledger(js, SUBJECTS, SendJournal(kv)),  # type: ignore[arg-type]
        queues=queue,  # type: ignore[arg-type]
        reconnections=Reconnections(),
        retry=RetryPolicy(config.send_max_attempts, 0.01, 0.05),
        default_pacing=default_pacing(config),
        media_limits=MediaLimits.from_settings(config),
        media_concurrency=1,
    )


@dataclass
class SentMessage:
    to: str
    message: Outgoing
    ref: str
    at: float
    journal_state: str | None = None  # the send's journal record when it reached WhatsApp


class FakeClient(WhatsAppClient):
    """A WhatsApp connection that answers at once; `failures` scripts send errors."""

    device_table = "fake_device"

    def __init__(self, session_id: str, store_path: Path, emit: Emit, clock: Clock) -> None:
        super().__init__(session_id, store_path, emit, clock)
        self.sent: list[SentMessage] = []
        self.read: list[tuple[str, tuple[str, ...], str | None]] = []
        self.failures: list[SendError] = []
        self.calls: list[str] = []
        self.on_send: Callable[[str], Awaitable[str | None]] | None = None
        self.jid = "15550009999@s.whatsapp.net"
        self.store = b"store-bytes"

    async def connect(self) -> None:
        """Linked (a store was restored for it): connected at once; else a QR code to scan."""
        self.calls.append("connect")
        if self.store_path.exists():
            self._emit(m.Connected(self._clock(), self.jid))
        else:
            self._emit(m.QrShown(self._clock(), "qr-1"))

    async def disconnect(self) -> None:
        self.calls.append("disconnect")

    async def logout(self) -> None:
        self.calls.append("logout")

    async def pair_phone(self, phone: str) -> str:
        return "ABCD-EFGH"

    async def send(self, to_jid: str, message: Outgoing, ref: str) -> SendResult:
        state = await self.on_send(ref) if self.on_send is not None else None
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(SentMessage(to_jid, message, ref, asyncio.get_running_loop().time(), state))
        return SendResult(message_id=f"wa-{ref}", timestamp=utcnow())

    async def mark_read(self, chat: str, message_ids: Sequence[str], sender: str | None) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.read.append((chat, tuple(message_ids), sender))

    async def show_typing(self, to_jid: str) -> None:
        self.calls.append("typing")

    async def snapshot(self) -> bytes:
        return self.store


class FakeClients(ClientFactory):
    device_table = "fake_device"

    def __init__(self) -> None:
        self.created: list[FakeClient] = []

    def create(self, session_id: str, store_path: Path, emit: Emit, clock: Clock) -> FakeClient:
        client = FakeClient(session_id, store_path, emit, clock)
        self.created.append(client)
        return client


class FakeSessions:
    """Session documents with the owner-token fence of services/common/sessions.py."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.reports: list[dict[str, Any]] = []

    def add(self, sid: str, state: str = "created") -> None:
        now = utcnow()
        self.docs[sid] = {"_id": sid, "state": state, "since": now, "created_at": now, "owner_token": ""}

    async def fence(self, sid: str, token: str) -> None:
        if sid in self.docs:
            self.docs[sid]["owner_token"] = max(self.docs[sid]["owner_token"], token)

    async def get(self, sid: str) -> dict[str, Any] | None:
        return self.docs.get(sid)

    async def report(self, sid: str, token: str, *, state: str, since: datetime, **fields: Any) -> bool:
        doc = self.docs.get(sid)
        if doc is None or doc["owner_token"] > token:
            return False
        doc.update(state=state, since=since, owner_token=token, **fields)
        self.reports.append({"state": state, **fields})
        return True


class FakeVault:
    def __init__(self) -> None:
        self.stores: dict[str, Restored] = {}
        self.saves: list[bytes] = []
        self.destroyed: list[str] = []
        self.broken: str | None = None  # restore raises VaultError with this text

    async def fence(self, sid: str, token: str) -> None:
        pass

    async def restore(self, sid: str) -> Restored | None:
        if self.broken is not None:
            raise VaultError(self.broken)
        return self.stores.get(sid)

    async def save(self, sid: str, token: str, store: bytes, last: Restored | None = None) -> Restored | None:
        self.saves.append(store)
        saved = Restored(store, len(self.saves), str(hash(store)))
        self.stores[sid] = saved
        return saved

    async def destroy(self, sid: str, token: str | None = None) -> bool:
        self.destroyed.append(sid)
        self.stores.pop(sid, None)
        return True


class FakeEvents:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def publish(self, event: Any) -> None:
        self.events.append(event)

    def states(self) -> list[str]:
        return [e.state for e in self.events if type(e).__name__ == "StatusEvent"]


class FakeCommands:
    def __init__(self) -> None:
        self.handlers: dict[str, CommandHandler] = {}

    async def listen(self, sid: str, handle: CommandHandler) -> Unlisten:
        self.handlers[sid] = handle

        async def unlisten() -> None:
            self.handlers.pop(sid, None)

        return unlisten


class FakeMediaFiles:
    """The media bucket in memory; `failures` scripts put errors."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.headers: dict[str, dict[str, str]] = {}
        self.failures: list[Exception] = []

    async def find(self, media_id: str) -> StoredFile | None:
        data = self.objects.get(media_id)
        return None if data is None else StoredFile(len(data), hashlib.sha256(data).hexdigest())

    async def put(self, media_id: str, data: bytes, *, mime: str, session: str, message_id: str) -> StoredFile:
        if self.failures:
            raise self.failures.pop(0)
        self.objects[media_id] = data
        self.headers[media_id] = {"mime": mime, "session": session, "message_id": message_id}
        return StoredFile(len(data), hashlib.sha256(data).hexdigest())


def inbound_kit(files: FakeMediaFiles, **settings: Any) -> InboundKit:
    values: dict[str, Any] = {"inbound_media_retry_base": 0.01, "inbound_media_retry_cap": 0.05, **settings}
    config = Settings(**values)
    return InboundKit(files, InboundMediaPolicy.from_settings(config), asyncio.Semaphore(config.inbound_media_concurrency))


@dataclass
class FakeNode:
    """An ActorHost's moving parts: the lease, the ownership view, background work."""

    lease_valid: bool = True
    owner: bool = True
    spawned: list[asyncio.Task[Any]] = field(default_factory=list)

    def spawn(self, work: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self.spawned.append(task)
        return task

    async def connect_slot(self) -> None:
        pass


@dataclass
class ActorWorld:
    """Everything an actor talks to, faked, and the host built from it."""

    tmp_path: Path
    node: FakeNode = field(default_factory=FakeNode)
    sessions: FakeSessions = field(default_factory=FakeSessions)
    vault: FakeVault = field(default_factory=FakeVault)
    events: FakeEvents = field(default_factory=FakeEvents)
    clients: FakeClients = field(default_factory=FakeClients)
    commands: FakeCommands = field(default_factory=FakeCommands)
    kv: FakeKV = field(default_factory=FakeKV)
    js: FakeJetStream = field(default_factory=FakeJetStream)
    queue: FakeQueue = field(default_factory=FakeQueue)
    media: FakeMediaFiles = field(default_factory=FakeMediaFiles)

    def host(self) -> ActorHost:
        return ActorHost(
            node_id="node-a",
            may_act=lambda: self.node.lease_valid,
            still_owner=lambda sid, revision: self.node.owner,
            connect_slot=self.node.connect_slot,
            spawn=self.node.spawn,
            sessions=self.sessions,
            vault=self.vault,
            events=self.events,
            clients=self.clients,
            stores=StoreFiles(self.tmp_path / "stores", "node-a"),
            commands=self.commands,
            reconnect_policy=m.ReconnectPolicy(base=0.01, cap=0.05),
            sending=sending_kit(self.kv, self.js, self.queue),
            inbound=inbound_kit(self.media),
        )

    @property
    def client(self) -> FakeClient:
        return self.clients.created[-1]
