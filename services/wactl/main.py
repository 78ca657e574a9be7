"""wactl: the command line of the WhatsApp session gateway (public NATS contract v1).

Exit status: 0 done, 1 an error reply or a failed outcome (pairing stopped, send failed),
2 bad usage, 3 NATS or MongoDB unreachable or no service answered, 4 a wait timed out,
130 interrupted.
"""

import asyncio
import base64
import contextlib
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import msgspec
import nats.errors
import typer
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from contracts.envelope import ContractError, decode
from contracts.events import MessageEvent, OutboundEvent, StatusEvent
from contracts.history import (
    MAX_LIMIT,
    MessagePage,
    MessagesQuery,
    OutboundPage,
    OutboundQuery,
    OutboundRecord,
    StatusPage,
    StatusQuery,
)
from contracts.queue import (
    DlqList,
    DlqListRequest,
    DlqPurged,
    DlqRetried,
    DlqSelect,
    PolicyRequest,
    QueueStats,
    SendPolicy,
)
from contracts.sending import SendAccepted, SendText
from contracts.sessions import (
    Empty,
    PairByCode,
    PairByQr,
    PairStarted,
    Session,
    SessionCreate,
    SessionDeleted,
    SessionList,
)
from contracts.sim import (
    BanRequest,
    ConnectionReply,
    InboundReply,
    InboundRequest,
    ReadReply,
    ReadRequest,
    ScanReply,
    SimStats,
    StatsRequest,
)
from contracts.subjects import Subjects, token
from contracts.types import PATTERN_HINTS, SESSION_ID_PATTERN, TERMINAL_OUTBOUND_STATES
from services.common.bus import request
from services.common.config import Settings
from services.common.media import MediaLimits, check_send, size_text
from services.credentials import DEVICE_TABLES
from services.wactl import render

T = TypeVar("T")

EXIT_ERROR = 1
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130
CLOSE_TIMEOUT = 2.0

# The session API holds a code pairing until WhatsApp hands out the code (up to ~40 s).
PAIR_CODE_TIMEOUT = 45.0
PAIRING_FAILED = ("stopped", "logged_out", "banned", "deleted")
# How far a send got; the final states rank last.
PROGRESS = {"queued": 0, "sent": 1, "delivered": 2, "read": 3, "failed": 4, "expired": 4}
EVENT_TYPES: dict[str, type[StatusEvent | MessageEvent | OutboundEvent]] = {
    "status": StatusEvent,
    "message": MessageEvent,
    "outbound": OutboundEvent,
}


class Failure(Exception):
    """Ends a command: `message` goes to stderr, `code` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Options:
    settings: Settings
    timeout: float


def convert(data: Any, type_: type[T]) -> T:
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        raise Failure(f"unexpected reply (expected {type_.__name__}): {exc}") from None


def decode_event(msg: Msg) -> StatusEvent | MessageEvent | OutboundEvent | None:
    try:
        return msgspec.json.decode(msg.data, type=EVENT_TYPES[token(msg.subject, -1)])
    except (KeyError, msgspec.DecodeError):
        return None


# ------------------------------------------------------------------------ transport


class Feed:
    """Messages of one subscription, in order; `next` waits until a deadline (loop time)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Msg | None] = asyncio.Queue()

    async def on_msg(self, msg: Msg) -> None:
        self.queue.put_nowait(msg)

    async def next(self, deadline: float | None = None) -> Msg | None:
        """The next message, or None once `deadline` has passed."""
        timeout = None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            if timeout == 0:
                msg = self.queue.get_nowait()
            else:
                # Not wait_for: on Python 3.11 it can swallow the Ctrl-C cancellation when a
                # message arrives at the same moment, and `wactl events` then keeps running.
                async with asyncio.timeout(timeout):
                    msg = await self.queue.get()
        except (asyncio.QueueEmpty, TimeoutError):
            return None
        if msg is None:
            raise Failure("the connection to NATS was closed", EXIT_UNREACHABLE)
        return msg


