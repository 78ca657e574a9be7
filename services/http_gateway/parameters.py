"""Query parameters as the contract's request bodies, and path and query parameters FastAPI
refused (a session id that is no subject token, a limit that is no number), said the way
the contract says what it refuses: plain code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contracts.types import PATTERN_HINTS


def refusal(errors: Sequence[Any]) -> str:
    """`<parameter>: <what was expected>, got <value>` for the first of FastAPI's errors."""
    if not errors:
        return "invalid request"
    error = errors[0]
    name = str(error.get("loc", ("", "request"))[-1])
    pattern = (error.get("ctx") or {}).get("pattern")
    expected = PATTERN_HINTS.get(pattern) if pattern else None
    if expected is None:
        return f"{name}: {error.get('msg', 'invalid')}"
    return f"{name}: expected {expected}, got {error.get('input')!r}"


def page_query(**given: Any) -> dict[str, Any]:
    """The request body of a page: the parameters that were given."""
    return {name: value for name, value in given.items() if value is not None}
