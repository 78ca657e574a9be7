"""`wactl sim`: the controls of the simulated WhatsApp (development and tests): the phone
scans, contacts write and read, connections drop, accounts get unlinked or banned."""

from typing import Annotated

import typer

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
from services.wactl.arguments import Json, Sid, check_sid
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
    text: Annotated[str, typer.Option(help="message text")],
    as_json: Json = False,
) -> None:
    """A contact sends a message to the linked account."""
    body = InboundRequest(sender=sender, text=text)
    ask(ctx, subjects(ctx).sim(sid, "inbound"), body, InboundReply, lambda r: f"sent {r.message_id}", as_json)


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
