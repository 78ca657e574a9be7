"""Alerts are events (wa.evt.<sid>.alert): which reasons are which kind (plain code), and
each moment an operator must act on, produced by the real services. (owner_lost:
tests/test_health_monitor.py; the alert rules over the metrics: tests/test_metrics.py.)"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime

import pytest
from bson import Binary

from contracts.alerts import ALERT_KINDS
from contracts.envelope import ErrorBody
from contracts.events import StatusEvent
from services.common import alerts
from services.common.reasons import KINDS, LOGOUT_REQUESTED, reason_kind
from services.devstack.probes import EventTap, call, call_ok, wait_until
from services.devstack.scenarios import pair
from services.session_actor import machine as m

T0 = datetime(2026, 12, 6, tzinfo=UTC)


# -- reasons and which of them are alerts, without servers --------------------------------
def reports_of_every_path() -> list[m.Report]:
    """The status reports the state machine makes, down each of its paths."""
    policy = m.ReconnectPolicy(flap_disconnects=2)
    found: list[m.Report] = []

    def run(*inputs: m.Input, has_credentials: bool = True) -> m.ConnectionMachine:
        machine = m.ConnectionMachine(policy, random.Random(1))
        for event in (m.Start(0.0, has_credentials), *inputs):
            found.extend(e for e in machine.handle(event) if isinstance(e, m.Report))
        return machine

    run(m.Connected(1.0), m.Disconnected(2.0, "websocket closed"), m.TimerFired(3.0, "reconnect"),
        m.Connected(4.0), m.Disconnected(5.0))  # fmt: skip
    run(m.Connected(1.0), *(m.KeepAliveTimeout(1.0 + i) for i in range(3)))
    run(m.Connected(1.0), m.ConnectFailure(2.0, 500, "bad gateway"))
    run(m.ConnectFailure(1.0, 401), m.PairRequested(2.0), m.QrShown(2.5, "qr"), m.TimerFired(9.0, "pairing_timeout"))
    run(m.TemporaryBan(1.0, 402, 60.0), m.TimerFired(61.0, "ban_expiry"), m.ReconnectRequested(62.0))
    run(m.ClientOutdated(1.0))
    run(m.Connected(1.0), m.StreamReplaced(2.0), m.OwnershipChecked(2.1, True), m.StreamReplaced(3.0))
    run(m.Connected(1.0), m.LogoutRequested(2.0))
    run(m.Connected(1.0), m.StopRequested(2.0, "shutdown"))
    run(m.Connected(1.0), m.StopRequested(2.0, "rebalancing to another node"))
    run(m.PairRequested(1.0), m.Disconnected(1.5), m.StopRequested(2.0, "shutdown"), has_credentials=False)
    resumed = m.ConnectionMachine(policy, random.Random(1))
    found.extend(e for e in resumed.handle(m.Start(0.0, False, "pairing", 10.0)) if isinstance(e, m.Report))
    return found


def test_every_reason_the_state_machine_gives_has_a_kind() -> None:
    reasons = {r.reason for r in reports_of_every_path() if r.reason}
    kinds = {reason: reason_kind(reason) for reason in reasons}
    assert "other" not in kinds.values(), kinds
    assert {"connection_lost", "keepalive", "connect_failed", "logged_out", "pairing_timeout", "temporary_ban",
            "ban_expired", "reconnect_requested", "client_outdated", "stream_replaced", "flapping", "handoff",
            "pairing_resumed"} <= set(kinds.values())  # fmt: skip
    assert set(kinds.values()) <= KINDS
    # And what the actor and the monitor add to them.
    assert reason_kind("credentials restored from version 2: version 3 skipped (bad)") == "credentials_fallback"
    assert reason_kind("credentials_unusable: no key") == "credentials_unusable"
    assert reason_kind("owner_lost: the node running this session stopped") == "owner_lost"
    assert (reason_kind(None), reason_kind("something new"), reason_kind("nope: x")) == ("none", "other", "other")


@pytest.mark.parametrize(
    ("state", "reason", "previous_drop", "expected"),
    [
        ("logged_out", "logged_out: connect refused with 401", None, ("logged_out", "critical")),
        ("logged_out", LOGOUT_REQUESTED, None, None),  # asked for: nobody has to act
        ("banned", "temporary_ban: code 402, lifts in 60s", None, ("banned", "critical")),
        ("stopped", "credentials_unusable: no key", None, ("credentials_unusable", "critical")),
        ("stopped", "pairing_timeout: nobody scanned the code; pair again", None, ("pairing_timeout", "warning")),
        ("connecting", "credentials restored from version 1: version 2 skipped", None, ("credentials_fallback", "warning")),
        ("disconnected", "flapping: 5 disconnects in 300s (x); retry in 200s", "connection lost; retry in 1s", ("flapping", "warning")),
        ("disconnected", "flapping: 6 disconnects in 300s (x); retry in 200s", "flapping: 5 disconnects", None),
        ("disconnected", "connection lost; retry in 1.0s", None, None),
        ("connected", None, None, None),
    ],
)  # fmt: skip
def test_which_status_reports_are_alerts(state, reason, previous_drop, expected) -> None:
    alert = alerts.status_alert(event_id="e1", session_id="s", at=T0, state=state, reason=reason,
                                previous_drop=previous_drop, node="n1")  # fmt: skip
    assert (None if alert is None else (alert.kind, alert.severity)) == expected
    if alert is not None:
        assert (alert.event_id, alert.state, alert.node) == ("e1:alert", state, "n1")
        assert alert.kind in ALERT_KINDS


def test_alert_ids_are_derived_from_the_moment_so_repeats_are_stored_once() -> None:
    error = ErrorBody(code="server_error", message="try later")
    assert alerts.dead_letter_alert("s", "m1", error, T0, "n1").event_id == "s:dead_letter:m1"
    assert alerts.daily_cap_alert("s", date(2026, 12, 6), 50, T0, None).event_id == "s:daily_cap:2026-12-06"
    lost = StatusEvent(event_id="s:owner_lost:0001.0002", session_id="s", at=T0, state="disconnected")
    assert alerts.owner_lost_alert(lost, "n1").event_id == "s:owner_lost:0001.0002:alert"


# -- produced by the real services --------------------------------------------------------
def kinds_of(tap: EventTap, sid: str) -> list[str]:
    return [e["kind"] for e in tap.of(sid, "alert")]


async def test_the_moments_to_act_become_alert_events(settings, nc, db, stack) -> None:
    s = settings.subjects
    tuned = {"flap_disconnects": 2, "flap_backoff_floor": 0.2, "pairing_timeout": 10.0, "send_max_attempts": 2}
    for service in ("wa-sim", "outbound-queue", "persistence"):
        stack.start(service)
    stack.start("session-actor", "node1", **tuned)
    tap = await EventTap(nc, settings).start()
    await wait_until(lambda: call(nc, s.session_list, {}, timeout=2), timeout=60, what="the session API")
    linked = ["unlinked", "banned", "flaky", "capped", "failing", "vaulted"]
    await asyncio.gather(*(pair(nc, settings, tap, sid) for sid in linked))
    await call_ok(nc, s.session_create, {"session_id": "unscanned"})
    await call_ok(nc, s.session("unscanned", "pair"), {"method": "qr"})

    await call_ok(nc, s.sim("unlinked", "unlink"), {})
    await call_ok(nc, s.sim("banned", "ban"), {"seconds": 60})
    # Daily cap 1: the second send waits for tomorrow, and the operator hears of it once.
    no_pacing = {"per_minute": 6000, "burst": 100, "min_gap": 0, "jitter": 0, "daily_cap": 1}
    await call_ok(nc, s.session("capped", "policy"), {"policy": {"pacing": no_pacing}})
    for i in (1, 2):
        await call_ok(nc, s.send("capped"), {"id": f"c{i}", "to": "15550001111", "text": "hi"})
    # WhatsApp refuses every attempt: after the last one the send is dead-lettered.
    await call_ok(nc, s.sim("failing", "faults"), {"send_errors": 10})
    await call_ok(nc, s.send("failing"), {"id": "doomed", "to": "15550001111", "text": "hi"})
    # Two drops in the window: flapping, alerted when it starts, not again on the third.
    for _ in range(3):
        seen = len(tap.of("flaky", "status"))
        await call_ok(nc, s.sim("flaky", "drop"), {})
        await tap.wait_state("flaky", "connected", timeout=30, after=seen)

    await tap.wait_for("unlinked", "alert", lambda e: e["kind"] == "logged_out")
    await tap.wait_for("banned", "alert", lambda e: e["kind"] == "banned" and e["severity"] == "critical")
    await tap.wait_for("capped", "alert", lambda e: e["kind"] == "daily_cap")
    dead = await tap.wait_for("failing", "alert", lambda e: e["kind"] == "send_dead_lettered")
    assert (dead["send_id"], dead["code"], dead["event_id"]) == ("doomed", "internal", "failing:dead_letter:doomed")
    await tap.wait_for("unscanned", "alert", lambda e: e["kind"] == "pairing_timeout", timeout=30)
    assert kinds_of(tap, "flaky") == ["flapping"]
    assert kinds_of(tap, "capped") == ["daily_cap"]
    assert {e["state"] for e in tap.of("unlinked", "alert")} == {"logged_out"}

    # Credentials: the newest version damaged, then every version of them. (A node whose keys
    # open no stored credentials at all takes no session: tests/test_wrong_key.py.)
    assert stack.stop("node1") == 0
    credentials = db["credentials"]
    doc = await credentials.find_one({"_id": "vaulted"})
    newest = max(doc["versions"], key=lambda v: v["version"])
    damaged = {**newest, "version": newest["version"] + 1, "blob": Binary(bytes(len(newest["blob"])))}
    await credentials.update_one({"_id": "vaulted"}, {"$push": {"versions": damaged}})
    stack.start("session-actor", "node1", **tuned)
    fallback = await tap.wait_for("vaulted", "alert", lambda e: e["kind"] == "credentials_fallback", timeout=60)
    assert fallback["severity"] == "warning" and "skipped" in fallback["message"]
    assert stack.stop("node1") == 0
    doc = await credentials.find_one({"_id": "vaulted"})
    ruined = [{**v, "blob": Binary(bytes(len(v["blob"])))} for v in doc["versions"]]
    await credentials.update_one({"_id": "vaulted"}, {"$set": {"versions": ruined}})
    stack.start("session-actor", "node1", **tuned)
    unusable = await tap.wait_for("vaulted", "alert", lambda e: e["kind"] == "credentials_unusable", timeout=60)
    assert unusable["state"] == "stopped" and unusable["severity"] == "critical"
    await tap.stop()
