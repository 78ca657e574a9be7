"""Fuzzing every public request subject of a running system (services/devstack/fuzz.py):
`per_subject` Hypothesis-generated bodies each (malformed JSON, wrong types, nulls, huge
numbers, bad timestamps and base64, unicode, deep nesting, 1-5 MB strings, valid bodies with
one field spoiled), plus hostile subjects. NATS allows 8 MB messages here so the 1-5 MB
bodies reach the services. Afterwards: every service still runs (same processes), and a new
session pairs and a send is delivered.

Run: `python -m bench fuzz [--per-subject 2000]` (a few minutes with defaults).
"""

from __future__ import annotations

import time

from bench.results import SERVICE_LOGS, Report, host_speed_ms
from services.devstack.fuzz import FAILURES, doomed, fuzz
from services.devstack.probes import call_ok
from services.devstack.scenarios import fresh_system, pair

BIG_PAYLOADS = "max_payload: 8MB\n"


async def run(per_subject: int = 2000, seed: int = 0) -> Report:
    report = Report("fuzz")
    print(f"fuzz: {per_subject} bodies per public subject; host speed {host_speed_ms()} ms", flush=True)
    async with fresh_system("fuzz", SERVICE_LOGS, nats_config=BIG_PAYLOADS) as system:
        s = system.settings.subjects
        await pair(system.nc, system.settings, system.tap, "good")
        for sid in ("fuzz", doomed("fuzz")):
            await call_ok(system.nc, s.session_create, {"session_id": sid})
        pids = {name: proc.popen.pid for name, proc in system.stack.procs.items()}
        started = time.monotonic()
        result = await fuzz(system.nc, s, "fuzz", per_subject, seed)
        seconds = time.monotonic() - started
        for subject, counts in sorted(result.outcomes.items()):
            report.add(subject=subject, tried=sum(counts.values()), **dict(counts))
        totals = result.totals()
        restarted = [name for name, proc in system.stack.procs.items() if not proc.alive or proc.popen.pid != pids[name]]
        await pair(system.nc, system.settings, system.tap, "after")
        await call_ok(system.nc, s.send("good"), {"id": "after-fuzz", "to": "15550001111", "text": "still here"})
        await system.tap.wait_for("good", "outbound", lambda e: e["id"] == "after-fuzz" and e["state"] == "delivered")
        report.add(
            subject="(all)",
            tried=sum(totals.values()),
            seconds=round(seconds, 1),
            failures=sum(totals[f] for f in FAILURES),
            crashes=len(restarted),
            slowest_s=round(result.slowest[-1][0], 2) if result.slowest else 0.0,
            pair_and_send_after="ok",
            **dict(totals),
        )
        for failure in result.failures[:20]:
            print(f"  FAILURE {failure}", flush=True)
    print(f"results: {report.save()}", flush=True)
    return report