class Gateway:
    """One NATS connection, and `call`: the one request helper every command goes through."""

    def __init__(self, settings: Settings, timeout: float) -> None:
        self.settings = settings
        self.subjects = settings.subjects
        self.timeout = timeout
        self.nc = NatsClient()
        self._feeds: list[Feed] = []
        self._last_error: Exception | None = None
        self._closing = False

    async def connect(self) -> None:
        url = self.settings.nats_url
        try:
            # Few, quick attempts: an unreachable server is reported in well under a second.
            await self.nc.connect(
                url,
                name="wactl",
                connect_timeout=min(self.timeout, 5.0),
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                closed_cb=self._on_closed,
            )
        except Exception as exc:  # NoServersError, OSError, auth errors, timeouts
            cause = self._last_error or exc
            raise Failure(
                f"cannot connect to NATS at {redact(url)}: {str(cause) or type(cause).__name__} "
                "(set --nats-url or WA_NATS_URL)",
                EXIT_UNREACHABLE,
            ) from None
        # Once connected, ride out server restarts (a long `events` tail or `pair`).
        self.nc.options["max_reconnect_attempts"] = -1
        self.nc.options["reconnect_time_wait"] = 1.0

    async def close(self) -> None:
        self._closing = True
        # A command that is done (or interrupted) ends even if the server stopped reading.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.nc.close()

    async def call(self, subject: str, body: Any = None, timeout: float | None = None) -> Any:
        """A v1 request: `data` of an ok reply; ContractError for an error reply."""
        timeout = timeout or self.timeout
        try:
            return await request(self.nc, subject, Empty() if body is None else body, timeout)
        except nats.errors.NoRespondersError:
            raise Failure(
                f"no service answers {subject}: is {self._service(subject)} running "
                f"(prefix {self.subjects.prefix!r})?",
                EXIT_UNREACHABLE,
            ) from None
        except (nats.errors.TimeoutError, TimeoutError):
            raise Failure(f"no reply to {subject} within {timeout:g}s", EXIT_UNREACHABLE) from None
        except nats.errors.ConnectionClosedError:
            raise Failure("the connection to NATS was closed", EXIT_UNREACHABLE) from None
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise Failure(f"malformed reply to {subject} (not a v1 envelope)") from None

    async def tail(self, subject: str, from_start: bool = False) -> Feed:
        """Events matching `subject` from the events stream, from now on (or the start).

        An ordered JetStream consumer: it starts at a stream position, so whatever is
        published after this returns is seen, wherever the publisher is connected.
        """
        feed = Feed()
        try:
            await self.nc.jetstream().subscribe(
                subject,
                stream=self.subjects.events_stream,
                cb=feed.on_msg,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.ALL if from_start else DeliverPolicy.NEW,
            )
        except NotFoundError:
            raise Failure(
                f"no events stream {self.subjects.events_stream}: have the services run with "
                f"prefix {self.subjects.prefix!r}?",
                EXIT_UNREACHABLE,
            ) from None
        self._feeds.append(feed)
        return feed

    def _service(self, subject: str) -> str:
        if subject.startswith(self.subjects.sim_prefix + "."):
            return "wa-sim"
        kind = token(subject, 1)
        return {"session": "session-actor", "send": "outbound-queue", "history": "persistence"}.get(
            kind, "the service"
        )

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc

    async def _on_disconnected(self) -> None:
        if not self._closing:
            typer.echo("connection to NATS lost; reconnecting...", err=True)

    async def _on_reconnected(self) -> None:
        typer.echo("reconnected to NATS", err=True)

    async def _on_closed(self) -> None:
        for feed in self._feeds:
            feed.queue.put_nowait(None)


def redact(url: str) -> str:
    """A server URL without its user info (it may hold a password or token)."""
    return re.sub(r"//[^@/]*@", "//***@", url)


# -------------------------------------------------------------------------- running


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def run(work: Coroutine[Any, Any, int | None]) -> None:
    """Run a command's coroutine; failures become one line on stderr and an exit status."""
    try:
        code = asyncio.run(work)
    except ContractError as exc:
        fail(f"error {exc.code}: {exc.message}")
    except Failure as exc:
        fail(exc.message, exc.code)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    raise typer.Exit(code or 0)


def with_nats(ctx: typer.Context, command: Callable[[Gateway], Awaitable[int | None]]) -> None:
    options: Options = ctx.obj

    async def main() -> int | None:
        gateway = Gateway(options.settings, options.timeout)
        await gateway.connect()
        try:
            return await command(gateway)
        finally:
            await gateway.close()

    run(main())


def ask(
    ctx: typer.Context, subject: str, body: Any, into: type[T], show: Callable[[T], str | None], as_json: bool
) -> None:
    """The plain request command: send, then print the reply (rendered, or raw JSON)."""

    async def command(gateway: Gateway) -> None:
        data = await gateway.call(subject, body)
        text = render.to_json(data) if as_json else show(convert(data, into))
        if text is not None:
            typer.echo(text)

    with_nats(ctx, command)


def subjects(ctx: typer.Context) -> Subjects:
    return ctx.obj.settings.subjects


def given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def page(body: str, next_cursor: str | None) -> str:
    return "\n".join(x for x in (body, render.more(next_cursor)) if x)


# ------------------------------------------------------------------------ arguments

_SID = re.compile(SESSION_ID_PATTERN)


def check_sid(value: str | None) -> str | None:
    # A session id is a subject token: `a.b` or `*` would address other subjects.
    if value is not None and not _SID.match(value):
        raise typer.BadParameter(f"expected {PATTERN_HINTS[SESSION_ID_PATTERN]}, got {value!r}")
    return value


