"""Fuzzing the public contract of a running system: every request subject gets bodies that
Hypothesis generates (malformed JSON, wrong types, nulls, huge numbers, bad timestamps, bad
base64, unicode, deep nesting, 1-5 MB strings, valid bodies with one field spoiled), and
hostile subjects (wildcards, extra tokens, spaces, long or non-ASCII session ids). Every
answer must be a v1 envelope (`ok`, or an error code of the contract other than
`internal`); a subject no service listens to may have no responders; the client library
may refuse what cannot be sent at all (a subject with a space, a body over the server's
max payload).

Used by the test suite (a short run, tests/test_fuzz.py) and `python -m bench fuzz` (at
least 2,000 bodies per subject).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats.errors
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient

from contracts.envelope import ErrorCode, Reply
from contracts.subjects import Subjects

ANSWERED_CODES = frozenset(ErrorCode.__args__) - {"internal"}  # type: ignore[attr-defined]
MB = 1024 * 1024
# Above the session API's own longest wait (its request to a busy or moving actor, 40 s).
REQUEST_TIMEOUT = 60.0
# What a request ended in; FAILURES are what the fuzzing looks for.
OK, ERROR, NO_RESPONDERS, CLIENT_REFUSED = "ok", "error", "no_responders", "client_refused"
INTERNAL, MALFORMED, TIMEOUT = "internal", "malformed_reply", "timeout"
FAILURES = frozenset({INTERNAL, MALFORMED, TIMEOUT})
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def doomed(sid: str) -> str:
    """The session the destructive requests (logout, delete) are fuzzed on, so that a valid
    body among them leaves `sid` to the others (create it beside `sid`)."""
    return f"{sid}-doomed"


def request_templates(s: Subjects, sid: str) -> dict[str, dict[str, Any]]:
    """Every public request subject (contract v1 and its additions) with a valid body."""
    return {
        s.session_create: {"session_id": f"{sid}-new", "label": "fuzzed"},
        s.session_list: {},
        s.session(sid, "get"): {},
        s.session(sid, "pair"): {"method": "code", "phone": "15551234567"},
        s.session(doomed(sid), "logout"): {},
        s.session(doomed(sid), "delete"): {},
        s.session(sid, "reconnect"): {},
        s.session(sid, "policy"): {"policy": {"pacing": {"per_minute": 10, "burst": 5}, "resend_ambiguous": False}},
        s.session(sid, "read"): {"chat": "15550002222", "message_ids": ["3EB0C0FFEE"]},
        s.send(sid): {
            "id": "fuzz-1",
            "to": "15550001111",
            "text": "caption",
            "media": {"kind": "image", "base64": PNG_BASE64, "mime": "image/png"},
            "send_at": "2030-01-01T00:00:00Z",
            "expires_at": "2031-01-01T00:00:00Z",
        },
        s.history(sid, "messages"): {"chat": "15550002222@s.whatsapp.net", "limit": 10},
        s.history(sid, "status"): {"limit": 5},
        s.history(sid, "outbound"): {"id": "fuzz-1"},
        s.queue(sid, "stats"): {},
        s.dlq("list"): {"session_id": sid, "limit": 10},
        s.dlq("retry"): {"seq": 1},
        s.dlq("purge"): {"session_id": sid},
    }


def hostile_subjects(s: Subjects, sid: str) -> list[str]:
    """Subjects no valid request uses: wildcards, extra or missing tokens, bad session ids."""
    bad_sids = ["*", ">", f"{sid}.extra", "a b", "sessão", "x" * 300, "-", "$SYS"]
    found = [s.session_create + ".x", s.session_list + ".x", s.dlq("list") + ".x", f"{s.prefix}.session", f"{s.prefix}.send"]
    for bad in bad_sids:
        found += [s.session(bad, "get"), s.send(bad), s.history(bad, "messages"), s.queue(bad, "stats")]
    found += [s.session(sid, "*"), s.session(sid, ">"), s.session(sid, "explode")]
    return found


# -- bodies -------------------------------------------------------------------------------------
_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),  # NaN and infinities come out as JSON's invalid NaN / Infinity
    st.text(max_size=100),
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=20,
)
ODD_STRINGS = [
    "2026-13-45T99:99:99Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2026-01-01T00:00:00",
    "yesterday", "", " ", "!!!not base64!!!", "QQ", "QQ=", "====", "\u0000", "\ud800", "🙂" * 40,
    "../../etc/passwd", "http://169.254.169.254/latest/meta-data", "*", ">", "a.b", "a b",
]  # fmt: skip
ODD_NUMBERS = [2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, -1, 0, 1e308, -0.0]
# Values meant to trip one field: the wrong type, bad times and base64, sizes at the edges.
_spoilers = st.one_of(
    _json_values,
    st.sampled_from(ODD_STRINGS),
    st.sampled_from(ODD_NUMBERS),
    st.integers(min_value=1, max_value=70_000).map(lambda n: "x" * n),
)


def _encode(value: Any) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    except (ValueError, TypeError):
        return repr(value).encode("utf-8", "surrogatepass")


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every field of a template (nested ones too), as key paths."""
    found = []
    if isinstance(value, dict):
        for key, inner in value.items():
            found.append((*prefix, key))
            found.extend(_paths(inner, (*prefix, key)))
    return found


