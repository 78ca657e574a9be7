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

The faults are pluggable: `NodeKills` (session-actor nodes killed with SIGKILL and started
again) and `NatsMemberKills` (members of a NATS cluster killed, their disk wiped, started
again). Besides the oracle, each run measures what clients and sessions went through: the
longest a client waited for a send to be accepted (retries included) and how long sessions
were not `connected`.

`make chaos` (bench/chaos.py) runs the full size (3 nodes, 200 sessions, 10,000 sends, a
node killed every few seconds), `python -m bench cluster` the NATS faults;
tests/test_chaos.py and tests/test_cluster.py run small ones in `make test`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from nats.aio.client import Client as NatsClient

from contracts.types import utcnow
from services.common.bus import encode
from services.common.tasks import wait_event
from services.devstack.probes import call_ok, wait_until
from services.devstack.processes import Stack
from services.devstack.scenarios import RunningSystem, pair_many
from services.devstack.servers import NatsCluster
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
    # The longest a client waited from offering a send to its acceptance, retries included.
    longest_accept_wait: float = 0.0
    # Sessions that left `connected` during the run, and their longest time away from it.
    sessions_offline: int = 0
    longest_offline: float = 0.0

    def row(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "kills": self.kills,
            **{f"terminal_{k}": v for k, v in sorted(self.terminal.items())},
            **{f"failed_{k}": v for k, v in sorted(self.failure_codes.items())},
            "duplicates_at_whatsapp": self.duplicates,
            "overlapping_connections": self.overlaps,
            "violations": len(self.violations),
            "longest_accept_wait_s": round(self.longest_accept_wait, 2),
            "sessions_offline": self.sessions_offline,
            "longest_offline_s": round(self.longest_offline, 2),
            "seconds": round(self.seconds, 1),
        }


class Fault(Protocol):
    """One kind of disruption: `strike` does one (and undoes it), `heal` leaves all running."""

    async def strike(self, rng: random.Random) -> None: ...

    async def heal(self) -> None: ...


@dataclass
class NodeKills:
    """A random session-actor node killed with SIGKILL, started again a moment later."""

    stack: Stack
    nodes: list[str]

    async def strike(self, rng: random.Random) -> None:
        victim = rng.choice(self.nodes)
        self.stack.kill(victim)
        await asyncio.sleep(rng.uniform(0.2, 1.5))
        self.stack.start("session-actor", victim)

    async def heal(self) -> None:
        for name in self.nodes:
            if not self.stack.procs[name].alive:
                self.stack.start("session-actor", name)


@dataclass
class NatsMemberKills:
    """Each strike kills the next member of the NATS cluster with SIGKILL (the first strike
    the leader of `leader_of`, a stream), wipes its disk if `wipe`, and starts it again once
    `down_for` has passed."""

    cluster: NatsCluster
    nc: NatsClient
    leader_of: str
    wipe: bool = True
    down_for: float = 3.0
    struck: list[str] = field(default_factory=list)

    async def strike(self, rng: random.Random) -> None:
        names = [member.name for member in self.cluster.members]
        if self.struck:
            victim = names[(names.index(self.struck[-1]) + 1) % len(names)]
        else:
            victim = (await self.nc.jetstream().stream_info(self.leader_of)).cluster.leader  # type: ignore[union-attr]
        self.struck.append(victim)
        index = names.index(victim)
        self.cluster.kill(index, wipe=self.wipe)
        await asyncio.sleep(self.down_for)
        self.cluster.restart(index)
        await asyncio.to_thread(self.cluster.wait_jetstream)

    async def heal(self) -> None:
        for index, member in enumerate(self.cluster.members):
            if member.process.poll() is not None:
                self.cluster.restart(index)
        await asyncio.to_thread(self.cluster.wait_jetstream)


async def chaos(
    system: RunningSystem, sessions: int, sends: int, fault: Fault, every: float, settle: float = 120.0
) -> ChaosResult:
    """Pair `sessions`, send `sends` spread over them while `fault` strikes, then check."""
    result = ChaosResult()
    sids = [f"c{i:03d}" for i in range(sessions)]
    await pair_many(system, sids)
    per_session = {sid: [f"{sid}-{n}" for n in range(sends // sessions)] for sid in sids}
    started, since = time.monotonic(), utcnow()
    stop = asyncio.Event()
    striker = asyncio.create_task(_strike_loop(fault, every, stop, result))
    await asyncio.gather(*(_send_all(system, sid, ids, result) for sid, ids in per_session.items()))
    # Keep striking while the backlog drains (for a while), then let the cluster settle.
    await _all_terminal(system, per_session, settle / 2)
    stop.set()
    await striker
    await fault.heal()
    await _all_terminal(system, per_session, settle)
    result.seconds = time.monotonic() - started
    _offline(system, sids, since, result)
    await _check(system, per_session, result)
    return result


async def _send_all(system: RunningSystem, sid: str, ids: list[str], result: ChaosResult) -> None:
    """One session's sends, in order: each accepted before the next is offered."""
    subject = system.settings.subjects.send(sid)
    for send_id in ids:
        body = encode({"id": send_id, "to": "15550001111", "text": f"chaos {send_id}"})
        offered = time.monotonic()
        while True:
            try:
                reply = await system.nc.request(subject, body, timeout=10)
            except Exception:
                continue  # intake busy or restarting: same id again, de-duplicated if it landed
            if b'"ok":true' in reply.data:
                result.accepted += 1
                result.longest_accept_wait = max(result.longest_accept_wait, time.monotonic() - offered)
                break
            await asyncio.sleep(0.2)


async def _strike_loop(fault: Fault, every: float, stop: asyncio.Event, result: ChaosResult) -> None:
    rng = random.Random()
    while not stop.is_set():
        if await wait_event(stop, every * rng.uniform(0.7, 1.3)):
            return
        await fault.strike(rng)
        result.kills += 1


def _offline(system: RunningSystem, sids: list[str], since: datetime, result: ChaosResult) -> None:
    """From the status events since the run began: which sessions left `connected`, and the
    longest any stayed away from it."""
    now = utcnow()
    for sid in sids:
        away_since: datetime | None = None
        longest = 0.0
        for event in system.tap.of(sid, "status"):
            at = datetime.fromisoformat(event["at"])
            if at < since:
                continue
            if event["state"] != "connected" and away_since is None:
                away_since = at
            elif event["state"] == "connected" and away_since is not None:
                longest, away_since = max(longest, (at - away_since).total_seconds()), None
        if away_since is not None:
            longest = max(longest, (now - away_since).total_seconds())
        if longest:
            result.sessions_offline += 1
            result.longest_offline = max(result.longest_offline, longest)


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
