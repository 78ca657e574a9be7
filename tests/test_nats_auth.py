"""Every way a NATS operator hands out credentials works for the services' connection (the
FastStream broker every service builds) and for wactl, against a real nats-server that
requires it; without them the server refuses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nkeys
import pytest

from services.common.config import Settings
from services.common.connection import connect_nats
from services.common.runtime import make_broker
from services.devstack.servers import free_port, start_nats
from tests.conftest import Infra, make_settings
from tests.nats_jwt import Key, Operator
from tests.test_wactl import wactl

Method = Callable[[Path], tuple[str, dict[str, object]]]  # folder -> (server config, settings)


def password(folder: Path) -> tuple[str, dict[str, object]]:
    secret = folder / "password"
    secret.write_text("s3cret-password\n")
    return 'authorization { users = [{user: "gw", password: "s3cret-password"}] }\n', {
        "nats_user": "gw",
        "nats_password_file": secret,
    }


def token(folder: Path) -> tuple[str, dict[str, object]]:
    return 'authorization { token: "s3cret-token" }\n', {"nats_token": "s3cret-token"}


def nkey(folder: Path) -> tuple[str, dict[str, object]]:
    user = Key(nkeys.PREFIX_BYTE_USER)
    seed = folder / "user.nk"
    seed.write_bytes(user.seed)
    return f'authorization {{ users = [{{nkey: "{user.public}"}}] }}\n', {"nats_nkey_seed_file": seed}


def creds(folder: Path) -> tuple[str, dict[str, object]]:
    operator = Operator()
    return operator.server_config(), {"nats_creds_file": operator.creds_file(folder / "gateway.creds")}


@pytest.mark.parametrize("method", [password, token, nkey, creds], ids=lambda m: m.__name__)
async def test_the_services_and_wactl_connect_with_each_kind_of_credentials(
    method: Method, infra: Infra, tmp_path: Path
) -> None:
    config, given = method(tmp_path)
    server = start_nats(tmp_path / "nats", free_port(), config)
    try:
        settings: Settings = make_settings(Infra(server.url, infra.mongo_url, "embedded"), tmp_path, **given)
        broker = make_broker(settings, "test")
        await broker.connect()
        await broker.publish(b"ping", "auth.check")
        await broker.stop()
        nc = await connect_nats(settings)
        await nc.flush()
        await nc.close()
        # wactl connects (then finds no service answering: exit 3 with that reason).
        connected = await wactl(settings, "--timeout", "1", "session", "list")
        assert connected.code == 3 and "no service answers" in connected.err, connected.err
        anonymous = await wactl(settings.model_copy(update={k: None for k in given}), "session", "list")
        assert anonymous.code == 3 and "cannot connect" in anonymous.err, anonymous.err
    finally:
        server.stop()
