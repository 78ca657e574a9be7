"""`wactl history`: stored messages, status changes and sends (persistence service), a page
at a time."""

from collections.abc import Callable
from typing import Annotated

import typer

from contracts.history import (
    MessagePage,
    MessagesQuery,
    OutboundPage,
    OutboundQuery,
    OutboundRecord,
    StatusPage,
    StatusQuery,
)
from services.wactl import render
from services.wactl.arguments import Before, Json, Limit, Sid, given
from services.wactl.running import ask, subjects

app = typer.Typer(help="Stored history (persistence service).", no_args_is_help=True)


def page(body: str, next_cursor: str | None) -> str:
    """A rendered page, then the `more:` line with the next page's cursor if there is one."""
    return "\n".join(x for x in (body, render.more(next_cursor)) if x)


@app.command("messages")
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


@app.command("status")
def history_status(
    ctx: typer.Context, sid: Sid, limit: Limit = None, before: Before = None, as_json: Json = False
) -> None:
    """Status changes, newest first."""
    query = StatusQuery(**given(before=before, limit=limit))
    show: Callable[[StatusPage], str] = lambda p: page(render.status_table(p.statuses), p.next)  # noqa: E731
    ask(ctx, subjects(ctx).history(sid, "status"), query, StatusPage, show, as_json)


@app.command("outbound")
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
