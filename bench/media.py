"""Inbound media throughput: images from the simulated WhatsApp into the media bucket, next to
raw object-store transfers of the same bytes, in the same run, on the same nats-server.

- gateway: `wasim.<sid>.inbound` of an image (the file was put on the simulated media
  servers once, and every message names it, as forwarded media do); the owning actor asks
  the simulator, downloads the file from its bucket, writes it to `WA_MEDIA`, publishes the
  `message` event (persistence stores it meanwhile). Timed from the first request to the
  last event with a `media_id`.
- raw put: the benchmark puts the same bytes into a scratch object store as many times,
  `concurrency` at once (the actor's download slots, WA_INBOUND_MEDIA_CONCURRENCY).
- raw copy: get from the simulator's bucket and put, as many times, as many at once: the
  two transfers the gateway cannot avoid, without anything else.

CPU per message is the session-actor process's (user + system, from /proc) over the run;
the raw runs' is the benchmark process's own. `busy_cores` is how many of the host's cores
were busy (everything: NATS, the database, every service) while the gateway ran.

Run: `python -m bench media [--sessions 2] [--small 200] [--large 20]`.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import msgspec
from nats.js.object_store import ObjectStore

from bench.proc_cpu import busy_seconds, cpu_seconds
from bench.results import SERVICE_LOGS, Report, host_speed_ms
from services.common.bus import encode
from services.devstack.scenarios import RunningSystem, fresh_system, pair_many

SIZES = {"100 KB": 100 * 1000, "5 MB": 5 * 1000 * 1000}
CONCURRENCY = 4


def image(size: int) -> bytes:
    """A PNG-looking file of `size` bytes that compresses like a photo (not at all)."""
    return (b"\x89PNG\r\n\x1a\n" + os.urandom(size))[:size]


async def gateway_run(bench: RunningSystem, sids: list[str], name: str, count: int) -> dict[str, Any]:
    s = bench.settings.subjects
    stored: dict[str, float] = {}
    failed: list[dict[str, Any]] = []
    done = asyncio.Event()
    wanted: set[str] = set()

    async def on_message(msg: Any) -> None:
        event = msgspec.json.decode(msg.data)
        if event["message_id"] not in wanted:
            return
        media = event.get("media") or {}
        if media.get("media_id"):
            stored.setdefault(event["message_id"], time.perf_counter())
        else:
            failed.append(event)
        if len(stored) + len(failed) >= count:
            done.set()

    sub = await bench.nc.subscribe(s.event("*", "message"), cb=on_message)
    node = bench.stack.procs["node1"].popen.pid
    limit = asyncio.Semaphore(16)
    body = {"from": "15550002222", "type": "image", "media": {"object": name, "mime": "image/png"}}

    async def one(i: int) -> None:
        async with limit:
            reply = await bench.nc.request(s.sim(sids[i % len(sids)], "inbound"), encode(body), timeout=30)
            answer = msgspec.json.decode(reply.data)
            assert answer["ok"], answer
            wanted.add(answer["data"]["message_id"])

    cpu0, busy0, t0 = cpu_seconds(node), busy_seconds(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    async with asyncio.timeout(600):
        await done.wait()
    elapsed = max(stored.values(), default=time.perf_counter()) - t0
    cpu, busy = cpu_seconds(node) - cpu0, busy_seconds() - busy0
    await sub.unsubscribe()
    assert not failed, f"{len(failed)} files not stored, e.g. {failed[0].get('media')}"
    return {"elapsed": elapsed, "cpu_ms": cpu * 1000 / count, "busy_cores": busy / (time.perf_counter() - t0)}


async def raw_run(source: ObjectStore, target: ObjectStore, name: str, data: bytes, count: int, copy: bool) -> dict[str, Any]:
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with limit:
            payload = (await source.get(name)).data if copy else data
            await target.put(f"{name}-{i}", payload)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return {"elapsed": time.perf_counter() - t0, "cpu_ms": (time.process_time() - cpu0) * 1000 / count}


def rates(result: dict[str, Any], size: int, count: int) -> tuple[float, float]:
    """(MB/s, messages/s)."""
    return size * count / result["elapsed"] / 1e6, count / result["elapsed"]


async def run(sessions: int = 2, small: int = 200, large: int = 20) -> Report:
    report = Report("media")
    async with fresh_system("media", SERVICE_LOGS, nodes=1, inbound_media_concurrency=CONCURRENCY) as bench:
        sids = [f"m{i:02d}" for i in range(sessions)]
        await pair_many(bench, sids)
        js = bench.nc.jetstream()
        servers = await js.object_store(bench.settings.subjects.sim_media_bucket)
        scratch_name = f"RAW_{uuid.uuid4().hex[:6].upper()}"
        scratch = await js.create_object_store(scratch_name)
        for label, size in SIZES.items():
            count = small if size < 1_000_000 else large
            name = f"photo-{size}"
            data = image(size)
            await servers.put(name, data)
            await gateway_run(bench, sids, name, max(2, count // 10))  # warm up
            raw_put = await raw_run(servers, scratch, name, data, count, copy=False)
            raw_copy = await raw_run(servers, scratch, name, data, count, copy=True)
            ours = await gateway_run(bench, sids, name, count)
            ours_mb, ours_msgs = rates(ours, size, count)
            put_mb, put_msgs = rates(raw_put, size, count)
            copy_mb, _ = rates(raw_copy, size, count)
            report.add(
                image=label,
                messages=count,
                gateway_mb_s=ours_mb,
                gateway_msgs_s=ours_msgs,
                raw_put_mb_s=put_mb,
                raw_put_msgs_s=put_msgs,
                raw_copy_mb_s=copy_mb,
                ratio_to_put=ours_mb / put_mb,
                ratio_to_copy=ours_mb / copy_mb,
                actor_cpu_ms_per_msg=ours["cpu_ms"],
                busy_cores=ours["busy_cores"],
                raw_put_cpu_ms=raw_put["cpu_ms"],
                raw_copy_cpu_ms=raw_copy["cpu_ms"],
                host_speed_ms=host_speed_ms(),
            )
        await js.delete_object_store(scratch_name)
    report.save()
    return report
