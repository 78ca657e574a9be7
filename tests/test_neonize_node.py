"""A real session-actor node on the neonize adapter, offline: a linked whatsmeow store and a
Baileys auth folder imported at startup (WA_IMPORT_DIR) are claimed, restored from the
vault, loaded and dialed by a real Go client without asking for pairing, and retried with
backoff; neither is reported connected and nothing crashes."""

from __future__ import annotations

import asyncio

import pytest

from services.common.sessions import SessionStore
from services.credentials.vault import CredentialVault, Keyring
from services.devstack.probes import EventTap, call, wait_until
from tests.baileys_folders import write_folder
from tests.test_importer import whatsmeow_store

pytestmark = pytest.mark.timeout(60)

SID = "phone1"
BAILEYS = "baileys1"


async def test_imported_stores_and_baileys_folders_are_restored_dialed_and_retried_offline(
    settings, nc, db, stack, tmp_path, monkeypatch
) -> None:
    folder = tmp_path / "import"
    folder.mkdir()
    store = whatsmeow_store()
    (folder / f"{SID}.db").write_bytes(store)
    write_folder(folder / BAILEYS, "15550006666:9@s.whatsapp.net")
    tap = await EventTap(nc, settings).start()
    # Offline either way; through a dead proxy the adapter skips its reachability probe, so
    # a real Go client loads the restored store and its dial fails (the path under test).
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    node = stack.start("session-actor", "node1", adapter="neonize", import_dir=folder, backoff_base=0.3, backoff_cap=1.0)

    seen: list[str] = []

    async def state_now(sid: str) -> str:
        reply = await call(nc, settings.subjects.session(sid, "get"), {}, timeout=2)
        assert reply.ok, reply.error
        seen.append(reply.data["state"])
        return reply.data["state"]

    async def two_attempts() -> bool:
        for sid in (SID, BAILEYS):
            await state_now(sid)
        return all(
            tap.states(sid)[:5] == ["created", "connecting", "disconnected", "connecting", "disconnected"]
            for sid in (SID, BAILEYS)
        )

    await wait_until(two_attempts, 40, interval=0.1, what="two failed dials of each imported session")

    for sid in (SID, BAILEYS):
        await state_now(sid)
        events = tap.of(sid, "status")
        attempt, failed = events[1], events[2]
        assert attempt["node"] and attempt["token"]
        # The store loaded as a linked device (a device whatsmeow could not load would be
        # paired: a QR code); the dial failed offline (whatsmeow's own error) and a retry
        # is scheduled.
        assert "failed to dial whatsapp web websocket" in failed["reason"] and "127.0.0.1:9" in failed["reason"]
        assert "retry in" in failed["reason"]
        assert not {"connected", "pairing"} & set(tap.states(sid))
    assert set(seen) <= {"created", "connecting", "disconnected"}
    assert node.alive

    # The credentials came through untouched: still version 1, byte for byte.
    await asyncio.sleep(0.5)
    assert stack.stop("node1") == 0
    log = node.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "panic" not in log and "actor crashed" not in log
    assert "store imported" in log
    vault = CredentialVault(db, Keyring.parse(settings.vault_keys.get_secret_value()), "whatsmeow_device")
    restored = await vault.restore(SID)
    assert restored is not None and (restored.version, restored.store) == (1, store)
    # The Go client loaded the Baileys device and changed nothing of it: one version.
    assert [v["version"] for v in await vault.versions(BAILEYS)] == [1]
    for sid in (SID, BAILEYS):
        assert (await SessionStore(db).get(sid))["state"] in ("disconnected", "connecting")
    await tap.stop()
