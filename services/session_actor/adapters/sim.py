"""The WhatsApp client for the simulated WhatsApp service (services/wa_sim), over NATS.

It does what whatsmeow does against the real servers, through the protocol in
contracts/sim.py: each connect() opens a new connection (a random `conn_id`; its frames
arrive on `wasim._conn.<conn_id>`), the store is an SQLite file holding the linked
device, and the factory (one per node) keeps every open connection alive with one
batched keepalive request per interval.

Everything runs on the event loop's thread; sqlite3 is safe here because no Go library
shares the process in simulator mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from contracts import sim
from contracts.envelope import ContractError
from contracts.messages import MessageParts, parts
from contracts.types import utcnow
from services.common.bus import request
from services.common.config import Settings
from services.common.offload import off_loop_if_large
from services.common.tasks import cancel_and_wait
from services.credentials import DEVICE_TABLES
from services.session_actor import machine
from services.session_actor.adapters.base import (
    ClientFactory,
    Clock,
    Emit,
    InboundMedia,
    InboundMessage,
    MediaFetchError,
    OfflineSyncCompleted,
    Outgoing,
    Receipt,
    SendError,
    SendResult,
    StoreChanged,
    WhatsAppClient,
)
from services.session_actor.inbound_media import MEDIA_DOWNLOAD_FAILED, MEDIA_UNAVAILABLE

log = structlog.get_logger(__name__)

DEVICE_TABLE = DEVICE_TABLES["sim"]
CONNECT_TIMEOUT = 5.0
SEND_TIMEOUT = 10.0
REQUEST_TIMEOUT = 5.0
# Past it the server has surely dropped the connection anyway (no keepalives since).
DISCONNECT_TIMEOUT = 30.0
# Acks are best effort (a lost one means a redelivery); a short wait keeps a hung simulator
# from stalling the actor.
ACK_TIMEOUT = 1.0
# Send errors that no retry can fix.
PERMANENT_SEND_ERRORS = frozenset({sim.NOT_ON_WHATSAPP, sim.MEDIA_TOO_LARGE, "invalid_request"})

_frames = msgspec.json.Decoder(sim.AnyFrame)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SimStore:
    """The credential store: an SQLite file whose `sim_device` row is the linked device.

    No file or no row means unpaired. `sim_keys` holds the newest key material, which the
    server rotates now and then, so the store changes over time like whatsmeow's.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> sim.DeviceCredentials | None:
        if not self.path.exists():
            return None
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            try:
                row = db.execute(
                    f"SELECT jid, device_id, secret, key_generation FROM {DEVICE_TABLE}"
                ).fetchone()
            except sqlite3.OperationalError:  # no table: nothing was ever paired
                return None
        return sim.DeviceCredentials(*row) if row else None

    def write(self, device: sim.DeviceCredentials) -> None:
        with self._transaction() as db:
            db.execute(f"DELETE FROM {DEVICE_TABLE}")
            db.execute(
                f"INSERT INTO {DEVICE_TABLE} (jid, device_id, secret, key_generation, updated_at) VALUES (?, ?, ?, ?, ?)",
                (device.jid, device.device_id, device.secret, device.key_generation, utcnow().isoformat()),
            )

    def rotate_keys(self, key_generation: int, keys: str) -> None:
        with self._transaction() as db:
            db.execute(
                f"UPDATE {DEVICE_TABLE} SET key_generation = ?, updated_at = ?",
                (key_generation, utcnow().isoformat()),
            )
            db.execute("DELETE FROM sim_keys")
            db.execute(
                "INSERT INTO sim_keys (key_generation, material) VALUES (?, ?)", (key_generation, keys)
            )

    def clear(self) -> None:
        if self.path.exists():
            with self._transaction() as db:
                db.execute(f"DELETE FROM {DEVICE_TABLE}")
                db.execute("DELETE FROM sim_keys")

    def snapshot(self) -> bytes:
        if not self.path.exists():
            raise FileNotFoundError(self.path)
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            return db.serialize()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # A connection per write: the node deletes store files, so none is held open.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(self.path)) as db, db:
            # No fsync: this file is a working copy on the loop's thread; the vault keeps
            # the durable one (snapshots), and a node never reuses a store after a crash.
            db.execute("PRAGMA synchronous = OFF")
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {DEVICE_TABLE} "
                "(jid TEXT, device_id TEXT, secret TEXT, key_generation INTEGER, updated_at TEXT)"
            )
            db.execute("CREATE TABLE IF NOT EXISTS sim_keys (key_generation INTEGER, material TEXT)")
            yield db


