"""whatsmeow store files for tests and benchmarks: an empty store made by the Go library,
one forged to look linked (pairing needs a phone), and edits on a private copy."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from services.session_actor import machine as m
from services.session_actor.adapters.base import ClientEvent
from services.session_actor.adapters.neonize.factory import NeonizeClientFactory


def on_private_copy(
    store: bytes, change: Callable[[sqlite3.Connection], None], vacuum: bool = False
) -> bytes:
    """Apply `change` (one transaction) to a private copy: never a file a Go client has open,
    since Python's sqlite3 must never touch a live store. `vacuum` compacts the result."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.db"
        path.write_bytes(store)
        db = sqlite3.connect(path)
        try:
            with db:
                change(db)
            if vacuum:
                db.execute("VACUUM")
        finally:
            db.close()
        return path.read_bytes()


def forge_linked_store(
    store: bytes, jid: str = "15550001111:7@s.whatsapp.net", push_name: str = "Forged"
) -> bytes:
    """A copy of a whatsmeow store with a device row, as pairing would have written it.

    The keys are random: whatsmeow loads the device, WhatsApp would refuse it.
    """

    def add_device(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO whatsmeow_device (jid, registration_id, noise_key, identity_key,"
            " signed_pre_key, signed_pre_key_id, signed_pre_key_sig, adv_key, adv_details,"
            " adv_account_sig, adv_account_sig_key, adv_device_sig, platform, push_name)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                jid,
                int.from_bytes(os.urandom(2)) + 1,
                os.urandom(32),
                os.urandom(32),
                os.urandom(32),
                1,
                os.urandom(64),
                os.urandom(32),
                b"\x08\x01",
                os.urandom(64),
                os.urandom(32),
                os.urandom(64),
                "chrome",
                push_name,
            ),
        )

    return on_private_copy(store, add_device)


async def fresh_store(factory: NeonizeClientFactory, directory: Path) -> bytes:
    """An empty whatsmeow store, created by the Go side on a first (failing) connect."""
    ended = asyncio.Event()

    def on_event(event: ClientEvent) -> None:
        if isinstance(event, m.Disconnected):
            ended.set()

    client = factory.create("template", directory / "template.db", on_event, time.monotonic)
    await client.connect()
    await asyncio.wait_for(ended.wait(), 30)
    store = await client.snapshot()
    await client.close()
    return store
