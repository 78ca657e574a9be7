"""Fixtures: real servers, isolated per test by subject prefix and database name.

The embedded backend (nats-server from PyPI, SecantusDB) always runs. The testcontainers
backend (real MongoDB 7 and NATS images) runs the `any_infra` tests again when a Docker
engine answers, and is skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient
from pymongo.asynchronous.database import AsyncDatabase

from services.common import mongo
from services.common.bus import ensure_topology
from services.common.config import Settings
from services.common.connection import connect_nats
from services.credentials.vault import new_key_entry
from services.devstack.processes import Stack
from services.devstack.servers import free_port, start_mongo, start_nats

TEST_VAULT_KEYS = new_key_entry("test1")


def pytest_configure(config: pytest.Config) -> None:
    """Tests press Ctrl-C on the processes they start (`make run`, `wactl events`). Started
    in the background by a shell (`make test &`), this process and its children would ignore
    SIGINT (POSIX shells ignore it for `&` jobs): restore the default, as in a terminal."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass(frozen=True)
class Infra:
    nats_url: str
    mongo_url: str
    backend: str


@pytest.fixture(scope="session")
def embedded_infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    root = tmp_path_factory.mktemp("servers")
    nats_server = start_nats(root / "nats", free_port())
    mongo_server = start_mongo(root / "mongo", free_port())
    yield Infra(nats_server.url, mongo_server.url, "embedded")
    nats_server.stop()
    mongo_server.stop()


def _docker_problem() -> str | None:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception as exc:
        return f"no Docker engine answers ({type(exc).__name__}); testcontainers backend skipped"
    return None


@pytest.fixture(scope="session")
def container_infra() -> Iterator[Infra]:
    problem = _docker_problem()
    if problem:
        pytest.skip(problem)
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.mongodb import MongoDbContainer

    mongo = MongoDbContainer("mongo:7.0")
    nats_container = DockerContainer("nats:2.11").with_command("-js").with_exposed_ports(4222)
    with mongo, nats_container:
        wait_for_logs(nats_container, "Server is ready")
        host = nats_container.get_container_host_ip()
        port = nats_container.get_exposed_port(4222)
        yield Infra(f"nats://{host}:{port}", mongo.get_connection_url(), "containers")


@pytest.fixture
def infra(embedded_infra: Infra) -> Infra:
    return embedded_infra


@pytest.fixture(params=["embedded", pytest.param("containers", marks=pytest.mark.containers)])
def any_infra(request: pytest.FixtureRequest) -> Infra:
    """Both backends: for the tests that pin down behaviour on real MongoDB/NATS too."""
    return request.getfixturevalue(f"{request.param}_infra")


# Short leases keep failover tests quick; the invariant lease_self_stop +
# sim_keepalive_timeout <= lease_ttl still holds.
FAST_TIMINGS: dict[str, object] = {
    "lease_ttl": 3,
    "lease_renew_interval": 0.4,
    "lease_self_stop": 1.5,
    "sim_keepalive_interval": 0.4,
    "sim_keepalive_timeout": 1.5,
    "heartbeat_interval": 0.5,
    "rebalance_interval": 0.3,
    "backoff_base": 0.2,
    "backoff_cap": 2.0,
}


def make_settings(infra: Infra, tmp_path: Path, **overrides: object) -> Settings:
    tag = uuid.uuid4().hex[:8]
    values: dict[str, object] = {
        "nats_url": infra.nats_url,
        "mongo_url": infra.mongo_url,
        "prefix": f"t{tag}",
        "sim_prefix": f"s{tag}",
        "mongo_db": f"t_{tag}",
        "data_dir": tmp_path / "data",
        **FAST_TIMINGS,
        "vault_keys": TEST_VAULT_KEYS,
        # Pacing stays on (its path is exercised) but fast; pacing tests set their own.
        "pacing_per_minute": 6000.0,
        "pacing_burst": 100,
        "pacing_min_gap": 0.02,
        "pacing_jitter": 0.01,
        "send_max_attempts": 3,
        "send_retry_base": 0.1,
        "send_retry_cap": 1.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(infra: Infra, tmp_path: Path) -> Settings:
    return make_settings(infra, tmp_path)


@pytest.fixture
async def nc(settings: Settings) -> AsyncIterator[NatsClient]:
    client = await connect_nats(settings)
    await ensure_topology(client.jetstream(), settings)
    yield client
    await client.drain()


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[AsyncDatabase]:
    client, database = mongo.connect(settings, "tests")
    yield database
    await client.drop_database(settings.mongo_db)
    await client.close()


@pytest.fixture
def stack(settings: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """Service processes started exactly as `make run` starts them; logs shown on failure."""
    running = Stack(settings, tmp_path / "logs")
    yield running
    # A fixture that failed (a pairing of the ownership tests' setup) shows them too.
    reports = [getattr(request.node, f"rep_{when}", None) for when in ("setup", "call")]
    running.stop_all()
    if any(r is not None and r.failed for r in reports) or os.environ.get("WA_TEST_SHOW_LOGS"):
        print(running.logs())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