Sid = Annotated[str, typer.Argument(help="session id", callback=check_sid, show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="print the raw JSON instead")]
Limit = Annotated[int | None, typer.Option(min=1, max=MAX_LIMIT, help="items per page (server default 50)")]
Before = Annotated[str | None, typer.Option(help="cursor from a previous page (its `more:` line)")]


class Kind(StrEnum):
    status = "status"
    message = "message"
    outbound = "outbound"


HELP = (
    "The command line of the WhatsApp session gateway (public NATS contract v1).\n\n"
    "Exit status: 0 done, 1 an error reply or a failed outcome, 2 bad usage, 3 NATS or MongoDB "
    "unreachable or no service answered, 4 a wait timed out, 130 interrupted."
)
app = typer.Typer(
    name="wactl",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold credentials
)
session_app = typer.Typer(help="Sessions: create, pair, inspect, log out, delete.", no_args_is_help=True)
history_app = typer.Typer(help="Stored history (persistence service).", no_args_is_help=True)
sim_app = typer.Typer(help="Control the simulated WhatsApp (development and tests).", no_args_is_help=True)
creds_app = typer.Typer(help="Stored WhatsApp credentials (MongoDB, WA_MONGO_URL).", no_args_is_help=True)
queue_app = typer.Typer(help="Per-session send queues (outbound-queue service).", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: sends that failed for good.", no_args_is_help=True)
app.add_typer(session_app, name="session")
app.add_typer(queue_app, name="queue")
app.add_typer(dlq_app, name="dlq")
app.add_typer(history_app, name="history")
app.add_typer(sim_app, name="sim")
app.add_typer(creds_app, name="creds")


@app.callback()
def main(
    ctx: typer.Context,
    nats_url: Annotated[str | None, typer.Option(help="NATS server URL (default: WA_NATS_URL)")] = None,
    prefix: Annotated[str | None, typer.Option(help="subject prefix (default: WA_PREFIX, or wa)")] = None,
    sim_prefix: Annotated[
        str | None, typer.Option(help="simulator prefix (default: WA_SIM_PREFIX, or wasim)")
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds to wait for a reply")] = 10.0,
) -> None:
    try:
        settings = Settings(**given(nats_url=nats_url, prefix=prefix, sim_prefix=sim_prefix))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        fail(f"invalid configuration: {problems}", 2)
    ctx.obj = Options(settings, timeout)


# ------------------------------------------------------------------------- sessions


@session_app.command("create")
def session_create(
    ctx: typer.Context,
    sid: Sid,
    label: Annotated[str, typer.Option(help="free text")] = "",
    as_json: Json = False,
) -> None:
    """Create a session (it starts unpaired: `session pair` links it)."""
    body = SessionCreate(session_id=sid, label=label)
    ask(ctx, subjects(ctx).session_create, body, Session, render.session_detail, as_json)


@session_app.command("list")
def session_list(ctx: typer.Context, as_json: Json = False) -> None:
    """Every session with its state and the node running it."""
    ask(
        ctx,
        subjects(ctx).session_list,
        Empty(),
        SessionList,
        lambda r: render.session_table(r.sessions),
        as_json,
    )


@session_app.command("get")
def session_get(ctx: typer.Context, sid: Sid, as_json: Json = False) -> None:
    """One session."""
    ask(ctx, subjects(ctx).session(sid, "get"), Empty(), Session, render.session_detail, as_json)


@session_app.command("logout")
def session_logout(ctx: typer.Context, sid: Sid, as_json: Json = False) -> None:
    """Unlink the device and destroy its credentials; the session stays and can pair again."""
    ask(ctx, subjects(ctx).session(sid, "logout"), Empty(), Session, render.session_detail, as_json)


@session_app.command("delete")
def session_delete(ctx: typer.Context, sid: Sid, as_json: Json = False) -> None:
    """Log out if linked, then delete the session and its credentials."""
    ask(
        ctx,
        subjects(ctx).session(sid, "delete"),
        Empty(),
        SessionDeleted,
        lambda r: f"deleted {r.session_id}",
        as_json,
    )


@session_app.command("reconnect")
def session_reconnect(ctx: typer.Context, sid: Sid, as_json: Json = False) -> None:
    """Drop the connection and connect again now (skips any backoff)."""
    ask(ctx, subjects(ctx).session(sid, "reconnect"), Empty(), Session, render.session_detail, as_json)


@session_app.command("pair")
def session_pair(
    ctx: typer.Context,
    sid: Sid,
    phone: Annotated[
        str | None, typer.Option(help="pair with a code for this number (digits) instead of a QR code")
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the session to connect")] = 180.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON lines: the reply, then each status event")
    ] = False,
) -> None:
    """Link the session: shows each QR code to scan (or the pairing code) until it connects."""

    async def command(gateway: Gateway) -> int:
        # Follow the status events first, so that no QR code is published before we listen.
        feed = await gateway.tail(gateway.subjects.event(sid, "status"))
        body = PairByCode(phone=phone) if phone else PairByQr()
        data = await gateway.call(
            gateway.subjects.session(sid, "pair"), body, max(gateway.timeout, PAIR_CODE_TIMEOUT)
        )
        started = convert(data, PairStarted)
        screen = render.Screen()
        if as_json:
            screen.line(render.to_json(data))
        shown_code = started.pair_code
        if shown_code and not as_json:
            screen.line(pair_code_hint(shown_code))
        state, jid, qr_count = started.state, None, 0
        deadline = asyncio.get_running_loop().time() + timeout
        while state != "connected":
            msg = await feed.next(deadline)
            if msg is None:
                screen.clear_qr()
                raise Failure(f"timed out after {timeout:g}s: {sid} is still {state}", EXIT_TIMEOUT)
            event = decode_event(msg)
            if not isinstance(event, StatusEvent):
                continue
            state, jid = event.state, event.jid or jid
            if as_json:
                screen.line(msg.data.decode())
            elif event.qr and not phone:
                qr_count += 1
                screen.show_qr(
                    event.qr, f"Scan with WhatsApp > Linked devices > Link a device (code {qr_count})"
                )
            elif event.pair_code and event.pair_code != shown_code:
                shown_code = event.pair_code
                screen.line(pair_code_hint(shown_code))
            elif not event.qr:
                screen.line(f"{sid}: {render.event_fields(event)}")
            if state in PAIRING_FAILED:
                screen.clear_qr()
                reason = f" ({event.reason})" if event.reason else ""
                raise Failure(f"pairing failed: {sid} is {state}{reason}")
        screen.clear_qr()
        if not as_json:
            screen.line(f"connected: {sid} is linked as {jid}")
        return 0

    with_nats(ctx, command)


def pair_code_hint(code: str) -> str:
    return f"pairing code: {code}  (on the phone: Linked devices > Link a device > Link with phone number)"


# -------------------------------------------------------------------------- sending


@app.command()
def send(
    ctx: typer.Context,
    sid: Sid,
    to: Annotated[str, typer.Argument(help="digits of an E.164 number, or a full JID")],
    text: Annotated[
        str | None, typer.Argument(help="message text; with a file, its caption (optional)")
    ] = None,
    image: Annotated[
        str | None,
        typer.Option("--image", metavar="PATH|URL", help="send an image: a local file or an http(s) URL"),
    ] = None,
    document: Annotated[
        str | None, typer.Option("--document", metavar="PATH|URL", help="send a document (file or URL)")
    ] = None,
    audio: Annotated[
        str | None,
        typer.Option("--audio", metavar="PATH|URL", help="send an audio file (file or URL; no caption)"),
    ] = None,
    video: Annotated[
        str | None, typer.Option("--video", metavar="PATH|URL", help="send a video (file or URL)")
    ] = None,
    filename: Annotated[
        str | None, typer.Option(help="file name shown for a document (default: the file's own)")
    ] = None,
    mime: Annotated[str | None, typer.Option(help="MIME type of the file (default: guessed)")] = None,
    send_id: Annotated[str | None, typer.Option("--id", help="idempotency key (default: a new uuid)")] = None,
    send_at: Annotated[str | None, typer.Option(help="send no earlier than this RFC 3339 time")] = None,
    expires_at: Annotated[str | None, typer.Option(help="give up after this RFC 3339 time")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="follow the send until read, failed or expired")
    ] = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits for a final state")] = 60.0,
    as_json: Json = False,
) -> None:
    """Send a text message, or a file with an optional caption (queued durably; sent to
    WhatsApp at most once per id). A local file goes inline (up to WA_MEDIA_INLINE_MAX,
    700 KiB by default); put larger ones at a URL the gateway can reach."""
    sources = given(image=image, document=document, audio=audio, video=video)
    if len(sources) > 1:
        fail("give at most one of --image, --document, --audio, --video")
    if not sources and (filename is not None or mime is not None):
        fail("--filename and --mime go with --image, --document, --audio or --video")
    raw = given(id=send_id or str(uuid.uuid4()), to=to, text=text, send_at=send_at, expires_at=expires_at)
    settings: Settings = ctx.obj.settings
    if sources:
        ((kind, source),) = sources.items()
        raw["media"] = media_body(kind, source, filename, mime, settings)
    try:  # checked here as the server would, with the same messages, before anything is sent
        message = decode(render.to_json(raw).encode(), SendText)
        check_send(message, MediaLimits.from_settings(settings))
    except ContractError as exc:
        fail(f"error {exc.code}: {exc.message}")

    async def command(gateway: Gateway) -> int:
        subject = gateway.subjects.event(sid, "outbound")
        feed = await gateway.tail(subject) if wait else None
        data = await gateway.call(gateway.subjects.send(sid), message)
        accepted = convert(data, SendAccepted)
        note = " (duplicate: accepted before, sent at most once)" if accepted.duplicate else ""
        typer.echo(render.to_json(data) if as_json else f"{accepted.state} {accepted.id}{note}")
        if feed is None:
            return 0
        return await follow_send(gateway, feed, sid, accepted, timeout, as_json)

    with_nats(ctx, command)


