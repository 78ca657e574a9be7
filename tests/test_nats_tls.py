"""The services and wactl on a NATS server that requires mutual TLS and a MongoDB-compatible
server that requires TLS, with certificates of a throwaway CA made by the test; clients
without a certificate of that CA are refused."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from pymongo.errors import ServerSelectionTimeoutError

from services.common.config import Settings
from services.common.mongo import mongo_client
from services.devstack.probes import call_ok
from services.devstack.scenarios import start_sending_stack
from services.devstack.servers import EmbeddedServer, free_port, start_mongo, start_nats
from tests.conftest import Infra, make_settings
from tests.test_wactl import ok, wactl
from tests.throwaway_ca import ThrowawayCA

pytestmark = pytest.mark.slow

# Mutual TLS: the server presents its certificate and asks every client for one of the CA's.
TLS_CONFIG = """
tls {{
  cert_file: "{cert}"
  key_file: "{key}"
  ca_file: "{ca}"
  verify: true
}}
"""


@pytest.fixture(scope="module")
def tls_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedServer, EmbeddedServer, ThrowawayCA]]:
    root = tmp_path_factory.mktemp("tls")
    ca = ThrowawayCA(root / "ca")
    server_cert = ca.server()
    extra = TLS_CONFIG.format(cert=server_cert.cert, key=server_cert.key, ca=ca.cert)
    server = start_nats(root / "nats", free_port(), extra, scheme="tls")
    mongo_server = start_mongo(root / "mongo", free_port(), tls=(server_cert.cert, server_cert.key))
    yield server, mongo_server, ca
    server.stop()
    mongo_server.stop()


@pytest.fixture
def settings(tls_servers, tmp_path: Path) -> Settings:
    """Every service and client of the test (the `nc` and `stack` fixtures too) over TLS."""
    server, mongo_server, ca = tls_servers
    client = ca.client("gateway")
    assert mongo_server.url.endswith("tls=true")
    return make_settings(
        Infra(server.url, mongo_server.url, "embedded"),
        tmp_path,
        nats_tls_ca_file=ca.cert,
        nats_tls_cert_file=client.cert,
        nats_tls_key_file=client.key,
        mongo_tls_ca_file=ca.cert,
    )


async def test_the_services_and_wactl_run_with_tls_to_nats_and_mongodb(settings: Settings, nc, stack) -> None:
    tap = await start_sending_stack(stack, nc, settings, ["demo"])
    s = settings.subjects
    await call_ok(nc, s.send("demo"), {"id": "m-1", "to": "15550001111", "text": "over TLS"})
    await tap.wait_for("demo", "outbound", lambda e: e["id"] == "m-1" and e["state"] == "delivered")
    await tap.stop()
    assert "connected" in ok(await wactl(settings, "session", "get", "demo"))


async def test_clients_without_a_certificate_of_the_ca_are_refused(tls_servers, tmp_path: Path) -> None:
    server, mongo_server, ca = tls_servers
    trusting = ssl.create_default_context(cafile=str(ca.cert))
    stranger = ThrowawayCA(tmp_path / "other", "another CA").client("stranger")
    with_foreign_cert = ssl.create_default_context(cafile=str(ca.cert))
    with_foreign_cert.load_cert_chain(str(stranger.cert), str(stranger.key))
    plain = server.url.replace("tls://", "nats://")
    for url, tls in ((plain, None), (server.url, trusting), (server.url, with_foreign_cert)):
        with pytest.raises(Exception):  # noqa: B017 - refused during the handshake, in several ways
            await nats.connect(url, tls=tls, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3)
    # MongoDB: with the CA the server's certificate is trusted; without it, it is not.
    # Trap: the trusted client goes first. The dev server handshakes on its one accept thread
    # with no timeout, and a refused PyMongo client can leave a connected socket that never
    # says hello when closed: every later handshake then waits forever.
    for ca_file, trusted in ((ca.cert, True), (None, False)):
        settings = Settings(mongo_url=mongo_server.url, mongo_tls_ca_file=ca_file)
        # Room for a slow handshake on a busy host where it must succeed.
        client = mongo_client(settings, serverSelectionTimeoutMS=10_000 if trusted else 2000)
        try:
            if trusted:
                assert (await client.admin.command("ping"))["ok"]
            else:
                with pytest.raises(ServerSelectionTimeoutError, match="certificate verify failed"):
                    await client.admin.command("ping")
        finally:
            await client.close()
