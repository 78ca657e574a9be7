"""`make run`: the whole system on one machine, on embedded servers unless real ones are set.

Starts nats-server and the MongoDB-compatible dev server (data under WA_DATA_DIR, default
.data/) unless WA_NATS_URL / WA_MONGO_URL are set, then every service as its own process
under honcho, with logs prefixed by service name. With WA_TENANTS (tenants.py) NATS requires
authentication and every tenant gets its account and its own set of the services. Ctrl-C stops the session-actor nodes
first (they hand off sessions and flush credentials), then the other services, and the
servers last.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import honcho.manager
import typer
from pymongo.errors import PyMongoError

from contracts.subjects import Subjects
from contracts.types import utcnow
from services.api_keys.store import ApiKeyStore
from services.common import mongo
from services.common.config import Settings
from services.credentials.vault import DEV_KEY_FILE, new_key_entry
from services.devstack.processes import (
    NODE_SERVICE,
    SERVICE_MODULES,
    child_env,
    http_ports,
    metrics_url,
)
from services.devstack.servers import EmbeddedServer, start_mongo, start_nats, start_nats_cluster
from services.devstack.tenants import (
    Tenant,
    accounts_config,
    client_permissions,
    load_tenant,
    parse_tenants,
    write_client_url,
)

app = typer.Typer(add_completion=False, help=__doc__)

DASHBOARD_TOKEN_FILE = "dashboard-token"
API_KEY_FILE = "api-key"

# Once the first process has stopped, the rest get this long: nodes bound their handoff
# (session_actor/node.py SHUTDOWN_LIMIT), the other services their broker stop.
honcho.manager.KILL_WAIT = 12
NODE = f"{NODE_SERVICE}."


class NodesFirst(honcho.manager.Manager):
    """Stops the session-actor nodes first and everything else once they are gone.

    A node's graceful stop (close connections at the simulator, flush credentials, final
    status events) needs the other services answering; honcho's stop-all-at-once had the
    simulator shutting down under a node still waiting for its disconnects.
    """

    def terminate(self) -> None:
        if self._terminating:
            return
        self._terminating = True
        threading.Thread(target=self._stop_in_order, name="stop-in-order", daemon=True).start()

    def _running(self, nodes: bool) -> dict[str, int]:
        return {
            name: p["pid"]
            for name, p in list(self._processes.items())
            if is_node(name) == nodes and "pid" in p and "returncode" not in p
        }

    def _stop_in_order(self) -> None:
        for pid in self._running(nodes=True).values():
            self._procmgr.terminate(pid)
        deadline = time.monotonic() + honcho.manager.KILL_WAIT
        while self._running(nodes=True) and time.monotonic() < deadline:
            time.sleep(0.1)  # the loop records each stop; past the deadline it kills them
        for pid in self._running(nodes=False).values():
            self._procmgr.terminate(pid)


def is_node(process: str) -> bool:
    """`session-actor.1`, or a tenant's `acme.session-actor.1`."""
    return process.rsplit(".", 2)[-2:-1] == [NODE_SERVICE]


def dev_vault_key(data_dir: Path) -> Path:
    """A generated key file for local use only; production passes WA_VAULT_KEYS from a secret."""
    key_file = data_dir / DEV_KEY_FILE
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(new_key_entry("dev1") + "\n")
        key_file.chmod(0o600)
    return key_file


def dev_dashboard_token(data_dir: Path) -> str:
    """The dashboard token of this checkout, made once and kept with the data (so the link
    printed at start keeps working across restarts); production passes WA_DASHBOARD_TOKEN."""
    token_file = data_dir / DASHBOARD_TOKEN_FILE
    if not token_file.exists():
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(secrets.token_urlsafe(24) + "\n")
        token_file.chmod(0o600)
    return token_file.read_text().strip()


