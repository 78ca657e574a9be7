"""Send throughput and latency (`wa.send` request -> `sent` event) next to raw JetStream.

Both are measured in the same run on the same nats-server, with the same message size and
the same number of messages in flight:

- gateway: request on `<prefix>.send.<sid>` (intake, dedupe record, durable queue), the
  owning actor consumes, records its intent, sends to the simulator, publishes `sent`;
  latency is from the request to the `sent` event arriving at the benchmark (and, as one
  stage, to the intake's answer).
- raw: JetStream publish (awaiting the ack) to a stream, a pull consumer fetching and
  acking; latency is from the publish to the consumer receiving it.

Run: `python -m bench send [--sessions 20] [--messages 3000] [--in-flight 64]`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import msgspec
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from bench.results import SERVICE_LOGS, Report, host_speed_ms, percentiles
from services.common.bus import encode
from services.devstack.scenarios import RunningSystem, fresh_system, pair_many

TEXT = "x" * 120  # with the envelope, about the size of a real QueuedSend


async def gateway_run(bench: RunningSystem, sids: list[str], messages: int, in_flight: int) -> dict[str, Any]:
    s = bench.settings.subjects
    sent_at: dict[str, float] = {}
    waiting: dict[str, asyncio.Future[None]] = {}

    async def on_outbound(msg: Any) -> None:
        body = msgspec.json.decode(msg.data)
        if body.get("state") == "sent" and body["id"] not in sent_at:
            sent_at[body["id"]] = time.perf_counter()
            if body["id"] in waiting and not waiting[body["id"]].done():
                waiting[body["id"]].set_result(None)

    sub = await bench.nc.subscribe(s.event("*", "outbound"), cb=on_outbound)
    started: dict[str, float] = {}
    answered: dict[str, float] = {}
    limit = asyncio.Semaphore(in_flight)
    tag = uuid.uuid4().hex[:6]

    async def one(i: int) -> None:
        async with limit:
            send_id = f"{tag}-{i}"
            waiting[send_id] = asyncio.get_running_loop().create_future()
            started[send_id] = time.perf_counter()
            reply = await bench.nc.request(
                s.send(sids[i % len(sids)]), encode({"id": send_id, "to": "15550001111", "text": TEXT}), timeout=30
            )
            answered[send_id] = time.perf_counter()
            assert b'"ok":true' in reply.data, reply.data
            await asyncio.wait_for(waiting[send_id], 120)  # `in_flight` sends in the pipeline, end to end

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(messages)))
    elapsed = time.perf_counter() - t0
    await sub.unsubscribe()
    latencies = [(sent_at[k] - started[k]) * 1000 for k in started]
    intake = [(answered[k] - started[k]) * 1000 for k in started]
    return {
        "rate": messages / elapsed,
        **{f"{k}_ms": v for k, v in percentiles(latencies).items()},
        "intake_p50_ms": percentiles(intake)["p50"],
    }


async def raw_run(bench: RunningSystem, messages: int, in_flight: int) -> dict[str, Any]:
    js = bench.nc.jetstream()
    stream = f"RAW_{uuid.uuid4().hex[:6].upper()}"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"raw.{stream}.>"]))
    psub = await js.pull_subscribe(
        f"raw.{stream}.>", durable="raw", config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT)
    )
    published: dict[str, float] = {}
    received: dict[str, float] = {}
    waiting: dict[str, asyncio.Future[None]] = {}

    async def consume() -> None:
        while len(received) < messages:
            try:
                batch = await psub.fetch(100, timeout=1)
            except TimeoutError:
                continue
            now = time.perf_counter()
            for msg in batch:
                key = msg.headers["id"]
                received.setdefault(key, now)
                await msg.ack()
                if not waiting[key].done():
                    waiting[key].set_result(None)

    limit = asyncio.Semaphore(in_flight)
    payload = encode({"id": "x" * 20, "session_id": "s001", "to": "15550001111", "text": TEXT})

    async def one(i: int) -> None:
        async with limit:
            key = str(i)
            waiting[key] = asyncio.get_running_loop().create_future()
            published[key] = time.perf_counter()
            await js.publish(f"raw.{stream}.{i % 20}", payload, headers={"id": key})
            await waiting[key]

    t0 = time.perf_counter()
    consumer = asyncio.create_task(consume())
    await asyncio.gather(*(one(i) for i in range(messages)))
    await consumer
    elapsed = time.perf_counter() - t0
    await js.delete_stream(stream)
    latencies = [(received[k] - published[k]) * 1000 for k in published]
    return {"rate": messages / elapsed, **{f"{k}_ms": v for k, v in percentiles(latencies).items()}}


async def run(sessions: int = 20, messages: int = 3000, in_flight: int = 64) -> Report:
    report = Report("send")
    async with fresh_system("send", SERVICE_LOGS, nodes=1, pacing_enabled=False) as bench:
        sids = [f"b{i:03d}" for i in range(sessions)]
        await pair_many(bench, sids)
        await gateway_run(bench, sids, 200, 8)  # warm up connections and consumers
        for label, depth in (("latency", 1), ("throughput", in_flight)):
            count = messages if depth > 1 else min(messages, 500)
            raw = await raw_run(bench, count, depth)
            ours = await gateway_run(bench, sids, count, depth)
            report.add(
                run=label,
                in_flight=depth,
                messages=count,
                gateway_per_s=ours["rate"],
                raw_per_s=raw["rate"],
                ratio=ours["rate"] / raw["rate"],
                gateway_p50_ms=ours["p50_ms"],
                gateway_p99_ms=ours["p99_ms"],
                intake_answer_p50_ms=ours["intake_p50_ms"],
                raw_p50_ms=raw["p50_ms"],
                raw_p99_ms=raw["p99_ms"],
                host_speed_ms=host_speed_ms(),
            )
    report.save()
    return report
