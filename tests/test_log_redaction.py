"""No secret in any service's log: a full pair / send / receive at DEBUG level, then every
log is searched for the values planted on the way (issue #16). Phone numbers may appear
only masked."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from services.common.bus import ensure_topology
from services.common.connection import connect_nats
from services.common.redaction import mask_phone, redact, scrub_text
from services.devstack.probes import EventTap, call_ok, wait_until
from services.devstack.processes import Stack
from services.devstack.scenarios import pair
from services.devstack.servers import free_port, start_nats
from tests.conftest import TEST_VAULT_KEYS, Infra, make_settings

NATS_PASSWORD = "planted-nats-password-7f3a"
AUTH_CONFIG = f'authorization {{ users = [{{user: "gateway", password: "{NATS_PASSWORD}"}}] }}\n'
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def test_secret_fields_are_dropped_and_phone_numbers_masked() -> None:
    line = redact(
        {
            "event": "paired 15551231111@s.whatsapp.net",
            "text": "hello",
            "qr": "2@abc",
            "pair_code": "ABCD-EFGH",
            "jid": "15551231111:12@s.whatsapp.net",
            "to": "15550001111",
            "token": "01796558009529.0000000000000003",
            "detail": {"caption": "a photo", "sender": "4915112345678@s.whatsapp.net"},
        }
    )
    assert line == {
        "event": "paired 1555***1111@s.whatsapp.net",
        "text": "[redacted]",
        "qr": "[redacted]",
        "pair_code": "[redacted]",
        "jid": "1555***1111:12@s.whatsapp.net",
        "to": "1555***1111",
        "token": "01796558009529.0000000000000003",  # a fencing token is no phone number
        "detail": {"caption": "[redacted]", "sender": "4915***5678@s.whatsapp.net"},
    }
    assert mask_phone("15551231111") == "1555***1111" and mask_phone("1234567") == "12***67"
    assert scrub_text("cannot connect to nats://acme:Zq9-x_1@127.0.0.1:4222, tls://h:1") == (
        "cannot connect to nats://acme:***@127.0.0.1:4222, tls://h:1"
    )
    # What libraries write into their own messages (neonize: "Pair code: %s").
    assert scrub_text("Pair code: ABCD-EFGH") == "Pair code: [redacted]"
    assert scrub_text("qr 2@Kq3xYz09+/AB==,ZGF0YQ==,a2V5,c2VjcmV0 shown") == "qr [redacted] shown"
    assert scrub_text("at 2026-12-06T11:57:27.998Z, port 4222, pid 15707, id 3EB0712879A5FF") == (
        "at 2026-12-06T11:57:27.998Z, port 4222, pid 15707, id 3EB0712879A5FF"
    )


@pytest.mark.slow
async def test_a_full_pair_send_receive_logs_none_of_its_secrets(infra: Infra, tmp_path: Path) -> None:
    server = start_nats(tmp_path / "nats", free_port(), AUTH_CONFIG)
    settings = make_settings(
        Infra(server.url, infra.mongo_url, "embedded"),
        tmp_path,
        nats_user="gateway",
        nats_password=NATS_PASSWORD,
        log_level="DEBUG",
    )
    s = settings.subjects
    stack = Stack(settings, tmp_path / "logs")
    nc = await connect_nats(settings)
    try:
        await ensure_topology(nc.jetstream(), settings)
        for service in ("wa-sim", "outbound-queue", "persistence", "health-monitor"):
            stack.start(service)
        stack.start("session-actor", "node1")
        tap = await EventTap(nc, settings).start()
        await wait_until(lambda: call_ok(nc, s.session_list, {}, timeout=2), timeout=60, what="the session API")

        await pair(nc, settings, tap, "shop")
        qr = next(e["qr"] for e in tap.of("shop", "status") if e.get("qr"))
        jid = next(e["jid"] for e in tap.of("shop", "status") if e.get("jid"))
        await call_ok(nc, s.session_create, {"session_id": "coded"})
        code = (await call_ok(nc, s.session("coded", "pair"), {"method": "code", "phone": "15557654321"}, timeout=30))[
            "pair_code"
        ]
        await call_ok(nc, s.sim("coded", "scan"), {})
        await tap.wait_state("coded", "connected", timeout=30)

        text, caption = "planted message text 41c2", "planted caption 9e1d"
        await call_ok(nc, s.send("shop"), {"id": "t1", "to": "15550001111", "text": text})
        image = {"kind": "image", "base64": base64.b64encode(PNG).decode()}
        await call_ok(nc, s.send("shop"), {"id": "m1", "to": "15550001111", "text": caption, "media": image})
        for send_id in ("t1", "m1"):
            await tap.wait_for("shop", "outbound", lambda e, i=send_id: e["id"] == i and e["state"] == "delivered")
        inbound_text, inbound_caption = "planted inbound 7d3e", "planted inbound caption 55aa"
        await call_ok(nc, s.sim("shop", "inbound"), {"from": "15550002222", "text": inbound_text})
        inbound_image = {"base64": base64.b64encode(PNG).decode(), "mime": "image/png"}
        await call_ok(
            nc, s.sim("shop", "inbound"), {"from": "15550002222", "type": "image", "media": inbound_image, "text": inbound_caption}
        )
        await tap.wait_for("shop", "message", lambda e: e.get("text") == inbound_caption and "media_id" in e["media"])

        state_file = settings.data_dir / "wa_sim" / "state.json"
        devices = await wait_until(
            lambda: state_file.exists() and len(json.loads(state_file.read_text())["devices"]) == 2 and json.loads(state_file.read_text())["devices"],
            what="the simulator's saved devices",
        )
        device_secrets = [device["secret"] for device in (devices.values() if isinstance(devices, dict) else devices)]
        await tap.stop()
    finally:
        stack.stop_all()
        await nc.close()
        server.stop()

    logs = {path.name: path.read_text(errors="replace") for path in (tmp_path / "logs").glob("*.log")}
    assert len(logs) == 5 and all(logs.values()), logs.keys()
    assert any("DEBUG" in text.upper() for text in logs.values())  # debug lines were written
    planted = {
        "message text": text,
        "caption": caption,
        "inbound text": inbound_text,
        "inbound caption": inbound_caption,
        "QR payload": qr,
        "pair code": code,
        "NATS password": NATS_PASSWORD,
        "vault key": TEST_VAULT_KEYS.split(":", 1)[1],
        **{f"device secret {i}": secret for i, secret in enumerate(device_secrets)},
        "recipient": "15550001111",
        "contact": "15550002222",
        "pairing phone": "15557654321",
        "own number": jid.split("@")[0].split(":")[0],
    }
    for name, value in planted.items():
        leaks = [log for log, content in logs.items() if value in content]
        assert not leaks, f"{name} ({value!r}) appears in {leaks}"