async def dev_api_key(settings: Settings, data_dir: Path) -> tuple[str, bool]:
    """The HTTP API key of a service set's tenant, kept in `api-key` with its data: made on
    the first start (and again if the database no longer knows it). Returns it and whether
    it is new. Production makes keys with `wactl apikey create`."""
    key_file = data_dir / API_KEY_FILE
    client, db = mongo.connect(settings, "make-run")
    store = ApiKeyStore(db)
    try:
        if key_file.exists() and await store.verify(key_file.read_text().strip(), settings.tenant):
            return key_file.read_text().strip(), False
        _, token = await store.create(settings.tenant, "make run", utcnow())
    finally:
        await mongo.close(client)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(token + "\n")
    key_file.chmod(0o600)
    return token, True


@dataclass(frozen=True)
class ServiceSet:
    """One set of the gateway's processes: `label` prefixes their names (a tenant's), `env`
    is what they share, `settings` what they read from it (ports, database, tenant, data)."""

    label: str
    env: dict[str, str]
    settings: Settings


def tenant_sets(
    tenants: list[Tenant], env: dict[str, str], settings: Settings, server_url: str
) -> list[ServiceSet]:
    """A service set per tenant: its account's service user, its own database and data
    folder (vault key, store files, API key), the health monitor and the HTTP API on the
    next free ports in line."""
    sets = []
    for i, tenant in enumerate(tenants):
        if not settings.vault_keys.get_secret_value() and settings.vault_key_file is None:
            dev_vault_key(tenant.folder)
        own = {
            "mongo_db": tenant.mongo_db,
            "data_dir": tenant.folder,
            "health_port": settings.health_port + i,
            "http_port": settings.http_port + i,
            "tenant": tenant.name,
        }
        tenant_env = child_env(
            env, nats_user=tenant.service_user, nats_password_file=tenant.service_password_file, **own
        )
        url_file = write_client_url(settings.data_dir.resolve(), tenant, server_url)
        typer.echo(f"tenant {tenant.name}: client URL in {url_file}   CLI: .venv/bin/wactl --tenant {tenant.name}")
        sets.append(ServiceSet(f"{tenant.name}.", tenant_env, settings.model_copy(update=own)))
    return sets


def add_service_set(manager: NodesFirst, service_set: ServiceSet, nodes: int) -> None:
    env = service_set.env
    processes = [(name, name, {}) for name in SERVICE_MODULES if name != NODE_SERVICE]
    for i in range(nodes):
        processes.append((f"{NODE}{i + 1}", NODE_SERVICE, {"node_name": env.get("WA_NODE_NAME", f"node{i + 1}")}))
    for name, service, extra in processes:
        # Each process its own metrics port; the dashboard and the API keep their set's.
        ports = {key: port for key, port in http_ports(service).items() if key == "metrics_port"}
        label = service_set.label + name
        command = f"{sys.executable} -m {SERVICE_MODULES[service]}"
        manager.add_process(label, command, env=child_env(env, **ports, **extra))
        typer.echo(f"metrics of {label}: {metrics_url(service, service_set.settings.model_copy(update=ports))}")


def announce(service_set: ServiceSet, token: str, mongo_url: str) -> None:
    """Where a set's dashboard and HTTP API are, and its API key the first time."""
    s, label = service_set.settings, service_set.label
    base = f"http://{s.health_host}:{s.health_port}"
    typer.echo(f"{label}health: {base}/healthz   CLI: .venv/bin/wactl --help")
    typer.echo(f"{label}dashboard: {base}/ui/login?token={token}")
    key_file = s.data_dir.resolve() / API_KEY_FILE
    typer.echo(f"{label}http api: http://{s.http_host}:{s.http_port}/docs   (API key in {key_file})")
    try:
        api_key, new = asyncio.run(dev_api_key(s.model_copy(update={"mongo_url": mongo_url}), s.data_dir.resolve()))
    except PyMongoError as exc:  # the services wait for it; the key can be made later
        typer.echo(f"no API key made (MongoDB: {type(exc).__name__}); make one with wactl apikey create")
    else:
        if new:
            typer.echo(f"{label}API key (shown once; kept in {key_file}): {api_key}")


