"""`wactl events`: tail the public events, rendered one per line or as JSON lines."""

from enum import StrEnum
from typing import Annotated

import msgspec
import typer

from contracts.subjects import token
from services.wactl import render
from services.wactl.arguments import check_sid
from services.wactl.gateway import Gateway, decode_event
from services.wactl.running import subjects, with_nats


class Kind(StrEnum):
    status = "status"
    message = "message"
    outbound = "outbound"
    alert = "alert"


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
    subject = subjects(ctx).event(session or "*", kind.value if kind else "*")
    with_nats(ctx, lambda gateway: tail_events(gateway, subject, from_start, count, as_json))


async def tail_events(
    gateway: Gateway, subject: str, from_start: bool, count: int | None, as_json: bool
) -> int:
    """Print the events on `subject`, until `count` of them if given."""
    feed = await gateway.tail(subject, from_start)
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
