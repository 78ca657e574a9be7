"""Every public request subject fuzzed with generated bodies and hostile subjects on the
real services (services/devstack/fuzz.py; `python -m bench fuzz` runs the full size): each
answer is a v1 envelope, no service restarts, and pairing and sending work afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.bus import ensure_topology
from services.common.connection import connect_nats
from services.devstack.fuzz import FAILURES, doomed, fuzz, hostile_subjects, request_templates
from services.devstack.probes import call_ok
from services.devstack.processes import Stack
from services.devstack.scenarios import start_sending_stack
from services.devstack.servers import free_port, start_nats
from tests.conftest import Infra, make_settings

pytestmark = pytest.mark.slow

# Room for the 1-5 MB bodies (the default max payload is 1 MB).
BIG_PAYLOADS = "max_payload: 8MB\n"


async def test_fuzzed_requests_get_envelopes_and_the_system_still_pairs_and_sends(infra: Infra, tmp_path: Path) -> None:
    server = start_nats(tmp_path / "nats", free_port(), BIG_PAYLOADS)
    settings = make_settings(Infra(server.url, infra.mongo_url, "embedded"), tmp_path)
    s = settings.subjects
    nc = await connect_nats(settings)
    stack = Stack(settings, tmp_path / "logs")
    try:
        await ensure_topology(nc.jetstream(), settings)
        tap = await start_sending_stack(stack, nc, settings, ["good"])
        for sid in ("fuzz", doomed("fuzz")):
            await call_ok(nc, s.session_create, {"session_id": sid})
        pids = {name: proc.popen.pid for name, proc in stack.procs.items()}

        report = await fuzz(nc, s, "fuzz", per_subject=12, random_seed=16)

        assert not report.failures, "\n".join(map(str, report.failures[:20]))
        assert set(report.outcomes) == set(request_templates(s, "fuzz")) | set(hostile_subjects(s, "fuzz"))
        totals = report.totals()
        assert totals["error"] > totals["ok"] > 0 and not FAILURES & set(totals)
        assert all(proc.alive for proc in stack.procs.values())
        assert {name: proc.popen.pid for name, proc in stack.procs.items()} == pids

        await call_ok(nc, s.session_create, {"session_id": "after"})
        await call_ok(nc, s.session("after", "pair"), {"method": "qr"}, timeout=30)
        await tap.wait_for("after", "status", lambda e: bool(e.get("qr")), timeout=30)
        await call_ok(nc, s.sim("after", "scan"), {})
        await tap.wait_state("after", "connected", timeout=30)
        await call_ok(nc, s.send("good"), {"id": "after-fuzz", "to": "15550001111", "text": "still here"})
        await tap.wait_for("good", "outbound", lambda e: e["id"] == "after-fuzz" and e["state"] == "delivered")
        await tap.stop()
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop_all()
        await nc.close()
        server.stop()
