"""Tenants isolated by the NATS server: an account per tenant, the gateway's services as its
service user, the tenant's applications as a client user limited to the public contract
(issue #16's acceptance, on a real nats-server with accounts)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import DeliverPolicy

from services.common.config import Settings
from services.devstack.probes import EventTap, call, call_ok, wait_until
from services.devstack.processes import MakeRun, Stack
from services.devstack.scenarios import pair
from services.devstack.servers import EmbeddedServer, free_port, start_nats
from services.devstack.tenants import Tenant, accounts_config, load_tenant, tenant_url_file
from tests.conftest import Infra, make_settings
from tests.test_wactl import Wactl, ok, wactl

pytestmark = pytest.mark.slow

# Services a tenant's sends, sessions and history go through (no health monitor here).
SERVICES = ("wa-sim", "outbound-queue", "persistence")


@dataclass
class TenantSide:
    tenant: Tenant
    settings: Settings  # as the tenant's services have them (service user, own database)
    client: NatsClient  # the tenant's client user
    errors: list[Exception]  # what the server told the client (permission violations)


@pytest.fixture(scope="module")
def accounts_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedServer, Path, Settings]]:
    root = tmp_path_factory.mktemp("tenants")
    base = make_settings(Infra("nats://unused", "mongodb://unused", "embedded"), root)
    tenants = [load_tenant(root, name) for name in ("acme", "globex")]
    server = start_nats(root / "nats", free_port(), accounts_config(tenants, base.subjects, simulator=True))
    yield server, root, base
    server.stop()


async def tenant_side(
    name: str, server: EmbeddedServer, root: Path, base: Settings, infra: Infra, tag: str
) -> TenantSide:
    tenant = load_tenant(root, name)
    settings = base.model_copy(
        update={
            "nats_url": server.url,
            "nats_user": tenant.service_user,
            "nats_password_file": tenant.service_password_file,
            "mongo_url": infra.mongo_url,
            "mongo_db": f"{tenant.mongo_db}_{tag}",
            "data_dir": tenant.folder / tag,
        }
    )
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    client = await nats.connect(tenant.client_url(server.url), error_cb=on_error)
    return TenantSide(tenant, settings, client, errors)


@pytest.fixture
async def sides(accounts_server, infra: Infra, tmp_path: Path, request) -> AsyncIterator[dict[str, TenantSide]]:
    server, root, base = accounts_server
    tag = tmp_path.name[-12:].replace("-", "_")
    found = {name: await tenant_side(name, server, root, base, infra, tag) for name in ("acme", "globex")}
    stacks = {name: Stack(side.settings, tmp_path / "logs" / name) for name, side in found.items()}
    for stack in stacks.values():
        for service in SERVICES:
            stack.start(service)
        stack.start("session-actor", "node1")
    yield found
    for side in found.values():
        await side.client.close()
    failed = getattr(request.node, "rep_call", None)
    for stack in stacks.values():
        stack.stop_all()
        if failed is not None and failed.failed:
            print(stack.logs())


async def test_anonymous_and_wrong_credentials_are_refused(accounts_server) -> None:
    server, root, _ = accounts_server
    acme = load_tenant(root, "acme")
    for url in (server.url, acme.client_url(server.url).replace(acme.client_password, "wrong-password")):
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5)


async def services_up(side: TenantSide, sid: str) -> None:
    s = side.settings.subjects
    await wait_until(lambda: call(side.client, s.session_list, {}, timeout=2), timeout=60, what=f"{side.tenant.name}'s services")
    await wait_until(lambda: call(side.client, s.history(sid, "messages"), {}, timeout=2), timeout=60, what="persistence")


async def test_a_tenant_uses_its_sessions_and_another_tenant_sees_none_of_them(sides) -> None:
    acme, globex = sides["acme"], sides["globex"]
    s = acme.settings.subjects  # the same subjects in every account
    await asyncio.gather(services_up(acme, "shared"), services_up(globex, "shared"))

    # acme, as its client user: create, pair, send, read events and history.
    tap = await EventTap(acme.client, acme.settings).start()
    await pair(acme.client, acme.settings, tap, "shared")
    await call_ok(acme.client, s.session_create, {"session_id": "acme-only"})
    accepted = await call_ok(acme.client, s.send("shared"), {"id": "m-1", "to": "15550001111", "text": "acme secret"})
    assert accepted["state"] == "queued"
    await tap.wait_for("shared", "outbound", lambda e: e["id"] == "m-1" and e["state"] == "delivered")
    await call_ok(acme.client, s.sim("shared", "inbound"), {"from": "15550002222", "text": "to acme"})
    inbound = await tap.wait_for("shared", "message", lambda e: e["text"] == "to acme")

    async def acme_history() -> list:
        return (await call_ok(acme.client, s.history("shared", "messages"), {}))["messages"]

    assert (await wait_until(acme_history, what="acme's history"))[0]["message_id"] == inbound["message_id"]
    await tap.stop()

    # globex: the same session id is its own, new session; acme's sessions do not exist.
    mine = await call_ok(globex.client, s.session_create, {"session_id": "shared"})
    assert mine["state"] == "created" and not mine.get("jid")
    listed = await call_ok(globex.client, s.session_list, {})
    assert [x["session_id"] for x in listed["sessions"]] == ["shared"]
    for op in ("get", "logout", "delete", "reconnect"):
        reply = await call(globex.client, s.session("acme-only", op), {})
        assert not reply.ok and reply.error.code == "not_found", (op, reply)
    refused = await call(globex.client, s.send("acme-only"), {"id": "x-1", "to": "15550001111", "text": "hi"})
    assert not refused.ok and refused.error.code == "not_found", refused
    assert (await call_ok(globex.client, s.history("shared", "messages"), {}))["messages"] == []
    assert (await call_ok(globex.client, s.history("acme-only", "status"), {}))["statuses"] == []

    # globex's replay of its own stream, whole: its own session's creation, none of acme's.
    replay = await EventTap(globex.client, globex.settings).start()
    stored = (await globex.client.jetstream().stream_info(s.events_stream)).state.messages
    await wait_until(lambda: len(replay.events) >= stored, what="globex's whole stream")
    assert [(subject, e["state"]) for subject, e in replay.events] == [(s.event("shared", "status"), "created")]
    await replay.stop()

    # And acme's session is untouched by all that.
    assert (await call_ok(acme.client, s.session("shared", "get")))["state"] == "connected"


async def test_a_tenant_client_gets_exactly_the_public_contract(sides) -> None:
    acme = sides["acme"]
    s = acme.settings.subjects
    await services_up(acme, "demo")
    tap = await EventTap(acme.client, acme.settings).start()
    await pair(acme.client, acme.settings, tap, "demo")
    client = acme.client

    # Internal subjects, events and buckets are the services' alone: the server refuses.
    forbidden_publish = [
        s.actor("demo", "logout"),
        s.outbound("demo"),
        s.heartbeat("fake-node"),
        s.event("demo", "status"),
        f"$KV.{s.leases_bucket}.own.demo",
        f"$JS.API.STREAM.DELETE.{s.events_stream}",
        f"$JS.API.CONSUMER.DELETE.{s.events_stream}.any",
        "$JS.API.STREAM.CREATE.MINE",
        f"$JS.API.STREAM.INFO.KV_{s.sends_bucket}",
    ]
    for subject in forbidden_publish:
        await client.publish(subject, b'{"state": "logged_out", "token": "zzzz"}')
    for subject in (s.outbound("*"), s.sim_wire("send"), s.heartbeats_all):
        await client.subscribe(subject)
    await client.flush()

    def violations() -> list[str]:
        return [str(e) for e in acme.errors if "permissions violation" in str(e).lower()]

    expected = len(forbidden_publish) + 3
    seen = await wait_until(lambda: len(violations()) >= expected and violations(), what="permission violations")
    for subject in forbidden_publish:
        assert any(subject.lower() in v.lower() for v in seen), (subject, seen)
    with pytest.raises(Exception):  # noqa: B017 - the bucket's stream info is refused (times out)
        await client.jetstream(timeout=2).key_value(s.sends_bucket)

    # The forged status event never reached the stream: the session still sends.
    assert (await call_ok(client, s.session("demo", "get")))["state"] == "connected"
    accepted = await call_ok(client, s.send("demo"), {"id": "after", "to": "15550001111", "text": "still works"})
    assert accepted["state"] == "queued"
    await tap.wait_for("demo", "outbound", lambda e: e["id"] == "after" and e["state"] == "delivered")

    # What the contract does allow: replaying events through a consumer of its own.
    js = client.jetstream()
    durable = await js.pull_subscribe(s.event("demo", "status"), durable="mine", stream=s.events_stream)
    first = (await durable.fetch(1, timeout=5))[0]
    await first.ack()
    assert first.subject == s.event("demo", "status")
    live = await js.subscribe(s.events_all, stream=s.events_stream, ordered_consumer=True, deliver_policy=DeliverPolicy.LAST)
    await live.unsubscribe()
    await tap.stop()


async def test_make_run_with_tenants_serves_each_tenant_through_its_url_and_wactl(infra: Infra, tmp_path: Path) -> None:
    settings = make_settings(infra, tmp_path, health_port=free_port(), prefix="wa", sim_prefix="wasim")
    run = MakeRun(
        settings,
        tmp_path / "devstack.log",
        embedded={"nats_port": free_port(), "mongo_port": free_port()},
        extra_env={"WA_TENANTS": "acme"},
    )
    run.start()
    try:
        url_file = tenant_url_file(settings.data_dir, "acme")
        await wait_until(url_file.exists, timeout=60, what="acme's URL file")
        url = url_file.read_text().strip()
        assert url.startswith("nats://acme:") and "@127.0.0.1:" in url
        server = "nats://" + url.rsplit("@", 1)[1]
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(server, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5)

        async def listing() -> bool:
            return (await wactl(settings, "--tenant", "acme", "--timeout", "2", "session", "list")).code == 0

        await wait_until(listing, timeout=90, interval=0.5, what="acme's services")
        ok(await wactl(settings, "--tenant", "acme", "session", "create", "demo"))
        pairing = await Wactl.start(settings, "--tenant", "acme", "session", "pair", "demo", "--timeout", "60")
        await pairing.line_matching(r"Scan with WhatsApp", timeout=60)
        assert ok(await wactl(settings, "--tenant", "acme", "sim", "scan", "demo")).startswith("scanned: linked as ")
        assert "connected" in ok(await pairing.finish(timeout=60)).splitlines()[-1]
        sent = ok(await wactl(settings, "--tenant", "acme", "send", "demo", "15550001111", "hello", "--wait"))
        assert "delivered" in sent or "sent" in sent, sent
        # The same URL works as-is for any NATS client.
        client = await nats.connect(url)
        reply = await call(client, "wa.session.demo.get", {})
        assert reply.ok and reply.data["state"] == "connected"
        await client.close()
        missing = await wactl(settings, "--tenant", "nobody", "session", "list")
        assert missing.code == 2 and "no tenant 'nobody'" in missing.err
    finally:
        code = await run.stop()
    assert code is not None, run.logs()[-3000:]
