"""The connection state machine, driven without servers or clocks."""

from __future__ import annotations

import random

import pytest

from services.session_actor import machine as m


def new(**policy: float) -> m.ConnectionMachine:
    return m.ConnectionMachine(m.ReconnectPolicy(**policy), random.Random(7))


def reports(effects: list[m.Effect]) -> list[m.Report]:
    return [e for e in effects if isinstance(e, m.Report)]


def kinds(effects: list[m.Effect]) -> list[str]:
    return [type(e).__name__ for e in effects]


def connected(now: float = 0.0) -> m.ConnectionMachine:
    sm = new()
    sm.handle(m.Start(now, has_credentials=True))
    sm.handle(m.Connected(now, jid="1@s.whatsapp.net"))
    return sm


def test_start_with_credentials_dials_and_reports_connecting() -> None:
    sm = new()
    effects = sm.handle(m.Start(0, has_credentials=True))
    assert kinds(effects) == ["Connect", "Report"]
    assert sm.state == "connecting"


def test_start_without_credentials_waits_and_keeps_logged_out_state() -> None:
    sm = new()
    assert sm.handle(m.Start(0, has_credentials=False, previous_state="logged_out")) == []
    assert sm.phase == "idle" and sm.state == "logged_out"
    assert new().handle(m.Start(0, has_credentials=False)) == []
    # A session that was live under a dead owner but has no credentials left is `created`.
    assert new().handle(m.Start(0, has_credentials=False, previous_state="connected")) == [m.Report("created")]


def test_pairing_by_qr_reports_each_code_then_connects_and_snapshots() -> None:
    sm = new()
    sm.handle(m.Start(0, has_credentials=False))
    effects = sm.handle(m.PairRequested(1))
    assert m.Connect() in effects and m.StartTimer("pairing_timeout", 180.0) in effects
    assert reports(sm.handle(m.QrShown(2, "code-1")))[0].qr == "code-1"
    assert reports(sm.handle(m.QrShown(62, "code-2")))[0].qr == "code-2"
    effects = sm.handle(m.PairSucceeded(70, "1555@s.whatsapp.net"))
    assert m.SnapshotCredentials() in effects and m.CancelTimer("pairing_timeout") in effects
    effects = sm.handle(m.Connected(71))
    assert sm.state == "connected" and reports(effects)[0].jid == "1555@s.whatsapp.net"
    assert m.SnapshotCredentials() in effects


def test_pairing_by_code_asks_for_the_code_once_after_the_first_qr() -> None:
    sm = new()
    sm.handle(m.Start(0, has_credentials=False))
    sm.handle(m.PairRequested(0, phone="15551234567"))
    assert m.RequestPairCode("15551234567") in sm.handle(m.QrShown(1, "a"))
    assert not any(isinstance(e, m.RequestPairCode) for e in sm.handle(m.QrShown(2, "b")))


def test_pairing_retries_when_whatsapp_cannot_be_reached_before_any_code() -> None:
    sm = new()
    sm.handle(m.Start(0, has_credentials=False))
    sm.handle(m.PairRequested(0))
    effects = sm.handle(m.Disconnected(1, "no responders"))
    assert sm.state == "pairing" and any(isinstance(e, m.StartTimer) and e.timer == "reconnect" for e in effects)
    assert sm.handle(m.TimerFired(3, "reconnect")) == [m.Connect()]
    assert reports(sm.handle(m.QrShown(4, "code")))[0].qr == "code"


def test_socket_closed_after_codes_were_shown_means_nobody_scanned() -> None:
    sm = new()
    sm.handle(m.Start(0, has_credentials=False))
    sm.handle(m.PairRequested(0))
    sm.handle(m.QrShown(1, "code"))
    effects = sm.handle(m.Disconnected(160))
    assert sm.state == "stopped" and "pairing_timeout" in reports(effects)[0].reason


def test_pairing_timeout_stops_until_a_human_pairs_again() -> None:
    sm = new()
    sm.handle(m.Start(0, has_credentials=False))
    sm.handle(m.PairRequested(0))
    effects = sm.handle(m.TimerFired(180, "pairing_timeout"))
    assert sm.state == "stopped" and "pairing_timeout" in (reports(effects)[0].reason or "")
    assert m.Disconnect() in effects


def test_disconnect_backs_off_with_capped_jittered_exponential_delays() -> None:
    sm = new(base=1.0, cap=8.0, flap_disconnects=100)
    sm.handle(m.Start(0, has_credentials=True))
    delays = []
    for i in range(8):
        if sm.phase == "backoff":
            sm.handle(m.TimerFired(i * 100, "reconnect"))
        effects = sm.handle(m.Disconnected(i * 100 + 1))
        delays.append(next(e.delay for e in effects if isinstance(e, m.StartTimer)))
        assert sm.state == "disconnected"
    ceilings = [min(8.0, 2**i) for i in range(8)]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 8.0


def test_reconnect_timer_dials_again_and_success_resets_the_attempts() -> None:
    sm = connected()
    sm.handle(m.Disconnected(10))
    assert kinds(sm.handle(m.TimerFired(12, "reconnect"))) == ["Connect", "Report"]
    sm.handle(m.Connected(13))
    assert sm.attempt == 0


def test_flapping_backs_off_harder_and_says_so() -> None:
    sm = new(flap_disconnects=3, flap_window=60, flap_floor=100)
    sm.handle(m.Start(0, has_credentials=True))
    for t in (1, 2):
        sm.handle(m.Connected(t))
        sm.handle(m.Disconnected(t + 0.5))
    sm.handle(m.Connected(3))
    effects = sm.handle(m.Disconnected(3.5))
    delay = next(e.delay for e in effects if isinstance(e, m.StartTimer))
    assert 100 <= delay <= 200
    assert reports(effects)[0].reason.startswith("flapping: 3 disconnects")


