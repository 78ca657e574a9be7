"""`wactl media`: the files of inbound messages, read from the media bucket (`WA_MEDIA`) with
NATS' own object-store API, as any client of the contract reads them."""

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer
from nats.js.errors import NotFoundError

from contracts.messages import SESSION_HEADER
from services.common.media import size_text
from services.wactl.arguments import Sid
from services.wactl.exits import EXIT_UNREACHABLE, Failure
from services.wactl.gateway import Gateway
from services.wactl.running import with_nats

app = typer.Typer(help="Files of inbound messages (the media bucket).", no_args_is_help=True)


@app.command("get")
def media_get(
    ctx: typer.Context,
    sid: Sid,
    media_id: Annotated[str, typer.Argument(help="the media_id of a message event")],
    output: Annotated[str, typer.Option("--output", "-o", metavar="FILE", help="where to save it (- for stdout)")],
) -> None:
    """Save the file of an inbound message (its event's media.media_id)."""
    target = None if output == "-" else Path(output).expanduser()
    with_nats(ctx, lambda gateway: save_media(gateway, sid, media_id, target))


async def save_media(gateway: Gateway, sid: str, media_id: str, target: Path | None) -> int:
    """Write the file to `target` (None: stdout); a summary goes to stderr."""
    js = gateway.nc.jetstream()
    try:
        bucket = await js.object_store(gateway.subjects.media_bucket)
    except NotFoundError:
        raise Failure(
            f"no media bucket {gateway.subjects.media_bucket}: have the services run with prefix "
            f"{gateway.subjects.prefix!r}?",
            EXIT_UNREACHABLE,
        ) from None
    try:
        info = await bucket.get_info(media_id)
    except NotFoundError:
        raise Failure(f"no file {media_id!r} (not stored, or past its retention)") from None
    owner = (info.headers or {}).get(SESSION_HEADER, [None])[0]
    if owner != sid:
        raise Failure(f"{media_id!r} is not a file of session {sid!r}")
    # The object store checks the file's SHA-256 as it reads it.
    if target is None:
        await bucket.get(media_id, writeinto=sys.stdout.buffer)  # type: ignore[arg-type]
    else:
        try:
            file = await asyncio.to_thread(open, target, "wb")
        except OSError as exc:
            raise Failure(f"cannot write {target}: {exc.strerror or exc}") from None
        with file:
            await bucket.get(media_id, writeinto=file)
    mime = (info.headers or {}).get("Content-Type", ["?"])[0]
    typer.echo(f"saved {media_id} ({mime}, {size_text(info.size or 0)}) to {target or 'stdout'}", err=True)
    return 0
