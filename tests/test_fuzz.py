"""Every public request subject fuzzed with generated bodies and hostile subjects on the
real services (services/devstack/fuzz.py; `python -m bench fuzz` runs the full size): each
answer is a v1 envelope, no service restarts, and pairing and sending work afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.config import Settings
from services.devstack.fuzz import FAILURES, doomed, fuzz, hostile_subjects, request_templates
from services.devstack.probes import call_ok
from services.devstack.scenarios import pair, start_sending_stack
from services.devstack.servers import EmbeddedServer, free_port, start_nats
from tests.conftest import Infra, make_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big_payload_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """Room for the 1-5 MB bodies (the default max payload is 1 MB)."""
    server = start_nats(tmp_path_factory.mktemp("fuzz") / "nats", free_port(), "max_payload: 8MB\n")
    yield server
    server.stop()


@pytest.fixture
def settings(big_payload_nats: EmbeddedServer, infra: Infra, tmp_path: Path) -> Settings:
    return make_settings(Infra(big_payload_nats.url, infra.mongo_url, "embedded"), tmp_path)


async def test_fuzzed_requests_get_envelopes_and_the_system_still_pairs_and_sends(stack, nc, settings) -> None:
    s = settings.subjects
    tap = await start_sending_stack(stack, nc, settings, ["good"])
    for sid in ("fuzz", doomed("fuzz")):
        await call_ok(nc, s.session_create, {"session_id": sid})
    pids = {name: proc.popen.pid for name, proc in stack.procs.items()}

    report = await fuzz(nc, s, "fuzz", per_subject=12, random_seed=16)

    assert not report.failures, "\n".join(map(str, report.failures[:20]))
    assert set(report.outcomes) == set(request_templates(s, "fuzz")) | set(hostile_subjects(s, "fuzz"))
    totals = report.totals()
    assert totals["error"] > totals["ok"] > 0 and not FAILURES & set(totals)
    assert {name: proc.popen.pid for name, proc in stack.procs.items() if proc.alive} == pids

    await pair(nc, settings, tap, "after")
    await call_ok(nc, s.send("good"), {"id": "after-fuzz", "to": "15550001111", "text": "still here"})
    await tap.wait_for("good", "outbound", lambda e: e["id"] == "after-fuzz" and e["state"] == "delivered")
    await tap.stop()