def _spoil(template: dict[str, Any], path: tuple[Any, ...], how: str, value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(template))
    target = body
    for key in path[:-1]:
        target = target[key]
    if how == "drop":
        target.pop(path[-1], None)
    elif how == "unknown":
        target[f"{path[-1]}_unknown"] = value
    else:
        target[path[-1]] = value
    return body


Body = Callable[[], bytes]  # made when it is sent: thousands of megabyte bodies do not wait in memory


def _made(data: bytes) -> Body:
    return lambda: data


def body_strategy(template: dict[str, Any], max_payload: int) -> st.SearchStrategy[Body]:
    paths = _paths(template) or [("extra",)]
    spoiled = st.builds(
        lambda path, how, value: _made(_encode(_spoil(template, path, how, value))),
        st.sampled_from(paths),
        st.sampled_from(["replace", "replace", "drop", "unknown"]),
        _spoilers,
    )
    deep = st.builds(
        lambda depth, opener, closer: lambda: opener * depth + closer * depth,
        st.integers(min_value=50, max_value=200_000),
        st.sampled_from([b"[", b'{"a":']),
        st.sampled_from([b"]", b"}", b""]),
    )
    # 1-5 MB strings in a field of a valid body (within the server's max payload).
    huge = st.builds(
        lambda path, size, char: lambda: _encode(_spoil(template, path, "replace", char * (size // len(char.encode())))),
        st.sampled_from(paths),
        st.integers(min_value=MB, max_value=max(MB, min(5 * MB, max_payload - 64 * 1024))),
        st.sampled_from(["x", "é", "🙂"]),
    )
    return st.one_of(
        spoiled,
        spoiled,
        spoiled,
        st.binary(max_size=300).map(_made),
        st.text(max_size=300).map(lambda t: _made(t.encode("utf-8", "surrogatepass"))),
        _json_values.map(lambda v: _made(_encode(v))),
        deep,
        huge,
    )


def draw(strategy: st.SearchStrategy[Any], count: int, random_seed: int) -> list[Any]:
    """`count` values Hypothesis generates from `strategy` (no shrinking: a failure is
    reported with the value that caused it)."""
    found: list[Any] = []

    @seed(random_seed)
    @settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(strategy)
    def collect(value: Any) -> None:
        found.append(value)

    collect()
    return found


# -- running --------------------------------------------------------------------------------------
@dataclass
class Failure:
    subject: str
    outcome: str
    body: str  # the start of the body
    detail: str


@dataclass
class FuzzReport:
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    # The slowest answers: (seconds, subject, body size).
    slowest: list[tuple[float, str, int]] = field(default_factory=list)

    def count(self, subject: str, outcome: str) -> None:
        self.outcomes.setdefault(subject, Counter())[outcome] += 1

    def totals(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for counts in self.outcomes.values():
            total.update(counts)
        return total


async def ask(nc: NatsClient, subject: str, body: bytes, hostile: bool) -> tuple[str, str]:
    """One request: its outcome and, for a failure, what came back."""
    try:
        msg = await nc.request(subject, body, timeout=REQUEST_TIMEOUT)
    except nats.errors.NoRespondersError:
        return (NO_RESPONDERS, "") if hostile else (TIMEOUT, "no responders on a public subject")
    except nats.errors.TimeoutError:
        return TIMEOUT, ""
    except (nats.errors.BadSubjectError, nats.errors.MaxPayloadError) as exc:
        return CLIENT_REFUSED, type(exc).__name__
    try:
        reply = msgspec.json.decode(msg.data, type=Reply)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return MALFORMED, msg.data[:200].decode(errors="replace")
    if reply.ok:
        return OK, ""
    assert reply.error is not None
    if reply.error.code == INTERNAL:
        return INTERNAL, reply.error.message
    if reply.error.code not in ANSWERED_CODES:
        return MALFORMED, f"unknown code {reply.error.code!r}"
    return ERROR, ""


async def fuzz(
    nc: NatsClient, s: Subjects, sid: str, per_subject: int, random_seed: int = 0, in_flight: int = 8
) -> FuzzReport:
    """`per_subject` generated bodies for every public subject; for each hostile subject, a
    tenth as many (valid and generated bodies). Sessions `sid` and `doomed(sid)` should exist."""
    report = FuzzReport()
    jobs: list[tuple[str, Body, bool]] = []
    # Generated off the event loop (seconds per subject): the connection must keep answering
    # the server's pings meanwhile, or the server drops it.
    for i, (subject, template) in enumerate(request_templates(s, sid).items()):
        bodies = await asyncio.to_thread(draw, body_strategy(template, nc.max_payload), per_subject, random_seed + i)
        jobs += [(subject, body, False) for body in bodies]
    generic_bodies = body_strategy({"session_id": sid}, nc.max_payload)
    generic = await asyncio.to_thread(draw, generic_bodies, max(1, per_subject // 10), random_seed - 1)
    for subject in hostile_subjects(s, sid):
        jobs += [(subject, body, True) for body in [_made(b"{}"), *generic]]
    random.Random(random_seed).shuffle(jobs)
    pending = iter(jobs)

    async def worker() -> None:
        for subject, make, hostile in pending:
            body = make()
            started = time.monotonic()
            outcome, detail = await ask(nc, subject, body, hostile)
            report.slowest = sorted([*report.slowest, (time.monotonic() - started, subject, len(body))])[-5:]
            report.count(subject, outcome)
            if outcome in FAILURES:
                preview = body[:120].decode("utf-8", "replace")
                report.failures.append(Failure(subject, outcome, f"{preview} ({len(body)} bytes)", detail))

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return report
