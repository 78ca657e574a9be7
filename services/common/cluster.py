"""A live view of the leases bucket: which nodes are alive and which node owns each session.

Keys of the `<PREFIX>_LEASES` bucket:

    node.<node_id>   NodeLease, with a per-message TTL: disappears when the node stops renewing
    own.<sid>        Ownership: exists exactly while the session exists; `node` is its owner

Both kinds live in one bucket, hence one stream, so a watcher sees them in the order they
happened: a node's lease always before that node's claims. The view is what every process
uses to decide (placement, routing, status truth); writes go through compare-and-set on
the revisions kept here.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from contracts.internal import NodeLease, Ownership
from services.common.config import Settings
from services.common.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

NODE = "node."
OWN = "own."

def fence_token(epoch_ms: int, revision: int) -> str:
    """The fencing token of the claim that produced `own.<sid>` revision `revision`.

    Ordered as a string: bucket incarnation first, then KV revision. Revisions only grow
    within one bucket; the epoch (the bucket stream's creation time) keeps tokens growing
    if the bucket is ever recreated and revisions restart at 1.
    """
    return f"{epoch_ms:014d}.{revision:016d}"


Token = tuple[int, int]  # (epoch_ms, revision): compared as numbers
_TOKEN = re.compile(r"(\d{1,19})\.(\d{1,19})", re.ASCII)


def parse_token(text: str) -> Token | None:
    """A fencing token read from the bus or the database, as numbers; None for anything
    that is not one. Trap: compared as strings, `"zzzz"` outranked every real token, and a
    forged status event carrying it made the intake refuse every send of the session."""
    match = _TOKEN.fullmatch(text)
    return None if match is None else (int(match[1]), int(match[2]))


def token_happened(token: Token, epoch_ms: int, latest_revision: int) -> bool:
    """Could a claim have produced `token`: of this leases bucket's incarnation or an
    earlier one, and no newer than its latest revision? A token from the future would
    outrank every real owner's events from then on."""
    epoch, revision = token
    return epoch < epoch_ms or (epoch == epoch_ms and revision <= latest_revision)


_node_decoder = msgspec.json.Decoder(NodeLease)
_own_decoder = msgspec.json.Decoder(Ownership)


@dataclass
class OwnerEntry:
    owner: Ownership
    revision: int


@dataclass
class ClusterView:
    nodes: dict[str, NodeLease] = field(default_factory=dict)
    sessions: dict[str, OwnerEntry] = field(default_factory=dict)

    def owner_of(self, sid: str) -> str | None:
        """The session's owner if that owner's lease is alive, else None."""
        entry = self.sessions.get(sid)
        if entry is None or entry.owner.node is None:
            return None
        return entry.owner.node if entry.owner.node in self.nodes else None

    def owners(self) -> dict[str, str | None]:
        return {sid: entry.owner.node for sid, entry in self.sessions.items()}


Listener = Callable[[str, str], None]  # (kind, key) with kind in node_up/node_down/owner/session_gone


class ClusterWatcher:
    """Keeps a ClusterView current from a KV watch; calls listeners on every change."""

    def __init__(self, js: JetStreamContext, settings: Settings) -> None:
        self._js = js
        self._bucket_name = settings.subjects.leases_bucket
        self._lease_ttl = float(settings.lease_ttl)
        self._last_seen: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.view = ClusterView()
        self.ready = asyncio.Event()
        self.epoch_ms = 0
        self._listeners: list[Listener] = []
        self.kv: KeyValue | None = None

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        self.kv = await self._js.key_value(self._bucket_name)
        info = await self._js.stream_info(f"KV_{self._bucket_name}")
        self.epoch_ms = int(info.created.timestamp() * 1000) if info.created else 0
        watcher = await self.kv.watchall()
        self._tasks = [
            asyncio.create_task(self._run(watcher), name="cluster-watch"),
            asyncio.create_task(self._sweep(), name="cluster-sweep"),
        ]
        await self.ready.wait()

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)

    async def _sweep(self) -> None:
        """Confirm with the server any node whose renewals we have not seen for a lease TTL.

        Expiry markers are delivered to watchers, but a watcher that was disconnected when
        one was written may never see it; a direct read settles it.
        """
        assert self.kv is not None
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for node_id in [n for n, seen in self._last_seen.items() if now - seen > self._lease_ttl + 1]:
                try:
                    entry = await self.kv.get(NODE + node_id)
                    alive = bool(entry.value)
                except KeyNotFoundError:
                    alive = False
                except Exception:
                    continue  # cannot tell now; try again next round
                if alive:
                    self._last_seen[node_id] = time.monotonic()
                else:
                    self._apply(NODE + node_id, KV_PURGE, None, 0)

    async def _run(self, watcher: KeyValue.KeyWatcher) -> None:
        try:
            async for entry in watcher:
                if entry is None:  # end of the initial values
                    self.ready.set()
                    continue
                try:
                    self._apply(entry.key, entry.operation, entry.value, entry.revision)
                except msgspec.DecodeError:
                    # Only the services may write the bucket (NATS permissions); should anything
                    # else land in it, the view goes on without it instead of stopping.
                    log.warning("leases bucket entry ignored: not a lease or an ownership", key=entry.key)
        except asyncio.CancelledError:
            await watcher.stop()
            raise

    async def claimed(self, sid: str, token: Token) -> bool:
        """Did a claim in this bucket produce `token`? The view answers once it has seen the
        claim; a newer token (an event that outran the watch) is checked against the
        bucket's latest revision."""
        entry = self.view.sessions.get(sid)
        if token_happened(token, self.epoch_ms, entry.revision if entry is not None else 0):
            return True
        latest = (await self._js.stream_info(f"KV_{self._bucket_name}")).state.last_seq
        return token_happened(token, self.epoch_ms, latest)

    def learn(self, sid: str, owner: Ownership, revision: int) -> None:
        """This process's own compare-and-set on `own.<sid>` succeeded: the view shows it now
        rather than when the watch delivers it. Meanwhile a placement round read the entry as
        before the write, and restarted an actor for a session its node had just handed off
        while the next owner connected (two owners, overlapping connections)."""
        entry = self.view.sessions.get(sid)
        if entry is not None and entry.revision < revision:
            self.view.sessions[sid] = OwnerEntry(owner, revision)
            self._emit("owner", sid)

    def _apply(self, key: str, operation: str | None, value: bytes | None, revision: int) -> None:
        gone = operation in (KV_DEL, KV_PURGE) or not value
        if key.startswith(NODE):
            node_id = key[len(NODE) :]
            if gone:
                self._last_seen.pop(node_id, None)
                if self.view.nodes.pop(node_id, None) is not None:
                    self._emit("node_down", node_id)
                return
            before = self.view.nodes.get(node_id)
            lease = self.view.nodes[node_id] = _node_decoder.decode(value)
            self._last_seen[node_id] = time.monotonic()
            if before is None:
                self._emit("node_up", node_id)
            elif lease.leaving and not before.leaving:
                self._emit("node_leaving", node_id)
        elif key.startswith(OWN):
            sid = key[len(OWN) :]
            if gone:
                if self.view.sessions.pop(sid, None) is not None:
                    self._emit("session_gone", sid)
                return
            self.view.sessions[sid] = OwnerEntry(_own_decoder.decode(value), revision)
            self._emit("owner", sid)

    def _emit(self, kind: str, key: str) -> None:
        for listener in self._listeners:
            try:
                listener(kind, key)
            except Exception:
                log.exception("cluster listener failed", kind=kind, key=key)
