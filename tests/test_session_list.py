"""`<prefix>.session.list` in pages: a reply never grows past what one NATS message carries."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from contracts.sessions import Session
from services.devstack.probes import all_sessions, call, call_ok, wait_until
from services.session_actor.api import fitting

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def sessions(count: int) -> list[Session]:
    return [Session(session_id=f"s{i:04d}", label="", state="created", since=NOW, created_at=NOW) for i in range(count)]


def test_a_page_holds_the_longest_head_that_fits_the_budget() -> None:
    listed = sessions(50)
    one = len(msgspec.json.encode(listed[0]))
    budget = 2 + 10 * (one + 1)  # exactly ten, with their commas and brackets
    assert fitting(listed, budget) == listed[:10]
    assert fitting(listed, budget - 1) == listed[:9]
    assert len(msgspec.json.encode(fitting(listed, budget))) <= budget
    assert fitting(listed, 10**9) == listed
    assert fitting([], 10) == []


@pytest.mark.slow
async def test_sessions_come_in_id_order_a_page_at_a_time(stack, nc, settings) -> None:
    s = settings.subjects
    stack.start_all(nodes=1)
    await wait_until(lambda: call(nc, s.session_list, {}, timeout=2), timeout=60, what="services")
    for sid in ("e", "a", "d", "g", "b", "f", "c"):
        await call_ok(nc, s.session_create, {"session_id": sid})

    whole = await call_ok(nc, s.session_list, {})
    assert [x["session_id"] for x in whole["sessions"]] == list("abcdefg") and "next" not in whole

    first = await call_ok(nc, s.session_list, {"limit": 3})
    assert [x["session_id"] for x in first["sessions"]] == ["a", "b", "c"] and first["next"] == "c"
    second = await call_ok(nc, s.session_list, {"after": first["next"], "limit": 3})
    assert [x["session_id"] for x in second["sessions"]] == ["d", "e", "f"] and second["next"] == "f"
    last = await call_ok(nc, s.session_list, {"after": "f", "limit": 3})
    assert [x["session_id"] for x in last["sessions"]] == ["g"] and "next" not in last
    exact = await call_ok(nc, s.session_list, {"after": "d", "limit": 3})
    assert [x["session_id"] for x in exact["sessions"]] == ["e", "f", "g"] and "next" not in exact
    assert [x["session_id"] for x in await all_sessions(nc, s.session_list)] == list("abcdefg")

    for body, words in (({"limit": 0}, "limit"), ({"limit": 5001}, "limit"), ({"after": "a b"}, "after")):
        reply = await call(nc, s.session_list, body)
        assert not reply.ok and reply.error.code == "invalid_request" and words in reply.error.message, reply