def test_old_disconnects_leave_the_flapping_window() -> None:
    sm = new(flap_disconnects=3, flap_window=60, flap_floor=100, cap=4)
    sm.handle(m.Start(0, has_credentials=True))
    for t in (0, 100, 200):
        sm.handle(m.Connected(t))
        effects = sm.handle(m.Disconnected(t + 1))
    assert not reports(effects)[0].reason.startswith("flapping")


def test_logged_out_destroys_credentials_and_never_retries() -> None:
    sm = connected()
    effects = sm.handle(m.LoggedOut(5, "unlinked from the phone"))
    assert m.DestroyCredentials() in effects and sm.state == "logged_out"
    assert not any(isinstance(e, m.StartTimer) for e in effects)
    assert sm.handle(m.TimerFired(9, "reconnect")) == []
    assert sm.handle(m.Disconnected(10)) == []


@pytest.mark.parametrize("code", [401, 403])
def test_connect_failures_that_mean_logged_out(code: int) -> None:
    sm = new()
    sm.handle(m.Start(0, has_credentials=True))
    assert m.DestroyCredentials() in sm.handle(m.ConnectFailure(1, code))
    assert sm.state == "logged_out"


def test_temporary_ban_waits_for_its_expiry_then_reconnects() -> None:
    sm = connected()
    effects = sm.handle(m.TemporaryBan(5, code=402, expires_in=3600))
    assert sm.state == "banned" and m.StartTimer("ban_expiry", 3600) in effects
    assert sm.handle(m.TimerFired(100, "reconnect")) == []
    assert m.Connect() in sm.handle(m.TimerFired(3605, "ban_expiry"))
    assert sm.state == "connecting"


def test_client_outdated_stops_in_an_alert_worthy_state() -> None:
    sm = connected()
    effects = sm.handle(m.ConnectFailure(5, 405))
    assert sm.state == "stopped" and "client_outdated" in reports(effects)[0].reason
    assert not any(isinstance(e, m.StartTimer) for e in effects)


def test_stream_replaced_checks_ownership_and_stops_when_no_longer_owner() -> None:
    sm = connected()
    effects = sm.handle(m.StreamReplaced(5))
    assert m.VerifyOwnership() in effects
    assert m.Terminate() in sm.handle(m.OwnershipChecked(5.1, still_owner=False))


def test_stream_replaced_as_owner_reconnects_once_then_stops() -> None:
    sm = connected()
    sm.handle(m.StreamReplaced(5))
    assert m.Connect() in sm.handle(m.OwnershipChecked(5.1, still_owner=True))
    sm.handle(m.Connected(6))
    effects = sm.handle(m.StreamReplaced(7))
    assert sm.state == "stopped" and "another client" in reports(effects)[0].reason


def test_keepalive_timeouts_degrade_then_force_a_reconnect() -> None:
    sm = connected()
    assert reports(sm.handle(m.KeepAliveTimeout(1)))[0].reason == "keepalive timeout (1)"
    assert reports(sm.handle(m.KeepAliveRestored(2)))[0].reason is None
    sm.handle(m.KeepAliveTimeout(3))
    sm.handle(m.KeepAliveTimeout(4))
    effects = sm.handle(m.KeepAliveTimeout(5))
    assert m.Disconnect() in effects and sm.state == "disconnected"


def test_logout_request_unlinks_when_linked() -> None:
    effects = connected().handle(m.LogoutRequested(1))
    assert kinds(effects)[0] == "Logout" and m.DestroyCredentials() in effects


def test_graceful_stop_flushes_credentials_and_reports_a_live_session_as_disconnected() -> None:
    effects = connected().handle(m.StopRequested(1, "moving to another node"))
    assert m.SnapshotCredentials() in effects and m.Disconnect() in effects
    assert reports(effects) == [m.Report("disconnected", reason="moving to another node", jid="1@s.whatsapp.net")]


def test_a_session_moved_while_pairing_keeps_pairing_on_its_next_owner() -> None:
    old = new()
    old.handle(m.Start(0, has_credentials=False))
    old.handle(m.PairRequested(1, phone="15550001111"))
    [stop_report] = reports(old.handle(m.StopRequested(2, "moving to another node")))
    assert stop_report.state == "pairing" and "next owner" in (stop_report.reason or "")

    successor = new()
    effects = successor.handle(
        m.Start(3, has_credentials=False, previous_state="pairing", pairing_for=30.0, pairing_phone="15550001111")
    )
    # A fresh connection for a new code, for what is left of the pairing timeout.
    assert m.Connect() in effects and m.StartTimer("pairing_timeout", 150.0) in effects
    assert successor.state == "pairing" and successor.pending_phone == "15550001111"
    assert reports(effects)[0].reason == "pairing resumed by a new owner"
    assert m.RequestPairCode("15550001111") in successor.handle(m.QrShown(4, "code-1"))


def test_a_pairing_that_timed_out_while_between_owners_is_not_resumed() -> None:
    sm = new()
    effects = sm.handle(m.Start(0, has_credentials=False, previous_state="pairing", pairing_for=181.0))
    assert sm.state == "created" and effects == [m.Report("created")]


def test_graceful_stop_of_an_idle_session_reports_nothing() -> None:
    sm = new()
    sm.handle(m.Start(0, has_credentials=False))
    assert reports(sm.handle(m.StopRequested(1, "shutdown"))) == []