@dataclass(eq=False)
class _Connection:
    conn_id: str
    subscription: Subscription
    # False once either side closed it. The subscription is released by the next connect(),
    # disconnect() or close(), never from inside its own callback (nats-py would cancel it).
    open: bool = True


class SimClient(WhatsAppClient):
    device_table = DEVICE_TABLE

    def __init__(
        self, factory: SimClientFactory, session_id: str, store_path: Path, emit: Emit, clock: Clock
    ) -> None:
        super().__init__(session_id, store_path, emit, clock)
        self._factory = factory
        self._store = SimStore(store_path)
        self._conn: _Connection | None = None

    # -- WhatsAppClient -----------------------------------------------------------------
    async def connect(self) -> None:
        await self.disconnect()  # a new connection replaces ours, like a fresh websocket
        device = self._store.read()
        conn_id = secrets.token_hex(8)
        try:
            subscription = await self._factory.nc.subscribe(
                self._factory.settings.subjects.sim_conn(conn_id), cb=self._on_frame
            )
        except nats.errors.Error as exc:
            self._emit(machine.Disconnected(self._clock(), f"cannot reach the simulated WhatsApp: {exc!r}"))
            return
        conn = self._conn = _Connection(conn_id, subscription)
        try:
            await self._factory.call(
                "connect", sim.ConnectRequest(conn_id, self.session_id, device), CONNECT_TIMEOUT
            )
        except (nats.errors.Error, ContractError) as exc:
            if conn.open:
                await self.disconnect()  # a timed-out connect may have opened it at the server
                self._emit(machine.Disconnected(self._clock(), f"connect failed: {exc!r}"))
            return
        if conn.open:  # a refusal may have closed it already
            self._factory.track(conn_id, self)

    async def disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.open:
            self._closed(conn)
            # Awaited until the server confirms, so it has closed the connection before this
            # session's next owner connects: a busy server may still count the connection
            # live (its last keepalive is recent) and would see two at once.
            with contextlib.suppress(nats.errors.Error, ContractError):
                await self._factory.call("disconnect", sim.DisconnectRequest(conn.conn_id), DISCONNECT_TIMEOUT)
        with contextlib.suppress(nats.errors.Error):
            await conn.subscription.unsubscribe()

    async def logout(self) -> None:
        device = self._store.read()
        await self.disconnect()
        if device is not None:
            await self._factory.call("logout", sim.LogoutRequest(device), REQUEST_TIMEOUT)
        self._store.clear()

    async def pair_phone(self, phone: str) -> str:
        conn = self._open_connection()
        if conn is None:
            raise ContractError(sim.NOT_CONNECTED, "no open connection to pair on")
        data = await self._factory.call(
            "pair_phone", sim.PairPhoneRequest(conn.conn_id, phone), REQUEST_TIMEOUT
        )
        return msgspec.convert(data, sim.PairPhoneReply).code

    async def send(self, to_jid: str, message: Outgoing, ref: str) -> SendResult:
        conn = self._open_connection()
        if conn is None:
            raise SendError(sim.NOT_CONNECTED, "not connected to WhatsApp")
        reply_to = None if message.reply_to is None else message.reply_to.message_id
        body: msgspec.Struct
        if message.media is not None:
            media = message.media
            # What a real client sends after uploading: the file's description, not the file.
            body = sim.SendMediaRequest(
                conn_id=conn.conn_id,
                to=to_jid,
                ref=ref,
                kind=media.kind,  # type: ignore[arg-type]
                mime=media.mime,
                size=len(media.data),
                sha256=await off_loop_if_large(len(media.data), _sha256, media.data),
                filename=media.filename,
                caption=media.caption,
                reply_to=reply_to,
            )
        else:
            body = sim.SendRequest(
                conn_id=conn.conn_id,
                to=to_jid,
                ref=ref,
                text=message.text,
                reply_to=reply_to,
                **parts(message.parts),
            )
        reply = msgspec.convert(await self._call("send_media" if message.media else "send", body), sim.SendReply)
        return SendResult(reply.message_id, reply.timestamp)

    async def mark_read(self, chat: str, message_ids: Sequence[str], sender: str | None) -> None:
        conn = self._open_connection()
        if conn is None:
            raise SendError(sim.NOT_CONNECTED, "not connected to WhatsApp")
        await self._call("mark_read", sim.MarkReadRequest(conn.conn_id, chat, list(message_ids), sender))

    async def _call(self, op: str, body: msgspec.Struct) -> Any:
        """A request that makes WhatsApp send something; its failures as SendErrors."""
        try:
            return await self._factory.call(op, body, SEND_TIMEOUT)
        except nats.errors.TimeoutError:
            raise SendError(
                "timeout", "no answer from WhatsApp: the message may have gone out", ambiguous=True
            ) from None
        except nats.errors.Error as exc:  # nobody answers, or our NATS connection is closed: not sent
            raise SendError(sim.NOT_CONNECTED, f"WhatsApp unreachable: {exc!r}") from None
        except ContractError as exc:
            raise SendError(exc.code, exc.message, permanent=exc.code in PERMANENT_SEND_ERRORS) from None

    async def _download(self, media: sim.SimMedia) -> bytes:
        """A file of an inbound message: WhatsApp's media server is asked (over the current
        connection, as the one it came on may be gone), then the bytes are read."""
        conn = self._open_connection()
        if conn is None:
            raise MediaFetchError(MEDIA_DOWNLOAD_FAILED, "not connected to WhatsApp")
        try:
            await self._factory.call("download", sim.DownloadRequest(conn.conn_id, media.direct_path), REQUEST_TIMEOUT)
            bucket = await self._factory.media_bucket()
            return (await bucket.get(media.direct_path)).data or b""
        except NotFoundError:  # the object (or the bucket) is gone
            raise MediaFetchError(
                MEDIA_UNAVAILABLE, "the file is no longer on WhatsApp's media servers", permanent=True
            ) from None
        except (nats.errors.Error, ContractError) as exc:
            raise MediaFetchError(MEDIA_DOWNLOAD_FAILED, f"WhatsApp's media server: {exc}") from None

    async def show_typing(self, to_jid: str) -> None:
        conn = self._open_connection()
        if conn is None:
            return  # the send that follows reports the missing connection
        with contextlib.suppress(nats.errors.Error, ContractError):
            await self._factory.call("presence", sim.PresenceRequest(conn.conn_id, to_jid), SEND_TIMEOUT)

    async def snapshot(self) -> bytes:
        return self._store.snapshot()

    # -- frames from the server ---------------------------------------------------------
    async def _on_frame(self, msg: Msg) -> None:
        conn = self._conn
        if (
            conn is None
            or not conn.open
            or msg.subject != self._factory.settings.subjects.sim_conn(conn.conn_id)
        ):
            return
        try:
            frame = _frames.decode(msg.data)
        except msgspec.MsgspecError as exc:
            log.warning("unreadable frame from the simulator", session=self.session_id, error=str(exc))
            return
        self._on(conn, frame)

    def _on(self, conn: _Connection, frame: sim.AnyFrame) -> None:
        now = self._clock()
        match frame:
            case sim.QrFrame(code=code):
                self._emit(machine.QrShown(now, code))
            case sim.PairSuccessFrame(device=device):
                self._store.write(device)
                self._emit(machine.PairSucceeded(now, device.jid))
            case sim.ConnectedFrame(jid=jid):
                self._emit(machine.Connected(now, jid))
            case sim.ConnectFailureFrame(code=machine.TEMP_BANNED_CODE, expires_in=left):
                self._closed(conn)
                self._emit(machine.TemporaryBan(now, machine.TEMP_BANNED_CODE, float(left or 0)))
            case sim.ConnectFailureFrame(code=code, message=message):
                self._closed(conn)
                self._emit(machine.ConnectFailure(now, code, message))
            case sim.StreamReplacedFrame():
                self._closed(conn)
                self._emit(machine.StreamReplaced(now))
            case sim.LoggedOutFrame(reason=reason):
                self._closed(conn)
                self._emit(machine.LoggedOut(now, reason))
            case sim.TemporaryBanFrame(code=code, expires_in=left):
                self._closed(conn)
                self._emit(machine.TemporaryBan(now, code, float(left)))
            case sim.DisconnectedFrame(reason=reason):
                self._closed(conn)
                self._emit(machine.Disconnected(now, reason))
            case sim.CredsUpdateFrame(key_generation=generation, keys=keys):
                self._store.rotate_keys(generation, keys)
                self._emit(StoreChanged())
            case sim.MessageFrame():
                self._emit(self._inbound(conn, frame))
            case sim.ReceiptFrame(kind=kind, message_ids=message_ids, chat=chat, receipt_id=receipt_id):
                self._emit(
                    Receipt(kind, tuple(message_ids), chat, ack=partial(self._ack, conn.conn_id, receipt_id))
                )
            case sim.OfflineSyncCompletedFrame(count=count):
                self._emit(OfflineSyncCompleted(count))

    def _inbound(self, conn: _Connection, frame: sim.MessageFrame) -> InboundMessage:
        file = frame.media
        return InboundMessage(
            message_id=frame.message_id,
            chat=frame.chat,
            sender=frame.sender,
            from_me=False,
            type=frame.type,
            timestamp=frame.timestamp,
            text=frame.text,
            media=None
            if file is None
            else InboundMedia(
                mime=file.mime,
                download=partial(self._download, file),
                size=file.size,
                sha256=file.sha256,
                filename=file.filename,
                seconds=file.seconds,
                width=file.width,
                height=file.height,
            ),
            parts=MessageParts(**parts(frame, MessageParts)),
            ack=partial(self._ack, conn.conn_id, frame.message_id),
        )

    async def _ack(self, conn_id: str, message_id: str) -> None:
        """Best effort: an ack lost with its connection only means the frame comes again."""
        with contextlib.suppress(nats.errors.Error, ContractError):
            await self._factory.call("ack", sim.AckRequest(conn_id, [message_id]), ACK_TIMEOUT)

    # -- from the factory's keepalive ---------------------------------------------------
    def connection_unknown(self, conn_id: str) -> None:
        """The server no longer knows this connection (closed, or expired without keepalives)."""
        conn = self._conn
        if conn is not None and conn.open and conn.conn_id == conn_id:
            self._closed(conn)
            self._emit(machine.Disconnected(self._clock(), "connection closed by WhatsApp"))

    def keepalive_failed(self) -> None:
        self._emit(machine.KeepAliveTimeout(self._clock()))

    def keepalive_restored(self) -> None:
        self._emit(machine.KeepAliveRestored(self._clock()))

    # -- helpers ------------------------------------------------------------------------
    def _open_connection(self) -> _Connection | None:
        conn = self._conn
        return conn if conn is not None and conn.open else None

    def _closed(self, conn: _Connection) -> None:
        conn.open = False
        self._factory.untrack(conn.conn_id)