def media_body(
    kind: str, source: str, filename: str | None, mime: str | None, settings: Settings
) -> dict[str, Any]:
    """The `media` object of a send: a URL as it is, a local file inline (base64) if it fits."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", source):
        return given(kind=kind, url=source, filename=filename, mime=mime)
    path = Path(source).expanduser()
    try:
        size = path.stat().st_size
        if not path.is_file():
            fail(f"--{kind}: {source} is not a file")
        limit = settings.media_inline_max
        if size > limit:
            fail(
                f"--{kind}: {source} is {size_text(size)}; at most {size_text(limit)} can be sent "
                "from a file (it travels inline, inside NATS messages). Put it at an http(s) URL "
                f"the gateway can reach and pass --{kind} URL instead."
            )
        data = path.read_bytes()
    except OSError as exc:
        fail(f"--{kind}: cannot read {source}: {exc.strerror or exc}")
    if kind == "document" and filename is None:
        filename = path.name
    return given(kind=kind, base64=base64.b64encode(data).decode(), filename=filename, mime=mime)


async def follow_send(
    gateway: Gateway, feed: Feed, sid: str, accepted: SendAccepted, timeout: float, as_json: bool
) -> int:
    """Print each further state of the send until a final one: 0 when read, 1 when it failed.

    Events of one send can reach the stream out of order (`queued` is published by the
    queue, `sent` by the actor): a state behind one already shown is old news and skipped.
    """
    progress = PROGRESS["queued"]  # the reply said so
    final: OutboundEvent | None = None

    def show(event: OutboundEvent, raw: bytes | None = None) -> None:
        nonlocal progress, final
        if PROGRESS.get(event.state, 0) <= progress:
            return
        progress = PROGRESS[event.state]
        typer.echo(
            (raw.decode() if raw else render.to_json(event))
            if as_json
            else render.event_line("outbound", event)
        )
        if event.state in TERMINAL_OUTBOUND_STATES:
            final = event

    if accepted.duplicate:  # its earlier states happened before we listened: ask the history
        for event in await past_states(gateway, sid, accepted.id):
            show(event)
    deadline = asyncio.get_running_loop().time() + timeout
    while final is None:
        msg = await feed.next(deadline)
        if msg is None:
            raise Failure(f"timed out after {timeout:g}s waiting for {accepted.id} to be read", EXIT_TIMEOUT)
        event = decode_event(msg)
        if isinstance(event, OutboundEvent) and event.id == accepted.id:
            show(event, msg.data)
    if final.state == "read":
        return 0
    raise Failure(f"send {accepted.id} {final.state}: {render.error_text(final.error) or 'no reason given'}")


async def past_states(gateway: Gateway, sid: str, send_id: str) -> list[OutboundEvent]:
    """The outbound events of an earlier send, from persistence (none if it cannot tell)."""
    try:
        data = await gateway.call(gateway.subjects.history(sid, "outbound"), OutboundQuery(id=send_id))
    except (Failure, ContractError) as exc:
        typer.echo(f"(earlier states unknown: {getattr(exc, 'message', exc)})", err=True)
        return []
    record = convert(data, OutboundRecord)
    return [
        OutboundEvent(
            event_id=s.event_id,
            session_id=sid,
            at=s.at,
            id=send_id,
            state=s.state,
            message_id=s.message_id,
            error=s.error,
        )
        for s in record.history
    ]


# --------------------------------------------------------------------------- events


@app.command()
def events(
    ctx: typer.Context,
    session: Annotated[str | None, typer.Option(callback=check_sid, help="only this session")] = None,
    kind: Annotated[Kind | None, typer.Option(help="only this kind")] = None,
    from_start: Annotated[
        bool, typer.Option("--from-start", help="replay the stream from its start")
    ] = False,
    count: Annotated[int | None, typer.Option(min=1, help="stop after this many events")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='JSON lines: {"subject", "kind", "event"}')] = False,
) -> None:
    """Tail the public events (Ctrl-C stops)."""

    async def command(gateway: Gateway) -> int:
        feed = await gateway.tail(
            gateway.subjects.event(session or "*", kind.value if kind else "*"), from_start
        )
        shown = 0
        while count is None or shown < count:
            msg = await feed.next()
            assert msg is not None  # no deadline
            name = token(msg.subject, -1)
            event = decode_event(msg)
            if as_json:
                line = {"subject": msg.subject, "kind": name, "event": msgspec.Raw(msg.data)}
                typer.echo(render.to_json(line))
            elif event is None:
                typer.echo(f"{msg.subject}  {msg.data.decode(errors='replace')}")
            else:
                typer.echo(render.event_line(name, event))
            shown += 1
        return 0

    with_nats(ctx, command)


# -------------------------------------------------------------------------- history


@history_app.command("messages")
def history_messages(
    ctx: typer.Context,
    sid: Sid,
    chat: Annotated[str | None, typer.Option(help="only this chat (a JID)")] = None,
    limit: Limit = None,
    before: Before = None,
    as_json: Json = False,
) -> None:
    """Inbound messages, newest first."""
    query = MessagesQuery(**given(chat=chat, before=before, limit=limit))
    show: Callable[[MessagePage], str] = lambda p: page(render.message_table(p.messages), p.next)  # noqa: E731
    ask(ctx, subjects(ctx).history(sid, "messages"), query, MessagePage, show, as_json)


@history_app.command("status")
def history_status(
    ctx: typer.Context, sid: Sid, limit: Limit = None, before: Before = None, as_json: Json = False
) -> None:
    """Status changes, newest first."""
    query = StatusQuery(**given(before=before, limit=limit))
    show: Callable[[StatusPage], str] = lambda p: page(render.status_table(p.statuses), p.next)  # noqa: E731
    ask(ctx, subjects(ctx).history(sid, "status"), query, StatusPage, show, as_json)


@history_app.command("outbound")
def history_outbound(
    ctx: typer.Context,
    sid: Sid,
    send_id: Annotated[str | None, typer.Option("--id", help="one send, with each of its states")] = None,
    limit: Limit = None,
    before: Before = None,
    as_json: Json = False,
) -> None:
    """Sends, newest first, or one send with --id."""
    subject = subjects(ctx).history(sid, "outbound")
    query = OutboundQuery(id=send_id, before=before, limit=limit)
    if send_id is not None:
        ask(ctx, subject, query, OutboundRecord, render.outbound_detail, as_json)
    else:
        show: Callable[[OutboundPage], str] = lambda p: page(render.outbound_table(p.sends), p.next)  # noqa: E731
        ask(ctx, subject, query, OutboundPage, show, as_json)


@session_app.command("policy")
def session_policy(
    ctx: typer.Context,
    sid: Sid,
    set_json: Annotated[
        str | None,
        typer.Option(
            "--set",
            metavar="JSON",
            help='replace the policy, e.g. \'{"pacing": {"per_minute": 6, "daily_cap": 500}}\'',
        ),
    ] = None,
    reset: Annotated[bool, typer.Option("--reset", help="back to the deployment's defaults")] = False,
    as_json: Json = False,
) -> None:
    """Show a session's send policy (pacing, typing, daily cap, ambiguous resends), or change it."""
    if set_json is not None and reset:
        fail("give at most one of --set and --reset")
    body: dict[str, Any] = {}
    if reset:
        body["policy"] = {}
    elif set_json is not None:
        try:
            body["policy"] = msgspec.json.decode(set_json)
            decode(render.to_json(body).encode(), PolicyRequest)
        except msgspec.DecodeError as exc:
            fail(f"--set: not JSON: {exc}")
        except ContractError as exc:
            fail(f"--set: {exc.message}")
    ask(ctx, subjects(ctx).session(sid, "policy"), body, SendPolicy, render.policy_detail, as_json)


