"""The chaos scenario and its oracle: sends keep flowing while session-actor nodes are killed
with SIGKILL and restarted.

The oracle is outside the system under test: the simulated WhatsApp counts every message it
receives by the gateway's send id, and the public events say what the gateway claims.
Checked at the end:

- every accepted id reaches exactly one terminal state (`read`, `failed` or `expired`);
- no id reached WhatsApp twice (the simulator's duplicates stay 0);
- per session, messages reached WhatsApp in acceptance order;
- an id the gateway reports `sent` really reached WhatsApp, and one it reports failed as
  `ambiguous` is the only kind that may have reached it without a `sent` event.

`make chaos` (bench/chaos.py) runs the full size (3 nodes, 200 sessions, 10,000 sends, a
node killed every few seconds); tests/test_chaos.py runs a small one in `make test`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from services.common.bus import encode
from services.common.tasks import wait_event
from services.devstack.probes import call_ok, wait_until
from services.devstack.scenarios import RunningSystem, pair_many
from services.sending.journal import SendJournal

TERMINAL = ("read", "failed", "expired")


@dataclass
class ChaosResult:
    accepted: int = 0
    kills: int = 0
    terminal: Counter[str] = field(default_factory=Counter)
    failure_codes: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    overlaps: int = 0
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def row(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "kills": self.kills,
            **{f"terminal_{k}": v for k, v in sorted(self.terminal.items())},
            **{f"failed_{k}": v for k, v in sorted(self.failure_codes.items())},
            "duplicates_at_whatsapp": self.duplicates,
            "overlapping_connections": self.overlaps,
            "violations": len(self.violations),
            "seconds": round(self.seconds, 1),
        }


async def chaos(
    system: RunningSystem, sessions: int, sends: int, nodes: list[str], kill_every: float, settle: float = 120.0
) -> ChaosResult:
    """Pair `sessions`, send `sends` spread over them while killing nodes, then check."""
    result = ChaosResult()
    sids = [f"c{i:03d}" for i in range(sessions)]
    await pair_many(system, sids)
    per_session = {sid: [f"{sid}-{n}" for n in range(sends // sessions)] for sid in sids}
    started = time.monotonic()
    stop = asyncio.Event()
    killer = asyncio.create_task(_kill_loop(system, nodes, kill_every, stop, result))
    await asyncio.gather(*(_send_all(system, sid, ids, result) for sid, ids in per_session.items()))
    # Keep killing while the backlog drains (for a while), then let the cluster settle.
    await _all_terminal(system, per_session, settle / 2)
    stop.set()
    await killer
    for name in nodes:
        if not system.stack.procs[name].alive:
            system.stack.start("session-actor", name)
    await _all_terminal(system, per_session, settle)
    result.seconds = time.monotonic() - started
    await _check(system, per_session, result)
    return result


async def _send_all(system: RunningSystem, sid: str, ids: list[str], result: ChaosResult) -> None:
    """One session's sends, in order: each accepted before the next is offered."""
    subject = system.settings.subjects.send(sid)
    for send_id in ids:
        body = encode({"id": send_id, "to": "15550001111", "text": f"chaos {send_id}"})
        while True:
            try:
                reply = await system.nc.request(subject, body, timeout=10)
            except Exception:
                continue  # intake busy or restarting: same id again, de-duplicated if it landed
            if b'"ok":true' in reply.data:
                result.accepted += 1
                break
            await asyncio.sleep(0.2)


async def _kill_loop(
    system: RunningSystem, nodes: list[str], every: float, stop: asyncio.Event, result: ChaosResult
) -> None:
    rng = random.Random()
    while not stop.is_set():
        if await wait_event(stop, every * rng.uniform(0.7, 1.3)):
            return
        victim = rng.choice(nodes)
        system.stack.kill(victim)
        result.kills += 1
        await asyncio.sleep(rng.uniform(0.2, 1.5))
        system.stack.start("session-actor", victim)


def _terminal_of(system: RunningSystem, per_session: dict[str, list[str]]) -> dict[str, list[str]]:
    """Terminal states reported so far, per id."""
    found: dict[str, list[str]] = defaultdict(list)
    for sid in per_session:
        for event in system.tap.of(sid, "outbound"):
            if event["state"] in TERMINAL:
                found[event["id"]].append(event["state"])
    return found


async def _all_terminal(system: RunningSystem, per_session: dict[str, list[str]], timeout: float) -> bool:
    """Wait until every send reported a terminal state; False when `timeout` ran out first."""
    total = sum(len(ids) for ids in per_session.values())
    try:
        await wait_until(lambda: len(_terminal_of(system, per_session)) >= total, timeout, 0.5)
    except AssertionError:
        return False
    return True


async def _check(system: RunningSystem, per_session: dict[str, list[str]], result: ChaosResult) -> None:
    stats = await call_ok(system.nc, system.settings.subjects.sim_stats, {}, timeout=30)
    result.duplicates = stats["totals"]["duplicates"]
    result.overlaps = stats["totals"]["overlaps"]
    terminal = _terminal_of(system, per_session)
    journal = SendJournal(await system.nc.jetstream().key_value(system.settings.subjects.sends_bucket))
    for sid, ids in per_session.items():
        received = stats["sessions"].get(sid, {}).get("received", {})
        events = system.tap.of(sid, "outbound")
        sent = {e["id"] for e in events if e["state"] == "sent"}
        ambiguous = {e["id"] for e in events if e["state"] == "failed" and e["error"]["code"] == "ambiguous"}
        for e in events:
            if e["state"] == "failed":
                result.failure_codes[e["error"]["code"]] += 1
        for send_id in ids:
            states = terminal.get(send_id, [])
            if len(states) != 1:
                # What the journal and the events say, to tell a stuck send from a lost one.
                record = await journal.get(sid, send_id)
                seen = [e["state"] for e in events if e["id"] == send_id]
                result.violations.append(
                    f"{send_id}: terminal states {states}; events {seen}; journal {record[0] if record else None}"
                )
            else:
                result.terminal[states[0]] += 1
            if send_id in sent and send_id not in received:
                result.violations.append(f"{send_id}: reported sent, never reached WhatsApp")
            if send_id in received and send_id not in sent and send_id not in ambiguous:
                result.violations.append(f"{send_id}: reached WhatsApp, reported neither sent nor ambiguous")
        order = [int(ref.rsplit("-", 1)[1]) for ref in received if ref.startswith(f"{sid}-")]
        if order != sorted(order):
            result.violations.append(f"{sid}: reached WhatsApp out of order: {order}")
    if result.duplicates:
        result.violations.append(f"{result.duplicates} duplicate deliveries at WhatsApp")
    if result.overlaps:
        result.violations.append(f"{result.overlaps} overlapping connections at WhatsApp")