class SimClientFactory(ClientFactory):
    device_table = DEVICE_TABLE

    def __init__(self, nc: NatsClient, settings: Settings) -> None:
        self.nc = nc
        self.settings = settings
        self._open: dict[str, SimClient] = {}  # open connections of this node
        self._keepalive: asyncio.Task[None] | None = None
        self._may_act: Callable[[], bool] = lambda: True
        self._media: ObjectStore | None = None

    async def start(self, may_act: Callable[[], bool] = lambda: True) -> None:
        self._may_act = may_act
        self._keepalive = asyncio.create_task(self._keepalive_loop(), name="sim-keepalive")

    async def stop(self) -> None:
        await cancel_and_wait(self._keepalive)
        self._keepalive = None

    def create(self, session_id: str, store_path: Path, emit: Emit, clock: Clock) -> SimClient:
        return SimClient(self, session_id, store_path, emit, clock)

    async def call(self, op: str, body: msgspec.Struct, timeout: float) -> Any:
        """One wire request; returns `data`, raises ContractError or nats.errors.Error."""
        return await request(self.nc, self.settings.subjects.sim_wire(op), body, timeout)

    async def media_bucket(self) -> ObjectStore:
        """The simulated WhatsApp's media servers (the simulator creates the bucket)."""
        if self._media is None:
            self._media = await self.nc.jetstream().object_store(self.settings.subjects.sim_media_bucket)
        return self._media

    def track(self, conn_id: str, client: SimClient) -> None:
        self._open[conn_id] = client

    def untrack(self, conn_id: str) -> None:
        self._open.pop(conn_id, None)

    async def _keepalive_loop(self) -> None:
        interval = self.settings.sim_keepalive_interval
        failing = False
        while True:
            await asyncio.sleep(interval)
            # Without a valid lease the connections are left to expire at the server within
            # the keepalive timeout, before the lease can expire and another node connect.
            if not self._open or not self._may_act():
                continue
            try:
                failing = await self._keepalive_round(interval, failing)
            except Exception:
                log.exception("keepalive round failed")

    async def _keepalive_round(self, timeout: float, failing: bool) -> bool:
        """One keepalive for every open connection; returns whether it failed."""
        try:
            data = await self.call("keepalive", sim.KeepaliveRequest(list(self._open)), timeout)
        except (nats.errors.Error, ContractError) as exc:
            log.warning("keepalive failed", connections=len(self._open), error=repr(exc))
            for client in list(self._open.values()):
                client.keepalive_failed()
            return True
        for conn_id in msgspec.convert(data, sim.KeepaliveReply).unknown:
            client = self._open.get(conn_id)
            if client is not None:
                client.connection_unknown(conn_id)
        if failing:
            for client in list(self._open.values()):
                client.keepalive_restored()
        return False
