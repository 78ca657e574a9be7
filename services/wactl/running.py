"""Running a command: its coroutine under asyncio with a NATS connection, failures turned
into one line on stderr and an exit status, and `ask`, the plain request-and-print command."""

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import typer

from contracts.envelope import ContractError
from contracts.subjects import Subjects
from services.common.config import Settings
from services.wactl import render
from services.wactl.exits import EXIT_INTERRUPTED, Failure, fail
from services.wactl.gateway import Gateway, convert

T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    """The global options (`ctx.obj` of every command)."""

    settings: Settings
    timeout: float


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
    """Run `command` with a connected gateway (closed however the command ends)."""
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
