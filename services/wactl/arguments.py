"""The arguments and options several commands share, and their checks."""

import re
from typing import Annotated, Any

import typer

from contracts.history import MAX_LIMIT
from contracts.types import PATTERN_HINTS, SESSION_ID_PATTERN

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


def given(**values: Any) -> dict[str, Any]:
    """The options that were given (not None), as keyword arguments for a request or settings."""
    return {k: v for k, v in values.items() if v is not None}
