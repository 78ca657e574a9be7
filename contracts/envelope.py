"""The v1 reply envelope, error codes, and strict request decoding with readable errors.

Every reply is `{"ok": true, "data": ...}` or `{"ok": false, "error": {"code", "message"}}`.
Decoding is strict (no silent type coercion) and an error names the bad field, e.g.
`to: expected digits of an E.164 number (6-15 digits), or a full JID, got 'abc'`.
"""

from __future__ import annotations

import re
from typing import Any, Generic, Literal, TypeVar

import msgspec

from contracts.types import PATTERN_HINTS

T = TypeVar("T")

ErrorCode = Literal[
    "invalid_request",
    "not_found",
    "conflict",
    "session_unavailable",
    "rate_limited",
    "unauthorized",
    "temporarily_unavailable",
    "internal",
]
# A server the request needs (NATS JetStream, MongoDB) is away for now: retry later. A send
# retried with the same `id` is never sent twice.
TEMPORARILY_UNAVAILABLE = "temporarily_unavailable"


class ErrorBody(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    # With `rate_limited`: seconds until a retry would be admitted, where the limit says.
    retry_after: float | None = None


class Ok(msgspec.Struct, Generic[T]):
    data: T
    ok: Literal[True] = True


class Err(msgspec.Struct):
    error: ErrorBody
    ok: Literal[False] = False


class Reply(msgspec.Struct):
    """Any reply, as a client decodes it before knowing which kind it is."""

    ok: bool
    data: Any = None
    error: ErrorBody | None = None


class ContractError(Exception):
    """A request that cannot be served; becomes an `Err` reply (or a failure event)."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def reply(self) -> Err:
        return Err(error=self.body)

    @property
    def body(self) -> ErrorBody:
        return ErrorBody(code=self.code, message=self.message, retry_after=self.retry_after)


def invalid(message: str) -> ContractError:
    return ContractError("invalid_request", message)


def not_found(message: str) -> ContractError:
    return ContractError("not_found", message)


def conflict(message: str) -> ContractError:
    return ContractError("conflict", message)


def unavailable(message: str) -> ContractError:
    return ContractError("session_unavailable", message)


def rate_limited(message: str, retry_after: float | None = None) -> ContractError:
    return ContractError("rate_limited", message, None if retry_after is None else round(retry_after, 1))


_decoders: dict[Any, msgspec.json.Decoder] = {}


def decode(body: bytes, type_: type[T]) -> T:
    """Strictly decode a request body; raises ContractError(invalid_request) naming the field."""
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    if not body.strip():
        raise invalid("empty body: expected a JSON object")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise invalid(explain(str(exc), body)) from None
    except msgspec.DecodeError as exc:
        raise invalid(f"malformed JSON: {exc}") from None
    except UnicodeDecodeError:
        raise invalid("malformed JSON: body is not valid UTF-8") from None
    except RecursionError:
        # Trap: msgspec raises RecursionError for JSON nested deeper than it recurses (an
        # unknown field holding `{"a":{"a":...}}` is enough); it escaped as `internal`.
        raise invalid("malformed JSON: nested too deeply") from None


_AT = re.compile(r"^(?P<what>.*?)(?: - at `(?P<path>[^`]+)`)?$", re.S)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_REGEX = re.compile(r"^Expected `str` matching regex '(?P<pattern>.*)'$", re.S)
_MIN_LEN = re.compile(r"^Expected `str` of length >= (?P<n>\d+)$")
_MAX_LEN = re.compile(r"^Expected `str` of length <= (?P<n>\d+)$")
_GOT = re.compile(r"^Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`$")


def explain(error: str, body: bytes) -> str:
    """Turn msgspec's validation message into `<field>: <what was expected>, got <value>`."""
    match = _AT.match(error)
    assert match is not None  # the pattern accepts any string
    what, path = match["what"], match["path"] or "$"
    missing = _MISSING.match(what)
    if missing:
        field = _join(path, missing["field"])
        return f"{field}: required field is missing"
    field = _join(path, None)
    value = _value_at(body, path)
    if (m := _REGEX.match(what)) is not None:
        pattern = m["pattern"].replace("\\\\", "\\")  # msgspec prints the regex escaped
        hint = PATTERN_HINTS.get(pattern, f"a value matching {pattern}")
        return f"{field}: expected {hint}, got {_show(value)}"
    if (m := _MAX_LEN.match(what)) is not None:
        size = len(value) if isinstance(value, str) else "?"
        return f"{field}: too long: at most {m['n']} characters allowed, got {size}"
    if (m := _MIN_LEN.match(what)) is not None:
        return f"{field}: too short: at least {m['n']} character(s) required"
    if (m := _GOT.match(what)) is not None:
        return f"{field}: expected {m['want']}, got {m['got']} {_show(value)}"
    return f"{field}: {what[:1].lower()}{what[1:]}" if field != "body" else f"body: {what}"


def _join(path: str, leaf: str | None) -> str:
    inner = path[2:] if path.startswith("$.") else path[1:]
    parts = [p for p in (inner, leaf) if p]
    return ".".join(parts) if parts else "body"


def _value_at(body: bytes, path: str) -> Any:
    """Best-effort lookup of the offending value for the message (never raises)."""
    try:
        value: Any = msgspec.json.decode(body)
        for key in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path[1:]):
            value = value[key[0]] if key[0] else value[int(key[1])]
        return value
    except Exception:
        return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
