"""`wactl sim`: the controls of the simulated WhatsApp (development and tests): the phone
scans, contacts write and read, connections drop, accounts get unlinked or banned."""

import base64
import mimetypes
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

from contracts.envelope import ContractError, decode
from contracts.sessions import Empty
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
from services.wactl import render
from services.wactl.arguments import Json, Sid, check_sid, given
from services.wactl.exits import fail
from services.wactl.running import ask, subjects

app = typer.Typer(help="Control the simulated WhatsApp (development and tests).", no_args_is_help=True)


@app.command("scan")
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


@app.command("inbound")
def sim_inbound(
    ctx: typer.Context,
    sid: Sid,
    sender: Annotated[str, typer.Option("--from", help="the contact's number (digits)")],
    text: Annotated[str | None, typer.Option(help="message text; with --file, its caption")] = None,
    kind: Annotated[
        str | None, typer.Option("--type", help="image, video, audio, voice, document, sticker, unknown, ...")
    ] = None,
    file: Annotated[str | None, typer.Option(metavar="PATH", help="a file the contact sends (inline)")] = None,
    mime: Annotated[str | None, typer.Option(help="the file's MIME type (default: guessed from its name)")] = None,
    quoted_id: Annotated[str | None, typer.Option(help="the message this one replies to")] = None,
    group: Annotated[str | None, typer.Option(help="sent in this group (a ...@g.us JID)")] = None,
    extra: Annotated[
        str | None,
        typer.Option(
            "--with",
            metavar="JSON",
            help='more of the request, e.g. \'{"reaction": {"target_id": "3EB0...", "emoji": "👍"}}\'',
        ),
    ] = None,
    as_json: Json = False,
) -> None:
    """A contact sends a message to the linked account: a text, a file, a reply, a group
    message, or (with --with) a reaction, edit, revoke, location, contact or poll."""
    fields = given(**{"from": sender}, text=text, type=kind, quoted_id=quoted_id, group=group)
    if file is not None:
        fields["media"] = inbound_file(file, mime)
        fields.setdefault("type", kind_of(fields["media"]["mime"]))
    if extra is not None:
        try:
            fields.update(msgspec.json.decode(extra))
        except (msgspec.DecodeError, TypeError, ValueError) as exc:
            fail(f"--with: not a JSON object: {exc}")
    try:  # checked here as the simulator would
        body = decode(msgspec.json.encode(fields), InboundRequest)
    except ContractError as exc:
        fail(f"error {exc.code}: {exc.message}")
    ask(ctx, subjects(ctx).sim(sid, "inbound"), body, InboundReply, lambda r: f"sent {r.message_id}", as_json)


def inbound_file(path: str, mime: str | None) -> dict[str, Any]:
    source = Path(path).expanduser()
    try:
        data = source.read_bytes()
    except OSError as exc:
        fail(f"--file: cannot read {path}: {exc.strerror or exc}")
    guessed = mime or mimetypes.guess_type(source.name)[0] or "application/octet-stream"
    return {"base64": base64.b64encode(data).decode(), "mime": guessed, "filename": source.name}


def kind_of(mime: str) -> str:
    """The kind of message a file makes by default: its MIME type's, else a document."""
    major = mime.split("/", 1)[0]
    return major if major in ("image", "video", "audio") else "document"


@app.command("read")
def sim_read(ctx: typer.Context, sid: Sid, message_id: str, as_json: Json = False) -> None:
    """The recipient reads a message the session sent (its WhatsApp message id)."""
    body = ReadRequest(message_id=message_id)
    ask(ctx, subjects(ctx).sim(sid, "read"), body, ReadReply, lambda r: f"read {r.message_id}", as_json)


def connection_result(r: ConnectionReply) -> str:
    return "closed a live connection" if r.closed else "no live connection"


@app.command("unlink")
def sim_unlink(ctx: typer.Context, sid: Sid, as_json: Json = False) -> None:
    """The phone removes the linked device: the session is logged out."""
    ask(ctx, subjects(ctx).sim(sid, "unlink"), Empty(), ConnectionReply, connection_result, as_json)


@app.command("drop")
def sim_drop(ctx: typer.Context, sid: Sid, as_json: Json = False) -> None:
    """The connection drops (transient)."""
    ask(ctx, subjects(ctx).sim(sid, "drop"), Empty(), ConnectionReply, connection_result, as_json)


@app.command("ban")
def sim_ban(
    ctx: typer.Context,
    sid: Sid,
    seconds: Annotated[int, typer.Option(min=1, help="how long the ban lasts")],
    as_json: Json = False,
) -> None:
    """A temporary ban."""
    body = BanRequest(seconds=seconds)
    ask(ctx, subjects(ctx).sim(sid, "ban"), body, ConnectionReply, connection_result, as_json)


@app.command("stats")
def sim_stats(
    ctx: typer.Context,
    session: Annotated[str | None, typer.Option(callback=check_sid, help="only this session")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="raw JSON, with the per-send-id counts")] = False,
) -> None:
    """What the simulated WhatsApp saw: messages, duplicates, overlapping connections."""
    body = StatsRequest(session_id=session, refs=as_json)
    ask(ctx, subjects(ctx).sim_stats, body, SimStats, render.sim_stats, as_json)
