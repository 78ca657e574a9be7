"""The http-gateway's decisions, without servers: the HTTP status of each contract error,
the filters of a subscription, retries and pausing, signatures, where webhooks may go, how
refused parameters read, API keys."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import get_args

import msgspec
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from contracts.envelope import ErrorCode
from contracts.events import StatusEvent
from contracts.subjects import Subjects
from services.api_keys import tokens
from services.common.backoff import equal_jitter
from services.common.bus import encode
from services.common.urls import public_address, shown
from services.http_gateway import parameters, statuses
from services.http_gateway.webhooks.alerts import paused_alert
from services.http_gateway.webhooks.filters import filter_subjects
from services.http_gateway.webhooks.lifecycle import new_secret
from services.http_gateway.webhooks.policy import DeliveryPolicy
from services.http_gateway.webhooks.signing import Signer, envelope
from services.http_gateway.webhooks.targets import refusal

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def test_every_contract_error_code_has_its_http_status() -> None:
    assert {code: statuses.http_status(code) for code in get_args(ErrorCode)} == {
        "invalid_request": 422, "not_found": 404, "conflict": 409, "session_unavailable": 409,
        "rate_limited": 429, "unauthorized": 403, "temporarily_unavailable": 503, "internal": 500,
    }  # fmt: skip
    assert statuses.http_status("a_code_of_a_later_version") == 500


def test_a_filter_becomes_server_side_subject_filters_that_never_overlap() -> None:
    s = Subjects("wa")
    assert filter_subjects(s, [], []) == ["wa.evt.>"]
    assert filter_subjects(s, ["bob", "alice", "bob"], []) == ["wa.evt.alice.>", "wa.evt.bob.>"]
    assert filter_subjects(s, [], ["status", "message"]) == ["wa.evt.*.message", "wa.evt.*.status"]
    assert filter_subjects(s, ["alice"], ["outbound"]) == ["wa.evt.alice.outbound"]
    assert len(filter_subjects(s, ["a", "b", "c"], ["status", "alert"])) == 6


def test_retries_back_off_exponentially_with_jitter_up_to_the_cap() -> None:
    policy = DeliveryPolicy(retry_base=1.0, retry_cap=60.0)
    rng = random.Random(7)
    for deliveries, ceiling in ((1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (40, 60)):
        delays = [policy.retry_delay(deliveries, rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling, deliveries
        assert max(delays) - min(delays) > ceiling / 4  # jittered: retries do not line up
    assert equal_jitter(3, 0.5, 10, random.Random(1)) <= 2.0


def test_a_subscription_pauses_once_its_receiver_has_failed_for_pause_after() -> None:
    policy = DeliveryPolicy(pause_after=3600, timeout=10)
    assert not policy.should_pause(NOW, NOW + timedelta(seconds=3599))
    assert policy.should_pause(NOW, NOW + timedelta(seconds=3600))
    assert policy.ack_wait > policy.timeout  # an event is never handed on while its POST may answer
    assert [policy.delivered(code) for code in (200, 204, 299, 301, 404, 410, 500)] == [True] * 3 + [False] * 4


def test_a_webhook_is_the_event_byte_for_byte_signed_as_the_reference_library_verifies() -> None:
    event = StatusEvent(event_id="e-1", session_id="alice", at=NOW, state="connected", node="n1")
    raw = encode(event)
    event_id, body = envelope("status", raw)
    assert event_id == "e-1"
    assert body == b'{"type":"status","timestamp":"2026-12-06T12:00:00Z","data":' + raw + b"}"
    secret = new_secret()
    sent_at = datetime.now(UTC)
    headers = Signer(secret).headers(event_id, body, sent_at)
    assert headers["webhook-id"] == "e-1" and headers["webhook-timestamp"] == str(int(sent_at.timestamp()))
    assert Webhook(secret).verify(body, headers)["data"]["state"] == "connected"
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"connected", b"logged_out"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(msgspec.ValidationError):
        envelope("status", b'{"no": "event"}')


async def test_webhooks_go_to_public_addresses_unless_private_ones_are_allowed() -> None:
    for url in ("http://127.0.0.1:8080/hook", "https://10.0.0.5/x", "http://[::1]/", "http://169.254.169.254/latest"):
        why = await refusal(url, allow_private=False)
        assert why is not None and "non-public address" in why and "WA_WEBHOOK_PRIVATE_URLS" in why, url
        assert await refusal(url, allow_private=True) is None
    assert await refusal("https://8.8.8.8/hook", allow_private=False) is None
    assert [public_address(a) for a in ("8.8.8.8", "::ffff:10.0.0.1", "fe80::1", "100.64.0.1")] == [True] + [False] * 3
    assert shown("https://user:pw@hooks.example.com:8443/in?token=s3cret") == "https://hooks.example.com:8443/in?..."


def test_a_refused_parameter_reads_like_the_contracts_refusals() -> None:
    error = {"loc": ("path", "sid"), "msg": "String should match pattern", "input": "a.b", "ctx": {"pattern": r"^[A-Za-z0-9_-]{1,64}$"}}
    assert parameters.refusal([error]) == "sid: expected a session id of 1-64 characters A-Z a-z 0-9 _ -, got 'a.b'"
    limit = {"loc": ("query", "limit"), "msg": "Input should be a valid integer", "input": "ten"}
    assert parameters.refusal([limit]) == "limit: Input should be a valid integer"


def test_an_api_key_is_its_id_and_a_secret_of_which_only_a_hash_is_kept() -> None:
    key_id, token = tokens.new_token()
    parsed = tokens.parse(token)
    assert parsed is not None and parsed[0] == key_id
    stored = tokens.digest(parsed[1])
    assert parsed[1] not in stored and tokens.matches(parsed[1], stored)
    assert not tokens.matches(parsed[1][:-1] + ("A" if parsed[1][-1] != "A" else "B"), stored)
    for malformed in ("", "wak_", token + "x", token.replace("wak_", "wax_"), "Bearer " + token):
        assert tokens.parse(malformed) is None
    assert tokens.new_token()[1] != token


def test_a_pause_alert_names_the_moment_and_hides_the_urls_secrets() -> None:
    doc = {"_id": "wh_0123456789ab", "url": "https://h.example/in?key=s3cret", "failing_since": NOW, "last_error": "503"}
    alert = paused_alert(doc, NOW + timedelta(hours=1), "the receiver has failed for an hour")
    assert alert.event_id == "wh_0123456789ab:paused:2026-12-06T13:00:00+00:00"
    assert alert.url == "https://h.example/in?..." and alert.kind == "webhook_paused" and alert.failing_since == NOW
