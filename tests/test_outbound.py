"""Outbound delivery on the real services: pacing, scheduling, expiry, retries, dead letters."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest

from contracts.types import utcnow
from services.common.bus import encode
from services.devstack.probes import EventTap, call, call_ok, wait_until
from services.devstack.scenarios import start_sending_stack
from services.sending.journal import SendJournal
from tests.conftest import make_settings

pytestmark = pytest.mark.slow


def at(event: dict) -> datetime:
    return datetime.fromisoformat(event["at"].replace("Z", "+00:00"))


def states(tap: EventTap, sid: str, send_id: str) -> list[str]:
    return [e["state"] for e in tap.of(sid, "outbound") if e["id"] == send_id]


async def terminal(tap: EventTap, sid: str, send_id: str, timeout: float = 30) -> dict:
    return await tap.wait_for(
        sid, "outbound", lambda e: e["id"] == send_id and e["state"] in ("read", "failed", "expired"), timeout
    )


async def send(nc, settings, sid: str, send_id: str, to: str = "15550001111", **extra) -> dict:
    body = {"id": send_id, "to": to, "text": f"text of {send_id}", **extra}
    return await call_ok(nc, settings.subjects.send(sid), body)


async def test_pacing_spaces_sends_with_jitter_and_keeps_order(stack, nc, tmp_path, infra) -> None:
    settings = make_settings(
        infra, tmp_path, pacing_per_minute=600.0, pacing_burst=2, pacing_min_gap=0.3, pacing_jitter=0.15
    )
    stack.settings = settings
    tap = await start_sending_stack(stack, nc, settings, ["paced"])
    for i in range(8):
        await send(nc, settings, "paced", f"p{i}")
    for i in range(8):
        await tap.wait_for("paced", "outbound", lambda e, i=i: e["id"] == f"p{i}" and e["state"] == "sent", 30)
    sent = {e["id"]: at(e) for e in tap.of("paced", "outbound") if e["state"] == "sent"}
    times = [sent[f"p{i}"] for i in range(8)]
    assert times == sorted(times), "sends left out of acceptance order"
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.15 - 0.02, gaps  # min_gap - jitter, with a little clock slack
    assert max(gaps) - min(gaps) > 0.03, f"no jitter in {gaps}"
    # 600/min with a burst of 2: 8 sends need at least (8 - 2) / 10 per second.
    assert (times[-1] - times[0]).total_seconds() >= 0.6 - 0.05


async def test_send_at_and_expires_at(stack, nc, settings) -> None:
    tap = await start_sending_stack(stack, nc, settings, ["timed"])
    now = utcnow()
    await send(nc, settings, "timed", "later", send_at=(now + timedelta(seconds=2)).isoformat())
    await send(nc, settings, "timed", "now")
    sent_now = await tap.wait_for("timed", "outbound", lambda e: e["id"] == "now" and e["state"] == "sent")
    assert not [e for e in tap.of("timed", "outbound") if e["id"] == "later" and e["state"] == "sent"]
    stats = await call_ok(nc, settings.subjects.queue("timed", "stats"))
    assert stats["scheduled"] == 1
    later = await tap.wait_for("timed", "outbound", lambda e: e["id"] == "later" and e["state"] == "sent", 10)
    assert (at(later) - now).total_seconds() >= 1.95 and at(later) > at(sent_now)

    reply = await call(
        nc,
        settings.subjects.send("timed"),
        {"id": "stale", "to": "15550001111", "text": "code 1234", "expires_at": (utcnow() - timedelta(seconds=1)).isoformat()},
    )
    assert reply.error.code == "invalid_request" and "expires_at" in reply.error.message


async def test_expired_while_waiting_offline_is_never_sent(stack, nc, settings) -> None:
    tap = await start_sending_stack(stack, nc, settings, ["exp"])
    s = settings.subjects
    slow = {"pacing": {"per_minute": 1, "burst": 1, "min_gap": 0, "jitter": 0}}
    await call_ok(nc, s.session("exp", "policy"), {"policy": slow})
    await send(nc, settings, "exp", "first")  # takes the only token
    await send(nc, settings, "exp", "stale", expires_at=(utcnow() + timedelta(seconds=2)).isoformat())
    await call_ok(nc, s.sim("exp", "ban"), {"seconds": 60})  # and the session goes offline
    await tap.wait_state("exp", "banned")
    expired = await terminal(tap, "exp", "stale", timeout=15)
    assert expired["state"] == "expired" and expired["error"]["code"] == "expired"
    assert states(tap, "exp", "stale") == ["queued", "expired"]
    stats = await call_ok(nc, s.sim_stats, {"session_id": "exp"})
    assert "stale" not in stats["sessions"]["exp"]["received"]
    reply = await call(nc, s.send("exp"), {"id": "late", "to": "15550001111", "text": "x"})
    assert reply.error.code == "session_unavailable"  # a banned session refuses new sends


async def test_permanent_failures_fail_at_once_and_retries_end_in_the_dead_letter_queue(stack, nc, settings) -> None:
    tap = await start_sending_stack(stack, nc, settings, ["dlq"])
    s = settings.subjects
    await send(nc, settings, "dlq", "nobody", to="00012345678")
    failed = await terminal(tap, "dlq", "nobody")
    assert failed["state"] == "failed" and failed["error"]["code"] == "not_on_whatsapp"
    assert (await call_ok(nc, s.dlq("list"), {"session_id": "dlq"}))["entries"] == []

    # WhatsApp's servers fail every attempt (not sent): retried with backoff, then dead-lettered.
    await call_ok(nc, s.sim("dlq", "faults"), {"send_errors": settings.send_max_attempts})
    await send(nc, settings, "dlq", "doomed")
    dead = await terminal(tap, "dlq", "doomed", timeout=60)
    assert dead["state"] == "failed" and dead["error"]["code"] == "internal"
    entries = (await call_ok(nc, s.dlq("list"), {"session_id": "dlq"}))["entries"]
    assert [e["id"] for e in entries] == ["doomed"] and entries[0]["attempts"] == settings.send_max_attempts
    received = (await call_ok(nc, s.sim_stats, {"session_id": "dlq"}))["sessions"]["dlq"]["received"]
    assert "doomed" not in received

    retried = await call_ok(nc, s.dlq("retry"), {"seq": entries[0]["seq"]})
    new_id = retried["retried"][0]["new_id"]
    assert new_id.startswith("doomed~r")
    await tap.wait_for("dlq", "outbound", lambda e: e["id"] == new_id and e["state"] == "sent", 30)
    assert states(tap, "dlq", "doomed")[-1] == "failed"  # the original keeps its one terminal state
    assert (await call_ok(nc, s.dlq("list"), {"session_id": "dlq"}))["entries"] == []
    reply = await call(nc, s.dlq("purge"), {"seq": 1, "all": True})
    assert reply.error.code == "invalid_request"


async def test_logout_fails_every_waiting_send(stack, nc, settings) -> None:
    tap = await start_sending_stack(stack, nc, settings, ["gone"])
    s = settings.subjects
    slow = {"pacing": {"per_minute": 1, "burst": 1, "min_gap": 0, "jitter": 0}}
    await call_ok(nc, s.session("gone", "policy"), {"policy": slow})
    for i in range(4):
        await send(nc, settings, "gone", f"w{i}")
    await tap.wait_for("gone", "outbound", lambda e: e["id"] == "w0" and e["state"] == "sent")
    await call_ok(nc, s.session("gone", "logout"))
    for i in range(1, 4):
        failed = await terminal(tap, "gone", f"w{i}")
        assert failed["state"] == "failed" and failed["error"]["code"] == "session_logged_out"
    stats = await call_ok(nc, s.queue("gone", "stats"))
    assert stats["depth"] == 0


async def test_queue_stats_policy_and_rate_limit(stack, nc, tmp_path, infra) -> None:
    settings = make_settings(infra, tmp_path, queue_limit=3)
    stack.settings = settings
    tap = await start_sending_stack(stack, nc, settings, ["full"])
    s = settings.subjects
    policy = await call_ok(nc, s.session("full", "policy"), {"policy": {"pacing": {"per_minute": 1, "burst": 1}}})
    assert policy["pacing"]["per_minute"] == 1 and policy["pacing"]["min_gap"] == 2.0
    assert (await call_ok(nc, s.session("full", "policy"), {}))["pacing"]["per_minute"] == 1
    bad = await call(nc, s.session("full", "policy"), {"policy": {"pacing": {"min_gap": 1, "jitter": 5}}})
    assert bad.error.code == "invalid_request" and "jitter" in bad.error.message
    await send(nc, settings, "full", "q0")  # takes the only token
    await tap.wait_for("full", "outbound", lambda e: e["id"] == "q0" and e["state"] == "sent")
    for i in range(1, 4):
        await send(nc, settings, "full", f"q{i}")

    async def depth() -> int | None:
        stats = await call_ok(nc, s.queue("full", "stats"))
        return stats if stats["depth"] == 3 else None

    stats = await wait_until(depth, what="three sends waiting")
    assert stats["oldest_age_s"] >= 0
    reply = await call(nc, s.send("full"), {"id": "q9", "to": "15550001111", "text": "x"})
    assert reply.error.code == "rate_limited"
    # Refused, not remembered: the same id is new once there is room.
    assert (await call(nc, s.send("full"), {"id": "q9", "to": "15550001111", "text": "x"})).error.code == "rate_limited"
    unknown = await call(nc, s.queue("nobody", "stats"))
    assert unknown.error.code == "not_found"


async def test_a_send_an_earlier_owner_may_have_sent_is_not_sent_again_unless_the_policy_says(
    stack, nc, settings
) -> None:
    tap = await start_sending_stack(stack, nc, settings, ["amb"])
    s = settings.subjects
    journal = SendJournal(await nc.jetstream().key_value(s.sends_bucket))
    holding = {"pacing": {"per_minute": 60, "burst": 1, "min_gap": 2, "jitter": 0}}
    await call_ok(nc, s.session("amb", "policy"), {"policy": holding})

    async def crashed_owner_left(send_id: str) -> None:
        """What an owner that died between its claim and WhatsApp's answer leaves behind."""
        await send(nc, settings, "amb", send_id)
        moved, record = await journal.claim("amb", send_id, token="0", node="a-dead-node")
        assert moved, record

    await send(nc, settings, "amb", "first")  # the next send waits 2 s for the pacer
    await crashed_owner_left("maybe")
    failed = await terminal(tap, "amb", "maybe")
    assert failed["state"] == "failed" and failed["error"]["code"] == "ambiguous", failed
    entries = (await call_ok(nc, s.dlq("list"), {"session_id": "amb"}))["entries"]
    assert [e["id"] for e in entries] == ["maybe"]

    await call_ok(nc, s.session("amb", "policy"), {"policy": {**holding, "resend_ambiguous": True}})
    await send(nc, settings, "amb", "second")  # a new policy starts a new pacer: hold again
    await crashed_owner_left("again")
    sent = await tap.wait_for("amb", "outbound", lambda e: e["id"] == "again" and e["state"] == "sent")
    assert sent["message_id"]
    received = (await call_ok(nc, s.sim_stats, {"session_id": "amb"}))["sessions"]["amb"]["received"]
    assert "maybe" not in received and received["again"] == 1