# --------------------------------------------------------------------- queue and dlq


@queue_app.command("stats")
def queue_stats(ctx: typer.Context, sid: Sid, as_json: Json = False) -> None:
    """Sends waiting in a session's queue, scheduled sends, and the age of the oldest."""
    ask(ctx, subjects(ctx).queue(sid, "stats"), Empty(), QueueStats, render.queue_stats, as_json)


@dlq_app.command("list")
def dlq_list(
    ctx: typer.Context,
    session: Annotated[str | None, typer.Option(callback=check_sid, help="only this session")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="at most this many")] = 100,
    as_json: Json = False,
) -> None:
    """Dead letters, oldest first."""
    query = DlqListRequest(session_id=session, limit=limit)
    ask(ctx, subjects(ctx).dlq("list"), query, DlqList, lambda r: render.dlq_table(r.entries), as_json)


def dlq_select(seq: int | None, session: str | None, every: bool) -> DlqSelect:
    if (seq is not None) + (session is not None) + every != 1:
        fail("give exactly one of SEQ, --session or --all")
    return DlqSelect(seq=seq, session_id=session, all=every)


DlqSeq = Annotated[int | None, typer.Argument(min=1, help="a dead letter's SEQ (see `wactl dlq list`)")]
DlqSession = Annotated[str | None, typer.Option(callback=check_sid, help="every dead letter of this session")]
DlqAll = Annotated[bool, typer.Option("--all", help="every dead letter")]


