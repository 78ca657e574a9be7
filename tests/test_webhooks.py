"""Webhooks end to end: the http-gateway processes deliver real events of the events stream
to a real HTTP receiver on loopback (services/devstack/receiver.py), signed, in order,
through a receiver outage, beside a slow receiver, paused and resumed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from standardwebhooks import Webhook

from contracts.events import MessageEvent
from contracts.types import utcnow
from contracts.webhooks import WebhookAlert
from services.api_keys.store import ApiKeyStore
from services.common.bus import EventPublisher, new_id
from services.devstack.probes import wait_until
from services.devstack.processes import GATEWAY_SERVICE, Stack
from services.devstack.receiver import Delivery, Receiver

pytestmark = pytest.mark.slow

CONTACT = "15550001111@s.whatsapp.net"
# Quick retries and subscription pick-up keep these tests short.
FAST_WEBHOOKS = {
    "webhook_private_urls": True,
    "webhook_retry_base": 0.2,
    "webhook_retry_cap": 2.0,
    "webhook_sync_interval": 0.3,
    "webhook_timeout": 5.0,
}


async def start_gateway(stack: Stack, name: str = GATEWAY_SERVICE, **overrides: Any) -> httpx.AsyncClient:
    proc = stack.start(GATEWAY_SERVICE, name, **{**FAST_WEBHOOKS, **overrides})
    client = httpx.AsyncClient(base_url=proc.http_url, timeout=30)
    await wait_until(lambda: _healthy(client), timeout=60, what=f"{name} serving")
    return client


async def _healthy(client: httpx.AsyncClient) -> bool:
    return (await client.get("/healthz")).status_code == 200


@pytest.fixture
async def key(settings, db) -> str:
    _, token = await ApiKeyStore(db).create(settings.tenant, "tests", utcnow())
    return token


@pytest.fixture
async def api(stack, key) -> AsyncIterator[httpx.AsyncClient]:
    client = await start_gateway(stack)
    client.headers["x-api-key"] = key
    yield client
    await client.aclose()


@pytest.fixture
async def events(nc, settings) -> EventPublisher:
    return EventPublisher(nc.jetstream(), settings.subjects)


async def publish_messages(events: EventPublisher, sids: list[str], count: int) -> list[str]:
    """`count` inbound-message events, round robin over `sids`; their event ids in order."""
    ids = []
    for i in range(count):
        sid = sids[i % len(sids)]
        event = MessageEvent(
            event_id=new_id(), session_id=sid, at=utcnow(), message_id=f"m{i}", chat=CONTACT, sender=CONTACT,
            from_me=False, type="text", timestamp=utcnow(), text=f"#{i}",
        )  # fmt: skip
        await events.publish(event)
        ids.append(event.event_id)
    return ids


async def subscribe(api: httpx.AsyncClient, receiver: Receiver, **filters: Any) -> dict[str, Any]:
    reply = await api.post("/v1/webhooks", json={"url": receiver.url, **filters})
    assert reply.status_code == 201, reply.text
    return reply.json()


def first_arrivals(deliveries: list[Delivery]) -> list[str]:
    seen: list[str] = []
    for delivery in deliveries:
        if delivery.webhook_id not in seen:
            seen.append(delivery.webhook_id)
    return seen


def check_signed(deliveries: list[Delivery], secret: str) -> None:
    verifier = Webhook(secret)
    for delivery in deliveries:
        payload = verifier.verify(delivery.body, delivery.headers)  # the reference library
        assert payload["data"]["event_id"] == delivery.webhook_id
        assert payload["type"] == "message" and payload["timestamp"] == payload["data"]["at"]


async def test_nothing_is_lost_or_reordered_while_the_receiver_is_down_for_30_seconds(api, events) -> None:
    receiver = await Receiver().start()
    hook = await subscribe(api, receiver, sessions=["alice", "bob"], kinds=["message"])
    published = await publish_messages(events, ["alice", "bob"], 10)
    await wait_until(lambda: len(receiver.answered) >= 10, timeout=30, what="the first 10 events")

    receiver.status = 500  # the receiver is broken for 15 s ...
    failing_from = time.perf_counter()
    during = await publish_messages(events, ["alice", "bob", "carol"], 9)
    published += [event_id for i, event_id in enumerate(during) if i % 3 != 2]  # carol's are not for it
    await asyncio.sleep(15)  # the outage itself, not a wait for a condition
    await receiver.stop()  # ... then not listening at all for 15 s
    failing_requests = len(receiver.deliveries) - 10
    published += await publish_messages(events, ["alice", "bob"], 10)
    await asyncio.sleep(15)
    receiver.status = 200
    back = time.perf_counter()
    await receiver.start()

    await wait_until(lambda: len({d.webhook_id for d in receiver.answered}) >= len(published), timeout=30, what="the backlog")
    took = time.perf_counter() - back
    await receiver.stop()

    answered = receiver.answered
    assert first_arrivals(answered) == published  # every event, in the stream's order
    check_signed(receiver.deliveries, hook["secret"])
    # At least once: an event answered twice is the same event (same id, same data).
    for event_id in {d.webhook_id for d in answered}:
        copies = {msgspec.json.encode(d.payload["data"]) for d in answered if d.webhook_id == event_id}
        assert len(copies) == 1
    # No storm: one request at a time, retries spaced by the capped backoff (cap 2 s).
    assert receiver.most_in_flight == 1
    assert failing_requests <= 15 / 1.0 + 5, failing_requests
    assert took < 10, f"the backlog took {took:.1f} s after the receiver came back"
    assert time.perf_counter() - failing_from > 30


async def test_a_slow_receiver_does_not_delay_another_subscription(api, events) -> None:
    slow = await Receiver(delay=3.0).start()
    fast = await Receiver().start()
    await subscribe(api, slow)
    await subscribe(api, fast)
    started = time.perf_counter()
    published = await publish_messages(events, ["alice"], 10)
    await wait_until(lambda: len(fast.answered) >= 10, timeout=20, what="the fast receiver's events")
    took = time.perf_counter() - started
    slow_so_far = len(slow.deliveries)
    await slow.stop()
    await fast.stop()
    assert first_arrivals(fast.answered) == published
    assert took < 3.0, f"{took:.1f} s: the slow receiver held the fast one up"
    assert slow_so_far <= 2


async def test_two_replicas_share_a_subscription_without_doubling_or_reordering(stack, api, key, events) -> None:
    second = await start_gateway(stack, "http-gateway-2")
    await second.aclose()
    receiver = await Receiver().start()
    await subscribe(api, receiver)
    published = await publish_messages(events, ["alice", "bob"], 40)
    await wait_until(lambda: len(receiver.answered) >= 40, timeout=30, what="every event")
    await receiver.stop()
    assert [d.webhook_id for d in receiver.answered] == published
    assert receiver.most_in_flight == 1


async def test_a_failing_subscription_pauses_with_an_alert_and_resumes_with_its_backlog(
    stack, key, events, nc, settings
) -> None:
    api = await start_gateway(stack, webhook_pause_after=2.0)
    api.headers["x-api-key"] = key
    receiver = await Receiver(status=503).start()
    hook = await subscribe(api, receiver)
    wid = hook["webhook_id"]
    published = await publish_messages(events, ["alice"], 5)

    async def state() -> dict[str, Any]:
        return (await api.get(f"/v1/webhooks/{wid}")).json()

    paused = await wait_until(lambda: _when(state(), lambda s: s["state"] == "paused"), timeout=30, what="paused")
    assert paused["backlog"] == 5 and "503" in paused["last_error"] and paused["failing_since"]
    alert = await nc.jetstream().get_last_msg(settings.subjects.events_stream, settings.subjects.webhook_alert(wid))
    raised = msgspec.json.decode(alert.data, type=WebhookAlert)
    assert raised.kind == "webhook_paused" and raised.severity == "warning" and "503" in (raised.last_error or "")

    receiver.status = 200
    resumed = await api.post(f"/v1/webhooks/{wid}/resume")
    assert resumed.status_code == 200 and resumed.json()["state"] == "active"
    await wait_until(lambda: len(receiver.answered) >= 5, timeout=30, what="the backlog after resuming")
    await receiver.stop()
    assert first_arrivals(receiver.answered) == published
    after = await wait_until(lambda: _when(state(), lambda s: s["backlog"] == 0), timeout=10, what="no backlog")
    assert "failing_since" not in after and "paused_reason" not in after
    alert = await nc.jetstream().get_last_msg(settings.subjects.events_stream, settings.subjects.webhook_alert(wid))
    assert msgspec.json.decode(alert.data, type=WebhookAlert).kind == "webhook_resumed"
    await api.aclose()


async def _when(value: Any, accept: Any) -> Any:
    found = await value
    return found if accept(found) else None
