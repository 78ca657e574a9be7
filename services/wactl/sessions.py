"""`wactl session`: create, list, get, pair, log out, reconnect, delete, read marks, and the
send policy."""

import asyncio
from typing import Annotated, Any

import msgspec
import typer

from contracts.envelope import ContractError, decode
from contracts.events import StatusEvent
from contracts.queue import PolicyRequest, SendPolicy
from contracts.sessions import (
    Empty,
    MarkedRead,
    MarkRead,
    PairByCode,
    PairByQr,
    PairStarted,
    Session,
    SessionCreate,
    SessionDeleted,
    SessionList,
    SessionListRequest,
)
from services.wactl import render
from services.wactl.arguments import Json, Sid, given
from services.wactl.exits import EXIT_TIMEOUT, Failure, fail
from services.wactl.gateway import Gateway, convert, decode_event
from services.wactl.running import ask, subjects, with_nats

# The session API holds a code pairing until WhatsApp hands out the code (up to ~40 s).
PAIR_CODE_TIMEOUT = 45.0
PAIRING_FAILED = ("stopped", "logged_out", "banned", "deleted")

app = typer.Typer(help="Sessions: create, pair, inspect, log out, delete.", no_args_is_help=True)


@app.command("create")
def session_create(
    ctx: typer.Context,
    sid: Sid,
    label: Annotated[str, typer.Option(help="free text")] = "",
    as_json: Json = False,
) -> None:
    """Create a session (it starts unpaired: `session pair` links it)."""
    body = SessionCreate(session_id=sid, label=label)
    ask(ctx, subjects(ctx).session_create, body, Session, render.session_detail, as_json)


@app.command("list")
def session_list(ctx: typer.Context, as_json: Json = False) -> None:
    """Every session with its state and the node running it (all pages)."""

    async def command(gateway: Gateway) -> None:
        sessions: list[Session] = []
        page = SessionList(sessions=[], next=None)
        while True:
            page = convert(await gateway.call(subjects(ctx).session_list, SessionListRequest(after=page.next)), SessionList)
            sessions += page.sessions
            if page.next is None:
                break
        whole = SessionList(sessions=sessions)
        typer.echo(render.to_json(whole) if as_json else render.session_table(sessions))

    with_nats(ctx, command)


@app.command("get")
def session_get(ctx: typer.Context, sid: Sid, as_json: Json = False) -> None:
    """One session."""
    ask(ctx, subjects(ctx).session(sid, "get"), Empty(), Session, render.session_detail, as_json)


@app.command("logout")
def session_logout(ctx: typer.Context, sid: Sid, as_json: Json = False) -> None:
    """Unlink the device and destroy its credentials; the session stays and can pair again."""
    ask(ctx, subjects(ctx).session(sid, "logout"), Empty(), Session, render.session_detail, as_json)


@app.command("delete")
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


@app.command("reconnect")
def session_reconnect(ctx: typer.Context, sid: Sid, as_json: Json = False) -> None:
    """Drop the connection and connect again now (skips any backoff)."""
    ask(ctx, subjects(ctx).session(sid, "reconnect"), Empty(), Session, render.session_detail, as_json)


@app.command("read")
def session_read(
    ctx: typer.Context,
    sid: Sid,
    chat: Annotated[str, typer.Argument(help="the chat: digits of a number, or a JID (a group's)")],
    message_ids: Annotated[list[str], typer.Argument(help="the messages to mark read", show_default=False)],
    sender: Annotated[str | None, typer.Option(help="in a group: the messages' author")] = None,
    as_json: Json = False,
) -> None:
    """Mark messages read (the contact sees blue ticks); sent at once, not queued."""
    try:  # checked here as the server would
        body = decode(render.to_json(given(chat=chat, message_ids=message_ids, sender=sender)).encode(), MarkRead)
    except ContractError as exc:
        fail(f"error {exc.code}: {exc.message}")
    show = lambda r: f"marked read in {r.chat}: {', '.join(r.message_ids)}"  # noqa: E731
    ask(ctx, subjects(ctx).session(sid, "read"), body, MarkedRead, show, as_json)


@app.command("pair")
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
    with_nats(ctx, lambda gateway: pair(gateway, sid, phone, timeout, as_json))


async def pair(gateway: Gateway, sid: str, phone: str | None, timeout: float, as_json: bool) -> int:
    """Start pairing, then show each QR code (or pairing code) and state until connected."""
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
            screen.show_qr(event.qr, f"Scan with WhatsApp > Linked devices > Link a device (code {qr_count})")
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


def pair_code_hint(code: str) -> str:
    return f"pairing code: {code}  (on the phone: Linked devices > Link a device > Link with phone number)"


@app.command("policy")
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
    body = policy_body(set_json, reset)
    ask(ctx, subjects(ctx).session(sid, "policy"), body, SendPolicy, render.policy_detail, as_json)


def policy_body(set_json: str | None, reset: bool) -> dict[str, Any]:
    """The policy request: empty to show it, `{}` to reset it, the checked JSON to replace it."""
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
    return body