@dlq_app.command("retry")
def dlq_retry(
    ctx: typer.Context,
    seq: DlqSeq = None,
    session: DlqSession = None,
    every: DlqAll = False,
    as_json: Json = False,
) -> None:
    """Queue dead letters again, each under a new id `<id>~r<seq>` (the original stays failed)."""
    show: Callable[[DlqRetried], str] = lambda r: render.dlq_retried(r.retried)  # noqa: E731
    ask(ctx, subjects(ctx).dlq("retry"), dlq_select(seq, session, every), DlqRetried, show, as_json)


@dlq_app.command("purge")
def dlq_purge(
    ctx: typer.Context,
    seq: DlqSeq = None,
    session: DlqSession = None,
    every: DlqAll = False,
    as_json: Json = False,
) -> None:
    """Delete dead letters."""
    show: Callable[[DlqPurged], str] = lambda r: f"purged {r.purged}"  # noqa: E731
    ask(ctx, subjects(ctx).dlq("purge"), dlq_select(seq, session, every), DlqPurged, show, as_json)


# ------------------------------------------------------------------------ simulator


@sim_app.command("scan")
def sim_scan(ctx: typer.Context, sid: Sid, as_json: Json = False) -> None:
    """The phone scans the session's current QR code (or accepts its pairing code)."""
    ask(
        ctx,
        subjects(ctx).sim(sid, "scan"),
        Empty(),
        ScanReply,
        lambda r: f"scanned: linked as {r.jid}",
        as_json,
    )