@app.command()
def run(
    nodes: int = typer.Option(1, help="session-actor nodes to start (per tenant)"),
    nats_servers: int = typer.Option(
        1,
        min=1,
        envvar="WA_DEV_NATS_SERVERS",
        help="embedded NATS servers: 3 or more make a loopback cluster (ports nats-port, nats-port + 1, "
        "...) with JetStream replicas 3",
    ),
    nats_port: int = typer.Option(4222, envvar="WA_DEV_NATS_PORT", help="the embedded NATS server's port"),
    mongo_port: int = typer.Option(27017, envvar="WA_DEV_MONGO_PORT", help="the embedded database's port"),
    tenants: str = typer.Option(
        "",
        envvar="WA_TENANTS",
        help="tenants, e.g. 'acme globex': the embedded NATS then requires authentication, with an account "
        "per tenant and a set of the services in each (health ports health-port, health-port + 1, ...)",
    ),
) -> None:
    """Start the embedded servers (unless configured) and every service."""
    # Service logs reach a pipe or file as they happen, not in 8 KB blocks.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    settings = Settings()
    data_dir = settings.data_dir.resolve()
    try:
        tenant_names = parse_tenants(tenants)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="WA_TENANTS") from None
    if tenant_names and ("WA_NATS_URL" in os.environ or nats_servers > 1):
        raise typer.BadParameter(
            "tenants run on the one embedded NATS server; for your own NATS see the production recipe in README.md",
            param_hint="WA_TENANTS",
        )
    accounts = [load_tenant(data_dir, name) for name in tenant_names]
    embedded_urls: dict[str, str] = {}
    servers: list[EmbeddedServer] = []
    try:
        if "WA_NATS_URL" not in os.environ and nats_servers > 1:
            ports = [nats_port + i for i in range(nats_servers)]
            cluster = start_nats_cluster(data_dir / "nats-cluster", nats_servers, ports)
            servers.extend(cluster.members)
            embedded_urls["nats_url"] = cluster.url
            if "WA_JS_REPLICAS" not in os.environ:
                embedded_urls["js_replicas"] = str(min(3, nats_servers))
        elif "WA_NATS_URL" not in os.environ:
            extra = accounts_config(accounts, settings.subjects, simulator=True) if accounts else ""
            servers.append(start_nats(data_dir / "nats", nats_port, extra))
            embedded_urls["nats_url"] = servers[-1].url
        if "WA_MONGO_URL" not in os.environ:
            servers.append(start_mongo(data_dir / "mongo", mongo_port))
            embedded_urls["mongo_url"] = servers[-1].url
        if not settings.vault_keys.get_secret_value() and settings.vault_key_file is None and not accounts:
            dev_vault_key(data_dir)  # session-actor and wactl find it under WA_DATA_DIR
        token = settings.dashboard_token.get_secret_value() or dev_dashboard_token(data_dir)
        env = child_env(os.environ, **embedded_urls, data_dir=data_dir, dashboard_token=token)
        for server in servers:
            typer.echo(f"{server.name}: {server.url} (data in {data_dir}, log {server.log_path})")
        sets = (
            tenant_sets(accounts, env, settings, env["WA_NATS_URL"])
            if accounts
            else [ServiceSet("", env, settings.model_copy(update={"data_dir": data_dir}))]
        )
        manager = NodesFirst()
        for service_set in sets:
            add_service_set(manager, service_set, nodes)
        for service_set in sets:
            announce(service_set, token, embedded_urls.get("mongo_url", settings.mongo_url))
        manager.loop()
        code = manager.returncode or 0
    finally:
        for server in reversed(servers):
            server.stop()
    raise typer.Exit(code)


@app.command()
def permissions(
    prefix: str = typer.Option("wa", help="the deployment's subject prefix (WA_PREFIX)"),
    simulator: bool = typer.Option(False, help="also the simulator's control subjects (dev and demos)"),
) -> None:
    """Print the NATS permissions of a tenant's client user, for a nats-server config."""
    typer.echo(json.dumps(client_permissions(Subjects(prefix), simulator), indent=2))


@app.callback()
def main() -> None:
    """The local development stack."""
