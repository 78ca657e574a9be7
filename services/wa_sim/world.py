"""Every rule of the simulated WhatsApp, as plain code: no I/O, time comes in as `now`.
(One job, and one file over 500 lines: the rules read together, like the state machine's.)

The world holds the phone side (sessions' linked devices, bans, messages from contacts)
and the server side (connections, timers, statistics). Each operation mutates the world
and appends the frames it sends to `outbox`, in order; the service publishes them after
the operation, so frames for one connection leave in the order they were produced.

`now` is wall-clock seconds (bans survive a restart of the simulator); timers fire from
`tick(now)`. Errors are `ContractError`s, answered to the caller as they are.

Model:
- a device belongs to one session (the gateway's session id, given by the client at
  connect, like a device name); a session has at most one device: pairing again replaces
  it. A device exists exactly while it is linked.
- a connection is live until it is closed or until no keepalive refreshed it for
  `keepalive_timeout` seconds. A second connection with the same device replaces a live
  one (`stream_replaced`, counted as an overlap); a dead one is closed without a word.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import count
from typing import Literal

import msgspec

from contracts import sim
from contracts.envelope import ContractError, conflict, invalid, not_found
from contracts.messages import MEDIA_TYPES, Quoted, parts
from contracts.types import PATTERN_HINTS, SESSION_ID_PATTERN, to_jid

# Keys rotate (a `creds_update`) after this many messages sent or received on a device.
CREDS_ROTATE_EVERY = 20
# Recipients whose number starts with this are not on WhatsApp.
NOT_ON_WHATSAPP_PREFIX = "000"
# Sent messages remembered per session, so a `read` control request can name them.
REMEMBERED_SENDS = 10_000
REMEMBERED_HANGUPS = 100_000
# WhatsApp's size limits for media messages, by kind (the gateway has its own, WA_MEDIA_MAX_*).
MEDIA_LIMITS = {
    "image": 16 * 1024 * 1024,
    "audio": 16 * 1024 * 1024,
    "video": 64 * 1024 * 1024,
    "document": 100 * 1024 * 1024,
}
# What a message without a file carries: exactly one of these.
SEND_BODIES = ("text", "reaction", "edit", "revoke", "location", "contact")
# What an inbound message carries besides a text or a file (its type, by default).
INBOUND_BODIES = ("reaction", "edit", "revoke", "location", "contact", "poll")
# The alphabet of WhatsApp's phone pairing codes (no 0/O, 1/I look-alikes).
PAIR_CODE_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"

_SESSION_ID = re.compile(SESSION_ID_PATTERN)


@dataclass(frozen=True)
class Rules:
    qr_first: float = 60.0
    qr_next: float = 20.0
    qr_codes: int = 6
    keepalive_timeout: float = 3.0
    receipt_delay: float = 0.05
    # The recipient reads each message this long after delivery (0: only on `wasim.<sid>.read`).
    read_after: float = 0.0


class Device(msgspec.Struct):
    """A linked device (durable)."""

    device_id: str
    session_id: str
    jid: str
    secret: str
    key_generation: int
    ban_until: float | None = None
    # Messages since the last key rotation.
    traffic: int = 0

    def credentials(self) -> sim.DeviceCredentials:
        return sim.DeviceCredentials(self.jid, self.device_id, self.secret, self.key_generation)


class Durable(msgspec.Struct):
    """What survives a restart of the simulator: linked devices (with bans) and unacked inbound."""

    devices: list[Device] = []
    inbox: dict[str, list[sim.MessageFrame]] = {}


@dataclass
class Pairing:
    code: str
    codes_shown: int
    phone: str | None = None


@dataclass
class Connection:
    conn_id: str
    session_id: str
    last_seen: float
    device_id: str | None = None  # set once the connection is logged in
    pairing: Pairing | None = None


@dataclass
class Session:
    session_id: str
    device_id: str | None = None
    conn_id: str | None = None  # the logged-in connection
    pairing_conn_id: str | None = None  # the connection showing the current pairing code
    # Inbound messages not yet acked, in arrival order: redelivered on every connect.
    inbox: dict[str, sim.MessageFrame] = field(default_factory=dict)
    # Receipts not yet acked, by receipt id: redelivered on every connect too.
    receipts: dict[str, sim.ReceiptFrame] = field(default_factory=dict)
    sent: OrderedDict[str, str] = field(default_factory=OrderedDict)  # message id -> chat
    counters: sim.SessionStats = field(default_factory=sim.SessionStats)
    failing_sends: int = 0  # injected server errors still to give (`faults`)
    failing_downloads: int = 0  # the same for the media servers


@dataclass(frozen=True)
class Outgoing:
    conn_id: str
    frame: sim.AnyFrame


def phone_for(session_id: str) -> str:
    """The stable fake phone number of a session paired by QR code."""
    digits = int.from_bytes(hashlib.sha256(session_id.encode()).digest()[:8], "big") % 10**7
    return f"1555{digits:07d}"


def _time(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


def send_kind(req: sim.SendRequest) -> str:
    """What a send without a file is; invalid_request unless it is exactly one thing."""
    given = [name for name in SEND_BODIES if getattr(req, name) is not None]
    if len(given) != 1:
        raise invalid(f"give exactly one of {', '.join(SEND_BODIES)} (got {' and '.join(given) or 'none'})")
    if req.reply_to is not None and given[0] != "text":
        raise invalid(f"reply_to: a {given[0]} quotes nothing")
    return given[0]


def inbound_type(req: sim.InboundRequest) -> str:
    """The type of the message a contact sends: as given, or what its body is;
    invalid_request when the request does not say one thing."""
    given = [name for name in (*INBOUND_BODIES, "media") if getattr(req, name) is not None]
    if len(given) > 1:
        raise invalid(f"give at most one of media, {', '.join(INBOUND_BODIES)} (got {' and '.join(given)})")
    body = given[0] if given else None
    kind = req.type or (body if body in INBOUND_BODIES else "text")
    if body == "media" and kind not in MEDIA_TYPES:
        raise invalid(f"type: a file is one of {', '.join(sorted(MEDIA_TYPES))}, not {kind!r}")
    if body != "media" and kind in MEDIA_TYPES:
        raise invalid(f"media: a message of type {kind!r} needs its file")
    if body in INBOUND_BODIES and kind != body:
        raise invalid(f"type: {kind!r} does not go with {body}")
    if kind == "text" and req.text is None:
        raise invalid("text: required for a text message")
    if req.text is not None and kind not in ("text", *MEDIA_TYPES):
        raise invalid(f"text: a {kind} has no text (a text goes alone, or as a file's caption)")
    if kind in INBOUND_BODIES and body is None:
        raise invalid(f"{kind}: required for a message of type {kind!r}")
    return kind


class World:
    def __init__(self, rules: Rules, rng: random.Random | None = None) -> None:
        self.rules = rules
        self.rng = rng or random.Random()
        self.sessions: dict[str, Session] = {}
        self.devices: dict[str, Device] = {}
        self.conns: dict[str, Connection] = {}
        self.outbox: list[Outgoing] = []
        # Connections the client closed (ids are never reused), oldest first.
        self.hung_up: OrderedDict[str, None] = OrderedDict()
        # Bumped on every change of the durable part; the state file saves when it moves.
        self.revision = 0
        self._timers: list[tuple[float, int, Callable[[float], None]]] = []
        self._timer_seq = count()

    # -- durable part -----------------------------------------------------------------
    def durable(self) -> Durable:
        return Durable(
            devices=list(self.devices.values()),
            inbox={sid: list(s.inbox.values()) for sid, s in self.sessions.items() if s.inbox},
        )

    def restore(self, durable: Durable) -> None:
        for device in durable.devices:
            self.devices[device.device_id] = device
            self._session(device.session_id).device_id = device.device_id
        for sid, messages in durable.inbox.items():
            self._session(sid).inbox = {m.message_id: m for m in messages}

    def take_outbox(self) -> list[Outgoing]:
        out, self.outbox = self.outbox, []
        return out

    # -- timers -----------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Fire every timer that is due; each runs with its own due time as `now`."""
        while self._timers and self._timers[0][0] <= now:
            due, _, fire = heapq.heappop(self._timers)
            fire(due)

    def _at(self, due: float, fire: Callable[[float], None]) -> None:
        heapq.heappush(self._timers, (due, next(self._timer_seq), fire))

    # -- the client's side (wire requests) --------------------------------------------
    def connect(
        self, conn_id: str, session_id: str, device: sim.DeviceCredentials | None, now: float
    ) -> None:
        if conn_id in self.conns:
            raise conflict(f"connection {conn_id} exists already")
        if conn_id in self.hung_up:
            # Like a socket: once the client hung up, a connect still in flight opens nothing.
            raise conflict(f"connection {conn_id} was closed by the client")
        conn = Connection(conn_id, session_id, last_seen=now)
        self.conns[conn_id] = conn
        self._at(now + self.rules.keepalive_timeout, partial(self._expire_if_silent, conn_id))
        if device is None:
            self._start_pairing(conn, self._session(session_id), now)
            return
        known = self.devices.get(device.device_id)
        if known is None or known.secret != device.secret:
            self._refuse(conn, sim.ConnectFailureFrame(401, "device is not linked (logged out)"))
            return
        if known.ban_until is not None and known.ban_until > now:
            left = math.ceil(known.ban_until - now)
            self._refuse(conn, sim.ConnectFailureFrame(402, "temporarily banned", expires_in=left))
            return
        # The device decides which session this is, whatever name the client gave.
        conn.session_id = known.session_id
        self._log_in(conn, known, now)

    def pair_phone(self, conn_id: str, phone: str, now: float) -> str:
        conn = self._live(conn_id, now)
        if conn is None or conn.pairing is None:
            raise not_found(f"connection {conn_id} is not showing a pairing code")
        conn.pairing.phone = phone
        code = "".join(self.rng.choice(PAIR_CODE_ALPHABET) for _ in range(8))
        return f"{code[:4]}-{code[4:]}"

    def send(self, req: sim.SendRequest, now: float) -> sim.SendReply:
        """A message without a file: a text (maybe a reply), or a reaction, an edit, a revoke,
        a location or a contact. Only one's own messages can be edited or revoked."""
        conn = self._logged_in(req.conn_id, now)
        kind = send_kind(req)
        chat = to_jid(req.to)
        session = self.sessions[conn.session_id]
        target = req.target_id
        if kind in ("edit", "revoke") and session.sent.get(target or "") != chat:
            raise invalid(f"{kind}.target_id: {target!r} is not a message this session sent to {chat}")
        reply = self._deliver(conn, chat, req.ref, now)
        self._count_kind(session, req.ref, kind, req.reply_to or target)
        return reply

    def send_media(self, req: sim.SendMediaRequest, now: float) -> sim.SendReply:
        """A media message: delivered like a text, within WhatsApp's size limits."""
        conn = self._logged_in(req.conn_id, now)
        limit = MEDIA_LIMITS[req.kind]
        if req.size > limit:
            raise ContractError(
                sim.MEDIA_TOO_LARGE,
                f"WhatsApp refuses {req.kind} files over {limit:,} bytes; this one is {req.size:,} bytes",
            )
        if req.size == 0:
            raise invalid("size: an empty file cannot be sent")
        if req.kind == "audio" and req.caption is not None:
            raise invalid("caption: audio messages have no caption")
        reply = self._deliver(conn, to_jid(req.to), req.ref, now)
        session = self.sessions[conn.session_id]
        counters = session.counters
        counters.media[req.kind] = counters.media.get(req.kind, 0) + 1
        counters.media_bytes += req.size
        counters.media_sha256[req.ref] = req.sha256
        self._count_kind(session, req.ref, "media", req.reply_to)
        return reply

    def _count_kind(self, session: Session, ref: str, kind: str, target: str | None) -> None:
        kinds = session.counters.kinds
        kinds[kind] = kinds.get(kind, 0) + 1
        if target is not None:
            session.counters.targets[ref] = target
            if kind in ("text", "media"):
                kinds["reply"] = kinds.get("reply", 0) + 1

    def mark_read(self, req: sim.MarkReadRequest, now: float) -> None:
        kinds = self.sessions[self._logged_in(req.conn_id, now).session_id].counters.kinds
        kinds["read"] = kinds.get("read", 0) + len(req.message_ids)

    def download(self, conn_id: str, now: float) -> None:
        """A logged-in connection fetches a file from the media servers (injected faults fail it)."""
        session = self.sessions[self._logged_in(conn_id, now).session_id]
        session.counters.downloads += 1
        if session.failing_downloads:
            session.failing_downloads -= 1
            raise ContractError("internal", "WhatsApp media server error (simulated fault); try again later")

    def _deliver(self, conn: Connection, chat: str, ref: str, now: float) -> sim.SendReply:
        """Count a message (text or media) and schedule its receipts."""
        if chat.split("@")[0].startswith(NOT_ON_WHATSAPP_PREFIX):
            raise ContractError(sim.NOT_ON_WHATSAPP, f"{chat} is not on WhatsApp")
        session = self.sessions[conn.session_id]
        if session.failing_sends:
            session.failing_sends -= 1
            raise ContractError("internal", "WhatsApp server error (simulated fault); try again later")
        counters = session.counters
        counters.messages += 1
        seen = counters.received.get(ref, 0)
        counters.received[ref] = seen + 1
        if seen:
            counters.duplicates += 1
        message_id = self._message_id()
        session.sent[message_id] = chat
        if len(session.sent) > REMEMBERED_SENDS:
            session.sent.popitem(last=False)
        delivered = partial(self._receipt, session, "delivered", message_id, chat)
        self._at(now + self.rules.receipt_delay, delivered)
        if self.rules.read_after > 0:
            read = partial(self._receipt, session, "read", message_id, chat)
            self._at(now + self.rules.receipt_delay + self.rules.read_after, read)
        self._count_traffic(conn)
        return sim.SendReply(message_id, _time(now))

    def presence(self, conn_id: str, to: str, now: float) -> None:
        conn = self._logged_in(conn_id, now)
        self.sessions[conn.session_id].counters.presences += 1

    def ack(self, conn_id: str, message_ids: list[str], now: float) -> None:
        """Only a live connection can ack: an ack lost with its connection means redelivery."""
        session = self.sessions[self._logged_in(conn_id, now).session_id]
        for receipt_id in message_ids:
            session.receipts.pop(receipt_id, None)
        if [mid for mid in message_ids if session.inbox.pop(mid, None) is not None]:
            self.revision += 1  # the inbox is durable, the receipts are not

    def keepalive(self, conn_ids: list[str], now: float) -> list[str]:
        """Refresh the given connections; returns those the server does not know (any more)."""
        unknown = []
        for conn_id in conn_ids:
            conn = self._live(conn_id, now)
            if conn is None:
                unknown.append(conn_id)
            else:
                conn.last_seen = now
        return unknown

    def disconnect(self, conn_id: str) -> None:
        self.hung_up[conn_id] = None
        if len(self.hung_up) > REMEMBERED_HANGUPS:
            self.hung_up.popitem(last=False)
        self._close(conn_id)

    def logout(self, device: sim.DeviceCredentials, now: float) -> None:
        known = self.devices.get(device.device_id)
        if known is None:
            return  # unlinked already
        if known.secret != device.secret:
            raise ContractError("unauthorized", "wrong device secret")
        self._unlink(self.sessions[known.session_id], "logged out from this device", now)

    # -- the phone's side (control requests) ------------------------------------------
    def scan(self, session_id: str, now: float) -> str:
        """The phone scans the current QR code (or accepts the pair code): a device is linked."""
        session = self._known(session_id)
        conn = self._live(session.pairing_conn_id, now)
        if conn is None or conn.pairing is None:
            raise not_found(f"session {session_id!r} has no connection showing a pairing code")
        if session.device_id is not None:
            self._unlink(session, "another device was linked for this session", now)
        phone = conn.pairing.phone or phone_for(session_id)
        device = Device(
            device_id=self._hex(8).lower(),
            session_id=session_id,
            jid=f"{phone}@s.whatsapp.net",
            secret=self._hex(16).lower(),
            key_generation=1,
        )
        self.devices[device.device_id] = device
        self.revision += 1
        session.pairing_conn_id = None
        self._send(conn, sim.PairSuccessFrame(device.credentials()))
        self._log_in(conn, device, now)
        self._rotate_keys(conn, device)
        return device.jid

    def inbound(self, session_id: str, req: sim.InboundRequest, media: sim.SimMedia | None, now: float) -> str:
        """A contact sends a message (its file, if any, is on the media servers already)."""
        session = self._known(session_id)
        kind = inbound_type(req)
        if session.device_id is None:
            raise conflict(f"session {session_id!r} has no linked device")
        sender = to_jid(req.sender)
        quoted = None
        if req.quoted_id is not None:
            # A message this session sent is its own account's; anything else the contact's.
            ours = req.quoted_id in session.sent
            quoted = Quoted(req.quoted_id, self.devices[session.device_id].jid if ours else sender)
        message = sim.MessageFrame(
            message_id=self._message_id(),
            chat=req.group or sender,
            sender=sender,
            timestamp=_time(now),
            type=kind,
            text=req.text,
            media=media,
            quoted=quoted,
            mentions=req.mentions,
            poll=req.poll,
            **parts(req),
        )
        session.inbox[message.message_id] = message
        session.counters.inbound += 1
        self.revision += 1
        conn = self._live(session.conn_id, now)
        if conn is not None:
            self._send(conn, message)
            self._count_traffic(conn)
        return message.message_id

    def read(self, session_id: str, message_id: str, now: float) -> None:
        session = self._known(session_id)
        chat = session.sent.get(message_id)
        if chat is None:
            raise not_found(f"session {session_id!r} sent no message {message_id!r} (or long ago)")
        self._receipt(session, "read", message_id, chat, now)

    def unlink(self, session_id: str, now: float) -> bool:
        session = self._known(session_id)
        if session.device_id is None:
            raise conflict(f"session {session_id!r} has no linked device")
        return self._unlink(session, "unlinked from the phone", now)

    def drop(self, session_id: str, now: float) -> bool:
        """Close the session's connections abruptly (logged in or pairing)."""
        session = self._known(session_id)
        dropped = False
        for conn_id in (session.conn_id, session.pairing_conn_id):
            conn = self._live(conn_id, now)
            if conn is not None:
                self._send(conn, sim.DisconnectedFrame("connection dropped"))
                self._close(conn.conn_id)
                dropped = True
        return dropped

    def faults(self, session_id: str, send_errors: int | None, download_errors: int | None) -> None:
        session = self._known(session_id)
        if send_errors is not None:
            session.failing_sends = send_errors
        if download_errors is not None:
            session.failing_downloads = download_errors

    def ban(self, session_id: str, seconds: int, now: float) -> bool:
        session = self._known(session_id)
        device = self.devices.get(session.device_id or "")
        if device is None:
            raise conflict(f"session {session_id!r} has no linked device")
        device.ban_until = now + seconds
        self.revision += 1
        conn = self._live(session.conn_id, now)
        if conn is None:
            return False
        self._send(conn, sim.TemporaryBanFrame(402, seconds))
        self._close(conn.conn_id)
        return True

    def stats(self, session_id: str | None = None, refs: bool = True) -> sim.SimStats:
        chosen = [self._known(session_id)] if session_id is not None else list(self.sessions.values())
        every = [s.counters for s in self.sessions.values()]
        return sim.SimStats(
            sessions={
                s.session_id: msgspec.structs.replace(
                    s.counters,
                    received=dict(s.counters.received) if refs else {},
                    media=dict(s.counters.media),
                    media_sha256=dict(s.counters.media_sha256) if refs else {},
                    kinds=dict(s.counters.kinds),
                    targets=dict(s.counters.targets) if refs else {},
                )
                for s in chosen
            },
            totals=sim.StatsTotals(
                sessions=len(every),
                messages=sum(c.messages for c in every),
                duplicates=sum(c.duplicates for c in every),
                overlaps=sum(c.overlaps for c in every),
                connects=sum(c.connects for c in every),
                inbound=sum(c.inbound for c in every),
                presences=sum(c.presences for c in every),
                media=sum(sum(c.media.values()) for c in every),
            ),
        )

    # -- rules --------------------------------------------------------------------------
    def _start_pairing(self, conn: Connection, session: Session, now: float) -> None:
        conn.pairing = Pairing(code=self._qr_code(), codes_shown=1)
        session.pairing_conn_id = conn.conn_id
        self._send(conn, sim.QrFrame(conn.pairing.code))
        self._at(now + self.rules.qr_first, partial(self._next_qr, conn.conn_id))

    def _next_qr(self, conn_id: str, now: float) -> None:
        conn = self.conns.get(conn_id)
        if conn is None or conn.pairing is None:
            return
        if conn.pairing.codes_shown >= self.rules.qr_codes:
            # The last code expired: WhatsApp stops pairing without a word.
            self._close(conn_id)
            return
        conn.pairing.code = self._qr_code()
        conn.pairing.codes_shown += 1
        self._send(conn, sim.QrFrame(conn.pairing.code))
        self._at(now + self.rules.qr_next, partial(self._next_qr, conn_id))

    def _log_in(self, conn: Connection, device: Device, now: float) -> None:
        session = self.sessions[device.session_id]
        previous = self._live(session.conn_id, now) if session.conn_id != conn.conn_id else None
        if previous is not None:
            session.counters.overlaps += 1
            self._send(previous, sim.StreamReplacedFrame())
            self._close(previous.conn_id)
        conn.device_id = device.device_id
        conn.pairing = None
        session.conn_id = conn.conn_id
        session.device_id = device.device_id
        session.counters.connects += 1
        self._send(conn, sim.ConnectedFrame(device.jid))
        for receipt in session.receipts.values():
            self._send(conn, receipt)
        for message in session.inbox.values():
            self._send(conn, message)
            self._count_traffic(conn)
        self._send(conn, sim.OfflineSyncCompletedFrame(len(session.inbox)))

    def _refuse(self, conn: Connection, failure: sim.ConnectFailureFrame) -> None:
        self._send(conn, failure)
        self._close(conn.conn_id)

    def _unlink(self, session: Session, reason: str, now: float) -> bool:
        """Remove the session's device; its pending deliveries go with it."""
        assert session.device_id is not None
        del self.devices[session.device_id]
        session.device_id = None
        session.inbox.clear()
        session.receipts.clear()
        self.revision += 1
        conn = self._live(session.conn_id, now)
        if conn is None:
            return False
        self._send(conn, sim.LoggedOutFrame(reason))
        self._close(conn.conn_id)
        return True

    def _receipt(
        self, session: Session, kind: Literal["delivered", "read"], message_id: str, chat: str, now: float
    ) -> None:
        if session.device_id is None:
            return  # the device that sent it is gone
        receipt = sim.ReceiptFrame(kind, [message_id], chat, receipt_id=self._hex(8))
        session.receipts[receipt.receipt_id] = receipt
        conn = self._live(session.conn_id, now)
        if conn is not None:
            self._send(conn, receipt)

    def _count_traffic(self, conn: Connection) -> None:
        device = self.devices[conn.device_id or ""]
        device.traffic += 1
        if device.traffic >= CREDS_ROTATE_EVERY:
            self._rotate_keys(conn, device)

    def _rotate_keys(self, conn: Connection, device: Device) -> None:
        device.traffic = 0
        device.key_generation += 1
        self.revision += 1
        self._send(conn, sim.CredsUpdateFrame(device.key_generation, self._hex(32)))

    def _expire_if_silent(self, conn_id: str, now: float) -> None:
        conn = self.conns.get(conn_id)
        if conn is None:
            return
        expires = conn.last_seen + self.rules.keepalive_timeout
        if expires <= now:
            self._close(conn_id)  # a dead client hears nothing
        else:
            self._at(expires, partial(self._expire_if_silent, conn_id))

    # -- lookups ------------------------------------------------------------------------
    def _session(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            session = self.sessions[session_id] = Session(session_id)
        return session

    def _known(self, session_id: str) -> Session:
        if not _SESSION_ID.match(session_id):
            raise invalid(f"session id: expected {PATTERN_HINTS[SESSION_ID_PATTERN]}, got {session_id!r}")
        session = self.sessions.get(session_id)
        if session is None:
            raise not_found(f"the simulator has never seen session {session_id!r}")
        return session

    def _live(self, conn_id: str | None, now: float) -> Connection | None:
        """The connection if it is open and was heard from recently; a silent one is closed."""
        conn = self.conns.get(conn_id or "")
        if conn is not None and now - conn.last_seen >= self.rules.keepalive_timeout:
            self._close(conn.conn_id)
            return None
        return conn

    def _logged_in(self, conn_id: str, now: float) -> Connection:
        conn = self._live(conn_id, now)
        if conn is None or conn.device_id is None:
            raise ContractError(sim.NOT_CONNECTED, f"connection {conn_id} is not open and logged in")
        conn.last_seen = now
        return conn

    def _close(self, conn_id: str) -> None:
        conn = self.conns.pop(conn_id, None)
        if conn is None:
            return
        session = self.sessions.get(conn.session_id)
        if session is not None:
            if session.conn_id == conn_id:
                session.conn_id = None
            if session.pairing_conn_id == conn_id:
                session.pairing_conn_id = None

    # -- output and ids -----------------------------------------------------------------
    def _send(self, conn: Connection, frame: sim.AnyFrame) -> None:
        self.outbox.append(Outgoing(conn.conn_id, frame))

    def _hex(self, nbytes: int) -> str:
        return f"{self.rng.getrandbits(nbytes * 8):0{nbytes * 2}X}"

    def _message_id(self) -> str:
        return "3EB0" + self._hex(8)

    def _qr_code(self) -> str:
        return f"2@{self._hex(24)},{self._hex(16)}"
