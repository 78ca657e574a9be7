"""Prometheus metrics on a running system, checked with Prometheus' own tools (Debian's
`prometheus` package, which `make test` installs): the values move as sessions and sends do,
`promtool check metrics` accepts every service's output, a real Prometheus scrapes them all
and loads the alert rules, every query of the Grafana dashboard runs, and an unlinked device
fires the logged-out alert. The rules themselves: `promtool check rules` and their unit tests.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from contracts.internal import QueuedSend
from contracts.types import utcnow
from services.common.bus import encode
from services.common.metrics import serve_metrics
from services.devstack.probes import EventTap, call, call_ok, wait_until
from services.devstack.processes import MONITOR_SERVICE, Stack
from services.devstack.scenarios import pair
from services.devstack.servers import free_port
from services.outbound_queue.metrics import QueueGauges

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "k8s" / "components" / "monitoring"
RULES = MONITORING / "alerts.yaml"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} missing: `make test` installs Debian's prometheus package (apt-get)")
    return found


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], input=stdin, capture_output=True, text=True, timeout=60)


def test_the_alert_rules_are_valid_and_pass_their_unit_tests() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [tool("promtool"), "test", "rules", "alerts.test.yaml"], cwd=MONITORING, capture_output=True, text=True, timeout=60
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_metrics_port_in_use_is_logged_and_the_service_goes_on(settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with capture_logs() as logged:
            serve_metrics(settings.model_copy(update={"metrics_port": port}), "test")
    assert [(e["event"], e["port"]) for e in logged] == [("metrics port unavailable; running without /metrics", port)]


async def test_queue_gauges_are_per_session_only_when_asked_for(settings, nc) -> None:
    js, s = nc.jetstream(), settings.subjects
    an_hour_ago = utcnow() - timedelta(hours=1)
    for sid, count in (("q-a", 2), ("q-b", 1)):
        for n in range(count):
            queued = QueuedSend(id=f"{sid}-{n}", session_id=sid, to="15550001111", text="x", accepted_at=an_hour_ago)
            await js.publish(s.outbound(sid), encode(queued))

    def gauge(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    await QueueGauges(js, s, per_session=False).sample()
    assert gauge("wa_queue_depth") == 3 and 3600 <= gauge("wa_queue_oldest_age_seconds") < 3700
    assert gauge("wa_session_queue_depth", session="q-a") is None  # 10,000 sessions: no 10,000 series

    per_session = QueueGauges(js, s, per_session=True)
    await per_session.sample()
    assert (gauge("wa_session_queue_depth", session="q-a"), gauge("wa_session_queue_depth", session="q-b")) == (2, 1)
    assert gauge("wa_session_queue_oldest_age_seconds", session="q-b") >= 3600
    await js.purge_stream(s.outbound_stream, subject=s.outbound("q-a"))
    await per_session.sample()
    assert gauge("wa_session_queue_depth", session="q-a") is None  # an emptied queue leaves no series
    assert gauge("wa_queue_depth") == 1


# -- on a running system ----------------------------------------------------------------------
def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def value(http: httpx.AsyncClient, url: str, name: str, **labels: str) -> float:
    found = samples((await http.get(url)).text)
    return found.get((name, frozenset(labels.items())), 0.0)


async def reaches(
    http: httpx.AsyncClient, url: str, expected: float, name: str, at_least: bool = False, **labels: str
) -> None:
    """Until the sample is `expected` (or more, `at_least`): services update them as they go."""

    async def there() -> bool:
        found = await value(http, url, name, **labels)
        return found >= expected if at_least else found == expected

    await wait_until(there, what=f"{name}{labels} {'>=' if at_least else '=='} {expected} at {url}")


class Prometheus:
    """A real Prometheus server scraping `targets` every second, with the alert rules."""

    def __init__(self, work: Path, targets: dict[str, list[str]]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": addresses}]} for job, addresses in targets.items()
            ],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (work / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        self.log.close()

    async def query(self, http: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
        answer = (await http.get(f"{self.url}/api/v1/query", params={"query": expr})).json()
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]


@pytest.fixture
def prometheus(tmp_path: Path, stack: Stack) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start() -> Prometheus:
        targets: dict[str, list[str]] = {}
        for proc in stack.procs.values():
            targets.setdefault(proc.service, []).append(proc.metrics_url.split("/")[2])
        started.append(Prometheus(tmp_path, targets))
        return started[0]

    yield start
    for server in started:
        server.stop()


def dashboard_queries() -> list[str]:
    dashboard = json.loads((MONITORING / "wa-gateway-dashboard.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


async def test_metrics_move_and_a_real_prometheus_scrapes_and_alerts_on_them(
    settings, nc, stack, prometheus, tmp_path
) -> None:
    s = settings.subjects
    stack.start_all(nodes=1, metrics_interval=0.5)
    tap = await EventTap(nc, settings).start()
    await wait_until(lambda: call(nc, s.session_list, {}, timeout=2), timeout=60, what="the session API")
    await pair(nc, settings, tap, "demo")
    await pair(nc, settings, tap, "phone")
    node = stack.procs["node1"].metrics_url
    monitor = stack.procs[MONITOR_SERVICE].metrics_url
    server = prometheus()

    async with httpx.AsyncClient(timeout=10) as http:
        # A send increments `sent` (and its latency histogram) on the node that sent it.
        sent_before = await value(http, node, "wa_sends_total", outcome="sent", code="")
        await call_ok(nc, s.send("demo"), {"id": "m-1", "to": "15550001111", "text": "hello"})
        await tap.wait_for("demo", "outbound", lambda e: e["id"] == "m-1" and e["state"] == "sent")
        await reaches(http, node, sent_before + 1, "wa_sends_total", outcome="sent", code="")
        assert await value(http, node, "wa_send_latency_seconds_count") >= 1
        queue = stack.procs["outbound-queue"].metrics_url
        assert await value(http, queue, "wa_sends_accepted_total") >= 1

        # A logout changes the state gauges: cluster-wide (monitor) and on the node.
        await reaches(http, monitor, 2, "wa_sessions", state="connected")
        await call_ok(nc, s.session("demo", "logout"), {})
        await reaches(http, monitor, 1, "wa_sessions", state="logged_out")
        assert await value(http, monitor, "wa_sessions", state="connected") == 1
        await reaches(http, node, 1, "wa_node_sessions", state="logged_out")
        assert await value(http, monitor, "wa_nodes_alive") == 1
        assert await value(http, node, "wa_lease_renewals_total", outcome="ok") > 0
        assert await value(http, node, "process_resident_memory_bytes") > 0
        persistence = stack.procs["persistence"].metrics_url
        await reaches(http, persistence, 1, "wa_persistence_events_total", at_least=True, kind="status")
        assert await value(http, persistence, "wa_persistence_lag_seconds_count") > 0

        # Every service's output passes promtool's lint.
        for proc in stack.procs.values():
            text = (await http.get(proc.metrics_url)).text
            checked = promtool("check", "metrics", stdin=text)
            assert checked.returncode == 0, f"{proc.name}: {checked.stdout}{checked.stderr}"

        # Prometheus scrapes every service, loads the rules, and runs every dashboard query.
        async def scraped() -> bool:
            up = await server.query(http, "up")
            return len(up) == len(stack.procs) and all(r["value"][1] == "1" for r in up)

        await wait_until(scraped, timeout=30, interval=0.5, what="every service scraped")
        found = await server.query(http, 'wa_sends_total{outcome="sent"}')
        assert [r["metric"]["job"] for r in found] == ["session-actor"] and float(found[0]["value"][1]) >= 1
        rules = (await http.get(f"{server.url}/api/v1/rules")).json()["data"]["groups"]
        loaded = [r for group in rules for r in group["rules"]]
        written = [rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
        assert sorted(r["name"] for r in loaded) == sorted(written), loaded
        assert all(r["health"] in ("ok", "unknown") for r in loaded), loaded
        for expr in dashboard_queries():
            await server.query(http, expr.replace("$__rate_interval", "1m"))

        # The phone unlinks the device: an alert event on the bus, and the rule fires.
        await wait_until(
            lambda: server.query(http, 'wa_alerts_total{kind="logged_out", job="session-actor"}'),
            interval=0.5, what="the logged_out alert counter scraped at 0",
        )  # fmt: skip
        await call_ok(nc, s.sim("phone", "unlink"), {})
        alert = await tap.wait_for("phone", "alert", lambda e: e["kind"] == "logged_out")
        assert (alert["severity"], alert["state"]) == ("critical", "logged_out")

        async def firing() -> bool:
            alerts = (await http.get(f"{server.url}/api/v1/alerts")).json()["data"]["alerts"]
            return any(a["labels"]["alertname"] == "WaSessionLoggedOut" and a["state"] == "firing" for a in alerts)

        await wait_until(firing, timeout=30, interval=0.5, what="WaSessionLoggedOut firing")
    await tap.stop()
