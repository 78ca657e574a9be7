"""`wactl queue` and `wactl dlq`: per-session send queues and dead letters (outbound-queue
service)."""

from collections.abc import Callable
from typing import Annotated

import typer

from contracts.queue import DlqList, DlqListRequest, DlqPurged, DlqRetried, DlqSelect, QueueStats
from contracts.sessions import Empty
from services.wactl import render
from services.wactl.arguments import Json, Sid, check_sid
from services.wactl.exits import fail
from services.wactl.running import ask, subjects

queue_app = typer.Typer(help="Per-session send queues (outbound-queue service).", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: sends that failed for good.", no_args_is_help=True)


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
    """Which dead letters a retry or purge is about: exactly one of the three ways."""
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