async def test_receipts_for_a_dead_owner_reach_the_next_one(stack, nc, tmp_path, infra) -> None:
    # The phone reads 2 s after delivery; the owner is killed in between. Like WhatsApp, the
    # simulator redelivers a receipt nobody acked, and the next owner maps it to its send.
    settings = make_settings(infra, tmp_path, pacing_enabled=False, sim_read_after=2.0)
    stack.settings = settings
    tap = await start_sending_stack(stack, nc, settings, ["rcpt"])
    await send(nc, settings, "rcpt", "r1")
    await tap.wait_for("rcpt", "outbound", lambda e: e["id"] == "r1" and e["state"] == "delivered", 15)
    stack.kill("persistence")  # the next owner must not need history to know its sends
    stack.kill("node1")
    stack.start("session-actor", "node2")
    read = await terminal(tap, "rcpt", "r1", timeout=60)
    assert read["state"] == "read"
    assert states(tap, "rcpt", "r1") == ["queued", "sent", "delivered", "read"]


async def test_a_status_event_whose_token_no_claim_produced_changes_no_state(stack, nc, settings) -> None:
    """On a bus without authentication anyone can publish events; the intake still checks
    the token a status event carries (a fencing token, compared as numbers, that a claim of
    the leases bucket produced) before it believes a session is logged out."""
    tap = await start_sending_stack(stack, nc, settings, ["victim", "marker"])
    s = settings.subjects
    connected = await tap.wait_state("victim", "connected")
    epoch, revision = connected["token"].split(".")
    forged_tokens = ["zzzz", f"{epoch}.{int(revision) + 10**9:016d}", f"{int(epoch) + 1:014d}.{revision}", "1.2.3"]
    js = nc.jetstream()
    for i, token in enumerate(forged_tokens):
        forged = {"event_id": f"forged-{i}", "session_id": "victim", "at": connected["at"], "state": "logged_out", "token": token}
        await js.publish(s.event("victim", "status"), encode(forged))
    # A real logout after them in the stream: once its waiting send fails, the intake has
    # read past the forged events.
    slow = {"pacing": {"per_minute": 1, "burst": 1, "min_gap": 0, "jitter": 0}}
    await call_ok(nc, s.session("marker", "policy"), {"policy": slow})
    await send(nc, settings, "marker", "first")
    await send(nc, settings, "marker", "waiting")
    await call_ok(nc, s.session("marker", "logout"))
    assert (await terminal(tap, "marker", "waiting"))["error"]["code"] == "session_logged_out"

    await send(nc, settings, "victim", "still-sends")
    await tap.wait_for("victim", "outbound", lambda e: e["id"] == "still-sends" and e["state"] == "delivered")