@sim_app.command("inbound")
def sim_inbound(
    ctx: typer.Context,
    sid: Sid,
    sender: Annotated[str, typer.Option("--from", help="the contact's number (digits)")],
    text: Annotated[str, typer.Option(help="message text")],
    as_json: Json = False,
) -> None:
    """A contact sends a message to the linked account."""
    body = InboundRequest(sender=sender, text=text)
    ask(ctx, subjects(ctx).sim(sid, "inbound"), body, InboundReply, lambda r: f"sent {r.message_id}", as_json)


@sim_app.command("read")
def sim_read(ctx: typer.Context, sid: Sid, message_id: str, as_json: Json = False) -> None:
    """The recipient reads a message the session sent (its WhatsApp message id)."""
    body = ReadRequest(message_id=message_id)
    ask(ctx, subjects(ctx).sim(sid, "read"), body, ReadReply, lambda r: f"read {r.message_id}", as_json)


def connection_result(r: ConnectionReply) -> str:
    return "closed a live connection" if r.closed else "no live connection"


@sim_app.command("unlink")
def sim_unlink(ctx: typer.Context, sid: Sid, as_json: Json = False) -> None:
    """The phone removes the linked device: the session is logged out."""
    ask(ctx, subjects(ctx).sim(sid, "unlink"), Empty(), ConnectionReply, connection_result, as_json)


@sim_app.command("drop")
def sim_drop(ctx: typer.Context, sid: Sid, as_json: Json = False) -> None:
    """The connection drops (transient)."""
    ask(ctx, subjects(ctx).sim(sid, "drop"), Empty(), ConnectionReply, connection_result, as_json)


@sim_app.command("ban")
def sim_ban(
    ctx: typer.Context,
    sid: Sid,
    seconds: Annotated[int, typer.Option(min=1, help="how long the ban lasts")],
    as_json: Json = False,
) -> None:
    """A temporary ban."""
    body = BanRequest(seconds=seconds)
    ask(ctx, subjects(ctx).sim(sid, "ban"), body, ConnectionReply, connection_result, as_json)


@sim_app.command("stats")
def sim_stats(
    ctx: typer.Context,
    session: Annotated[str | None, typer.Option(callback=check_sid, help="only this session")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="raw JSON, with the per-send-id counts")] = False,
) -> None:
    """What the simulated WhatsApp saw: messages, duplicates, overlapping connections."""
    body = StatsRequest(session_id=session, refs=as_json)
    ask(ctx, subjects(ctx).sim_stats, body, SimStats, render.sim_stats, as_json)


# ---------------------------------------------------------------------- credentials


@creds_app.command("rotate-key")
def creds_rotate_key(ctx: typer.Context) -> None:
    """Re-seal every stored credential version under the first key of the keyring.

    Set WA_VAULT_KEYS (or WA_VAULT_KEY_FILE) to the new key first and the old keys after it;
    once this is done, the old keys can be removed. Safe while the system runs.
    """
    run(rotate_key(ctx.obj.settings))


