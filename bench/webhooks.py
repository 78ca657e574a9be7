"""Webhook delivery (events stream -> http-gateway -> a local receiver) next to raw JetStream
consumption of the same events, in the same run on the same servers.

- throughput: N events wait in the stream (the subscriptions paused); then the raw consumers
  read them (a pull consumer fetching 100 at a time, and one holding one event at a time
  like a subscription does), then the subscriptions are resumed and drain the same events:
  events/s from the first POST at the receiver to the last (1 subscription, then several,
  each its own receiver);
- latency: events published at a steady rate, each timed from its publish to its arrival at
  the receiver (and, for raw, at a pull consumer).

The receiver (services/devstack/receiver.py) runs in this process and answers 200 at once.

Run: `python -m bench webhooks [--events 2000] [--subscriptions 4] [--rate 100]`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import msgspec
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bench.results import SERVICE_LOGS, Report, host_speed_ms, percentiles
from contracts.events import MessageEvent
from contracts.types import utcnow
from services.common.bus import encode, new_id
from services.devstack.probes import call, call_ok, wait_until
from services.devstack.receiver import Receiver
from services.devstack.scenarios import RunningSystem, fresh_system
from services.persistence.writer import DURABLE as PERSISTENCE

SESSIONS = ["w1", "w2", "w3", "w4"]
CONTACT = "15550001111@s.whatsapp.net"


def event(sid: str, i: int) -> MessageEvent:
    return MessageEvent(
        event_id=new_id(), session_id=sid, at=utcnow(), message_id=f"M{i}", chat=CONTACT, sender=CONTACT,
        from_me=False, type="text", timestamp=utcnow(), text="x" * 120,
    )  # fmt: skip


async def publish(bench: RunningSystem, sid: str, count: int, in_flight: int = 64) -> dict[str, float]:
    """`count` events of session `sid`; each event id with the time its publish started."""
    js = bench.nc.jetstream()
    started: dict[str, float] = {}
    limit = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with limit:
            item = event(sid, i)
            started[item.event_id] = time.perf_counter()
            subject = bench.settings.subjects.event(sid, "message")
            await js.publish(subject, encode(item), headers={"Nats-Msg-Id": item.event_id})

    await asyncio.gather(*(one(i) for i in range(count)))
    return started


async def raw_consume(bench: RunningSystem, sid: str, count: int, one_at_a_time: bool) -> float:
    """Events/s of a pull consumer reading the last `count` events of `sid` (acking each)."""
    js = bench.nc.jetstream()
    s = bench.settings.subjects
    name = f"raw-{uuid.uuid4().hex[:6]}"
    info = await js.stream_info(s.events_stream)
    await js.add_consumer(
        s.events_stream,
        ConsumerConfig(
            durable_name=name, filter_subject=s.event(sid, "message"), deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1 if one_at_a_time else 1000,
        ),
    )  # fmt: skip
    pull = await js.pull_subscribe_bind(durable=name, stream=s.events_stream)
    assert info.state.messages >= count
    got = 0
    started = time.perf_counter()
    while got < count:
        for msg in await pull.fetch(1 if one_at_a_time else 100, timeout=5):
            await (msg.ack_sync() if one_at_a_time else msg.ack())
            got += 1
    took = time.perf_counter() - started
    await js.delete_consumer(s.events_stream, name)
    return count / took


async def subscribe(bench: RunningSystem, receiver: Receiver, sid: str) -> str:
    hook = await call_ok(
        bench.nc, bench.settings.subjects.webhook_create, {"url": receiver.url, "sessions": [sid], "kinds": ["message"]}
    )
    return hook["webhook_id"]


async def throughput(bench: RunningSystem, events: int, subscriptions: int) -> dict[str, float]:
    """Drain `events` waiting events per subscription; events/s over all of them."""
    s = bench.settings.subjects
    receivers = [await Receiver().start() for _ in range(subscriptions)]
    hooks = [await subscribe(bench, receiver, SESSIONS[i]) for i, receiver in enumerate(receivers)]
    for wid in hooks:
        await call_ok(bench.nc, s.webhook(wid, "pause"), {})
    for i in range(subscriptions):
        await publish(bench, SESSIONS[i], events)
    raw = await raw_consume(bench, SESSIONS[0], events, one_at_a_time=False)
    raw_one = await raw_consume(bench, SESSIONS[0], events, one_at_a_time=True)
    for wid in hooks:
        await call_ok(bench.nc, s.webhook(wid, "resume"), {})
    await wait_until(
        lambda: all(len(r.answered) >= events for r in receivers), timeout=600, interval=0.01, what="every delivery"
    )
    # From the first POST to the last: a resumed subscription is picked up by the next pull
    # of a replica (within the deliverer's FETCH_WAIT), which is not delivery speed.
    arrivals = [d.received for r in receivers for d in r.answered]
    took = max(arrivals) - min(arrivals)
    doubled = sum(len(r.answered) - len({d.webhook_id for d in r.answered}) for r in receivers)
    for receiver in receivers:
        await receiver.stop()
    for wid in hooks:
        await call_ok(bench.nc, s.webhook(wid, "delete"), {})
    return {"rate": (events * subscriptions - 1) / took, "raw": raw, "raw_one": raw_one, "doubled": doubled}


async def latency(bench: RunningSystem, count: int, rate: float) -> dict[str, Any]:
    """Publish → receiver, and publish → raw pull consumer, at `rate` events/s."""
    js = bench.nc.jetstream()
    s = bench.settings.subjects
    receiver = await Receiver().start()
    wid = await subscribe(bench, receiver, "lat")
    name = f"rawlat-{uuid.uuid4().hex[:6]}"
    await js.add_consumer(
        s.events_stream,
        ConsumerConfig(durable_name=name, filter_subject=s.event("lat", "message"), deliver_policy=DeliverPolicy.NEW,
                       ack_policy=AckPolicy.EXPLICIT),
    )  # fmt: skip
    pull = await js.pull_subscribe_bind(durable=name, stream=s.events_stream)
    raw_seen: dict[str, float] = {}

    async def raw_reader() -> None:
        while len(raw_seen) < count:
            try:
                msgs = await pull.fetch(100, timeout=1)
            except TimeoutError:
                continue
            now = time.perf_counter()
            for msg in msgs:
                raw_seen[msgspec.json.decode(msg.data)["event_id"]] = now
                await msg.ack()

    await asyncio.sleep(1.0)  # the replica picks the new subscription up (sync interval)
    reader = asyncio.create_task(raw_reader())
    published: dict[str, float] = {}
    for i in range(count):
        item = event("lat", i)
        published[item.event_id] = time.perf_counter()
        await js.publish(s.event("lat", "message"), encode(item), headers={"Nats-Msg-Id": item.event_id})
        await asyncio.sleep(max(0.0, published[item.event_id] + 1 / rate - time.perf_counter()))
    await wait_until(lambda: len(receiver.answered) >= count, timeout=120, interval=0.01, what="every delivery")
    await reader
    arrived = {d.webhook_id: d.received for d in receiver.answered}
    await receiver.stop()
    await call_ok(bench.nc, s.webhook(wid, "delete"), {})
    await js.delete_consumer(s.events_stream, name)
    ours = percentiles([(arrived[k] - t) * 1000 for k, t in published.items()])
    raw = percentiles([(raw_seen[k] - t) * 1000 for k, t in published.items()])
    return {"p50": ours["p50"], "p99": ours["p99"], "raw_p50": raw["p50"], "raw_p99": raw["p99"]}


async def persisted(bench: RunningSystem) -> bool:
    info = await bench.nc.jetstream().consumer_info(bench.settings.subjects.events_stream, PERSISTENCE)
    return (info.num_pending or 0) + (info.num_ack_pending or 0) == 0


async def run(events: int = 2000, subscriptions: int = 4, rate: float = 100.0) -> Report:
    report = Report("webhooks")
    async with fresh_system(
        "webhooks", SERVICE_LOGS, nodes=1, webhook_private_urls=True, webhook_sync_interval=0.5
    ) as bench:
        subjects = bench.settings.subjects
        await wait_until(lambda: call(bench.nc, subjects.webhook_list, {}, timeout=2), 60, what="the http-gateway")
        await throughput(bench, 100, 1)  # warm up connections and consumers
        for count in sorted({1, subscriptions}):
            found = await throughput(bench, events, count)
            report.add(
                run="throughput", subscriptions=count, events=events * count,
                webhook_per_s=found["rate"], raw_per_s=found["raw"], raw_one_at_a_time_per_s=found["raw_one"],
                ratio=found["rate"] / found["raw"], ratio_one_at_a_time=found["rate"] / found["raw_one"],
                delivered_twice=found["doubled"], host_speed_ms=host_speed_ms(),
            )  # fmt: skip
        # Persistence stores every event of the runs above; on 2 cores its catching up would
        # be measured as latency of whatever runs meanwhile.
        await wait_until(lambda: persisted(bench), timeout=600, interval=0.5, what="persistence caught up")
        found = await latency(bench, int(rate * 5), rate)
        report.add(
            run="latency", rate_per_s=rate, events=int(rate * 5),
            webhook_p50_ms=found["p50"], webhook_p99_ms=found["p99"], raw_p50_ms=found["raw_p50"],
            raw_p99_ms=found["raw_p99"], host_speed_ms=host_speed_ms(),
        )  # fmt: skip
    report.save()
    return report