async def rotate_key(settings: Settings) -> None:
    # Imported here: only this command needs MongoDB and the crypto stack.
    from pymongo.errors import PyMongoError

    from services.common import mongo
    from services.credentials.vault import CredentialVault, Keyring, VaultError

    try:
        keyring = Keyring.load(
            settings.vault_keys.get_secret_value(), settings.vault_key_file, settings.data_dir
        )
    except (VaultError, ValueError) as exc:
        raise Failure(f"vault keys: {exc}") from None
    client, db = mongo.connect(settings, "wactl")
    try:
        vault = CredentialVault(db, keyring, DEVICE_TABLES[settings.adapter])
        sessions, versions = await vault.rotate()
    except VaultError as exc:
        raise Failure(f"rotation stopped: {exc}") from None
    except PyMongoError as exc:
        message = str(exc).split(", Timeout:")[0]
        raise Failure(f"MongoDB at {redact(settings.mongo_url)}: {message}", EXIT_UNREACHABLE) from None
    finally:
        await client.close()
    typer.echo(
        f"re-sealed {versions} credential version(s) of {sessions} session(s) with key {keyring.active!r}"
    )


# ------------------------------------------------------------------------- migration


class Adapter(StrEnum):
    neonize = "neonize"
    sim = "sim"


@app.command("import")
def import_stores(
    ctx: typer.Context,
    path: Annotated[
        Path, typer.Argument(exists=True, help="a store file, or a folder of *.db, *.sqlite, *.sqlite3")
    ],
    adapter: Annotated[
        Adapter | None, typer.Option(help="whose stores these are (default: WA_ADAPTER)")
    ] = None,
    label_from_filename: Annotated[
        bool, typer.Option("--label-from-filename", help="label each session with its file name")
    ] = False,
) -> None:
    """Turn existing neonize/whatsmeow (or simulator) SQLite stores into linked sessions.

    The session id comes from the file name. Never replaces an existing session or its
    credentials; live stores of a running process are copied safely. One line per store;
    exit status 1 if any was skipped.
    """
    table = DEVICE_TABLES[adapter.value if adapter else ctx.obj.settings.adapter]
    with_nats(ctx, lambda gateway: import_from(gateway, path, table, label_from_filename))


async def import_from(gateway: Gateway, path: Path, device_table: str, label_from_filename: bool) -> int:
    import socket

    from nats.js.errors import BucketNotFoundError
    from pymongo.errors import PyMongoError

    from services.common import mongo
    from services.common.bus import EventPublisher
    from services.common.sessions import SessionStore
    from services.credentials import importer
    from services.credentials.vault import CredentialVault, Keyring, VaultError

    settings = gateway.settings
    try:
        keyring = Keyring.load(
            settings.vault_keys.get_secret_value(), settings.vault_key_file, settings.data_dir
        )
    except (VaultError, ValueError) as exc:
        raise Failure(f"vault keys: {exc}") from None
    js = gateway.nc.jetstream()
    try:
        kv = await js.key_value(settings.subjects.leases_bucket)
    except (NotFoundError, BucketNotFoundError):
        raise Failure(
            f"no bucket {settings.subjects.leases_bucket}: start the services once first (prefix "
            f"{settings.subjects.prefix!r})",
            EXIT_UNREACHABLE,
        ) from None
    stores = importer.find_stores(path)
    if not stores:
        raise Failure(f"no store files ({', '.join(importer.STORE_SUFFIXES)}) in {path}")
    client, db = mongo.connect(settings, "wactl")
    registry = importer.Registry(
        SessionStore(db),
        CredentialVault(db, keyring, device_table),
        kv,
        EventPublisher(js, settings.subjects),
        db[importer.LEDGER],
        f"wactl@{socket.gethostname()}",
    )
    try:
        outcomes = await importer.import_stores(
            registry, stores, label_from_filename=label_from_filename, report=lambda o: typer.echo(o.line())
        )
    except PyMongoError as exc:
        message = str(exc).split(", Timeout:")[0]
        raise Failure(f"MongoDB at {redact(settings.mongo_url)}: {message}", EXIT_UNREACHABLE) from None
    except nats.errors.Error as exc:  # a store being registered resumes at the next import
        raise Failure(
            f"NATS: {exc or type(exc).__name__}; import again in a minute to finish", EXIT_UNREACHABLE
        ) from None
    finally:
        await client.close()
    imported = sum(o.imported for o in outcomes)
    typer.echo(f"{imported} of {len(outcomes)} store(s) imported", err=True)
    return 0 if imported == len(outcomes) else EXIT_ERROR
