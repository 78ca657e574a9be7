"""What keeping credentials in the vault costs per session: snapshot, seal, fenced write, restore.

    python -m bench vault [--saves 200] [--sessions 20]

Three kinds of store, each saved `saves` times over `sessions` sessions (versions 1, 2, ...,
as an actor saves after its store changed):

- neonize-new: a whatsmeow store made by the Go library, with a hand-made device row (as
  pairing leaves it; services/devstack/neonize_stores.py), in its first days;
- neonize-aged: the same store after months of use (see `age_whatsmeow_store`: thousands of
  Signal sessions, identity keys, prekeys, sender keys, contacts, app-state MACs; all key
  material random, so it compresses like the real thing at worst);
- sim: a simulator store (device row and rotated key material).

Before each save the store changes a little (one Signal session, five for the aged store,
ratchets and a prekey is used, or the simulator rotates keys), and that state is written to
the session's store file.
Then, timed: the adapter's `snapshot()` (neonize: through the Go library's own SQLite),
`seal` (zstd level 6 + AES-256-GCM), and `CredentialVault.save` (its own seal plus the
write fenced by the owner token) against the MongoDB-compatible dev server (SecantusDB);
`write` is save minus the seal of the same store. Restore is `CredentialVault.restore`:
read (document, or GridFS above 4 MB) + decrypt + decompress + `check_store`.
"""

from __future__ import annotations

import os
import random
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.results import Report, percentiles
from contracts.sim import DeviceCredentials
from services.common import mongo
from services.common.cluster import fence_token
from services.common.config import Settings
from services.common.logs import setup
from services.credentials.vault import (
    CredentialVault,
    Keyring,
    check_store,
    new_key_entry,
    open_sealed,
    seal,
)
from services.devstack.neonize_stores import forge_linked_store, fresh_store, on_private_copy
from services.devstack.servers import free_port, start_mongo
from services.session_actor.adapters.base import WhatsAppClient
from services.session_actor.adapters.sim import SimClientFactory, SimStore

OUR_JID = "15550001111:7@s.whatsapp.net"
# A store after months of use (rows per table). whatsmeow keeps one Signal session and one
# identity key per contact device, uploads prekeys in batches and deletes used ones, one
# sender key per group member seen, and an app-state MAC per synced mutation.
AGED_ROWS = {
    "sessions": 3000,  # 0.8-2.5 KB record each (current state plus archived ratchets)
    "identity_keys": 3000,
    "pre_keys": 800,
    "sender_keys": 500,
    "contacts": 2500,
    "mutation_macs": 8000,
    "message_secrets": 2000,
    "lid_map": 2000,
}


# ---------------------------------------------------------------------------- stores


def _contact(i: int) -> str:
    return f"{5511900000000 + i * 7919}"


def age_whatsmeow_store(store: bytes, rows: dict[str, int] = AGED_ROWS, seed: int = 1) -> bytes:
    rng = random.Random(seed)

    def blob(low: int, high: int | None = None) -> bytes:
        return rng.randbytes(low if high is None else rng.randint(low, high))

    def fill(db: sqlite3.Connection) -> None:
        me = OUR_JID
        db.executemany(
            "INSERT INTO whatsmeow_sessions VALUES (?, ?, ?)",
            ((me, f"{_contact(i)}.0:{i % 3}", blob(800, 2500)) for i in range(rows["sessions"])),
        )
        db.executemany(
            "INSERT INTO whatsmeow_identity_keys VALUES (?, ?, ?)",
            ((me, f"{_contact(i)}.0:{i % 3}", blob(32)) for i in range(rows["identity_keys"])),
        )
        db.executemany(
            "INSERT INTO whatsmeow_pre_keys VALUES (?, ?, ?, ?)",
            ((me, 5000 + i, blob(32), True) for i in range(rows["pre_keys"])),
        )
        db.executemany(
            "INSERT INTO whatsmeow_sender_keys VALUES (?, ?, ?, ?)",
            (
                (me, f"1203630{i // 20:08d}@g.us", f"{_contact(i)}.0:0", blob(300, 600))
                for i in range(rows["sender_keys"])
            ),
        )
        db.executemany(
            "INSERT INTO whatsmeow_contacts VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                (me, f"{_contact(i)}@s.whatsapp.net", f"Name{i}", f"Name{i} Surname{i}", f"Push {i}", "", "")
                for i in range(rows["contacts"])
            ),
        )
        names = ("critical_block", "critical_unblock_low", "regular", "regular_high", "regular_low")
        db.executemany(
            "INSERT INTO whatsmeow_app_state_version VALUES (?, ?, ?, ?)",
            ((me, name, 1000 + i, blob(128)) for i, name in enumerate(names)),
        )
        db.executemany(
            "INSERT INTO whatsmeow_app_state_sync_keys VALUES (?, ?, ?, ?, ?)",
            ((me, blob(6), blob(80), 1_700_000_000 + i, blob(20)) for i in range(40)),
        )
        db.executemany(
            "INSERT INTO whatsmeow_app_state_mutation_macs VALUES (?, ?, ?, ?, ?)",
            ((me, names[i % 5], 1 + i // 5, blob(32), blob(32)) for i in range(rows["mutation_macs"])),
        )
        db.executemany(
            "INSERT INTO whatsmeow_message_secrets VALUES (?, ?, ?, ?, ?)",
            (
                (
                    me,
                    f"{_contact(i)}@s.whatsapp.net",
                    f"{_contact(i)}@s.whatsapp.net",
                    f"3EB0{i:016X}",
                    blob(32),
                )
                for i in range(rows["message_secrets"])
            ),
        )
        db.executemany(
            "INSERT INTO whatsmeow_lid_map VALUES (?, ?)",
            ((f"{10**14 + i}", _contact(i)) for i in range(rows["lid_map"])),
        )

    return on_private_copy(store, fill, vacuum=True)


def whatsmeow_variants(store: bytes, count: int, seed: int, ratchets: int) -> list[bytes]:
    """`count` successive states: each time `ratchets` Signal sessions change, a prekey is used."""
    rng = random.Random(seed)
    out = []
    for n in range(count):

        def change(db: sqlite3.Connection, n: int = n) -> None:
            db.execute("UPDATE whatsmeow_device SET push_name = ?", (f"Forged {n}",))
            for _ in range(ratchets):
                db.execute(
                    "INSERT OR REPLACE INTO whatsmeow_sessions VALUES (?, ?, ?)",
                    (OUR_JID, f"{_contact(rng.randrange(3000))}.0:0", rng.randbytes(rng.randint(800, 2500))),
                )
            db.execute(
                "DELETE FROM whatsmeow_pre_keys WHERE key_id = (SELECT min(key_id) FROM whatsmeow_pre_keys)"
            )

        store = on_private_copy(store, change, vacuum=True)
        out.append(store)
    return out


def sim_variants(directory: Path, count: int) -> list[bytes]:
    """Successive states of a simulator store, written by the sim adapter's own store class."""
    store = SimStore(directory / "sim-template.db")
    store.write(DeviceCredentials(jid=OUR_JID, device_id="dev-1", secret="s" * 43, key_generation=1))
    out = []
    for generation in range(2, count + 2):
        store.rotate_keys(generation, os.urandom(96).hex())
        out.append(store.path.read_bytes())
    return out


# ------------------------------------------------------------------------ measuring


@dataclass
class Kind:
    name: str
    variants: list[bytes]  # successive states of a store, one per save round
    device_table: str
    make_client: Callable[[str, Path], WhatsAppClient]


async def _timed(call: Callable[[], Awaitable[Any]]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = await call()
    return result, (time.perf_counter() - started) * 1000


async def measure(
    kind: Kind, db: Any, keyring: Keyring, sessions: int, saves: int, directory: Path
) -> dict[str, Any]:
    vault = CredentialVault(db, keyring, kind.device_table)
    sids = [f"{kind.name}-{i:03d}" for i in range(sessions)]
    clients = {sid: kind.make_client(sid, directory / f"{sid}.db") for sid in sids}
    token = fence_token(1, 1)
    last: dict[str, Any] = {}
    samples: dict[str, list[float]] = {"snapshot": [], "seal": [], "save": [], "write": []}
    sealed_sizes: list[int] = []
    rounds = max(1, saves // sessions)
    for round_ in range(rounds):
        for sid in sids:
            client = clients[sid]
            client.store_path.write_bytes(kind.variants[round_ % len(kind.variants)])  # as the actor restores
            store, snapshot_ms = await _timed(client.snapshot)
            started = time.perf_counter()
            sealed = seal(keyring, sid, round_ + 1, store)
            seal_ms = (time.perf_counter() - started) * 1000
            saved, save_ms = await _timed(
                lambda sid=sid, store=store: vault.save(sid, token, store, last.get(sid))
            )
            assert saved is not None and saved.version == round_ + 1, "the fenced write was refused"
            last[sid] = saved
            sealed_sizes.append(len(sealed["ciphertext"]))
            samples["snapshot"].append(snapshot_ms)
            samples["seal"].append(seal_ms)
            samples["save"].append(save_ms)
            samples["write"].append(max(0.0, save_ms - seal_ms))
    restores: list[float] = []
    parts: dict[str, list[float]] = {"open": [], "check": []}
    for _ in range(rounds):
        for sid in sids:
            restored, restore_ms = await _timed(lambda sid=sid: vault.restore(sid))
            assert restored is not None and restored.skipped == []
            restores.append(restore_ms)
    for sid in sids[: min(len(sids), 20)]:  # where a restore's time goes
        doc = await vault.collection.find_one({"_id": sid})
        meta = max(doc["versions"], key=lambda v: v["version"])
        ciphertext = await vault._ciphertext(meta)
        started = time.perf_counter()
        store = open_sealed(keyring, sid, meta, ciphertext)
        opened = time.perf_counter()
        check_store(store, kind.device_table)
        parts["open"].append((opened - started) * 1000)
        parts["check"].append((time.perf_counter() - opened) * 1000)
    plain = len(kind.variants[-1])
    row: dict[str, Any] = {
        "store": kind.name,
        "saves": rounds * sessions,
        "sessions": sessions,
        "plain_bytes": plain,
        "sealed_bytes": round(sum(sealed_sizes) / len(sealed_sizes)),
        "gridfs": any("gridfs_id" in v for v in await vault.versions(sids[0])),
    }
    for what, values in {**samples, "restore": restores}.items():
        stats = percentiles(values)
        row[f"{what}_p50_ms"], row[f"{what}_p99_ms"] = stats["p50"], stats["p99"]
    row["restore_open_p50_ms"] = percentiles(parts["open"])["p50"]
    row["restore_check_p50_ms"] = percentiles(parts["check"])["p50"]
    return row


def table(rows: list[dict[str, Any]]) -> str:
    def ms(row: dict[str, Any], what: str) -> str:
        return f"{row[f'{what}_p50_ms']:.1f} / {row[f'{what}_p99_ms']:.1f}"

    lines = [
        "| store | plain | sealed (zstd+GCM) | snapshot ms p50/p99 | seal ms | save ms (seal + fenced write) "
        "| write ms | restore ms (read+open+check) | saves |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        where = ", GridFS" if row["gridfs"] else ""
        lines.append(
            f"| {row['store']} | {row['plain_bytes'] / 1024:,.0f} KB | {row['sealed_bytes'] / 1024:,.1f} KB{where} "
            f"| {ms(row, 'snapshot')} | {ms(row, 'seal')} | {ms(row, 'save')} | {ms(row, 'write')} "
            f"| {ms(row, 'restore')} | {row['saves']} |"
        )
    return "\n".join(lines)


async def run(saves: int = 200, sessions: int = 20) -> Report:
    from services.session_actor.adapters.neonize.factory import NeonizeClientFactory

    setup("bench", "WARNING")
    report = Report("vault")
    rows = []
    with tempfile.TemporaryDirectory(prefix="wa-bench-vault-") as tmp:
        work = Path(tmp)
        server = start_mongo(work / "mongo", free_port())
        settings = Settings(
            mongo_url=server.url,
            mongo_db="bench_vault",
            vault_keys=new_key_entry("bench"),
            node_capacity=sessions,
        )
        client, db = mongo.connect(settings, "bench-vault")
        keyring = Keyring.parse(settings.vault_keys.get_secret_value())
        neonize = NeonizeClientFactory(settings, check_reachability=False)
        await neonize.start()
        try:
            linked = forge_linked_store(await fresh_store(neonize, work), OUR_JID)
            aged = age_whatsmeow_store(linked)
            rounds = max(1, saves // sessions)
            sim = SimClientFactory(None, settings)  # type: ignore[arg-type] - snapshots need no NATS

            def nothing(event: Any) -> None:
                pass

            kinds = [
                Kind(
                    "neonize-new",
                    whatsmeow_variants(linked, rounds, seed=1, ratchets=1),
                    "whatsmeow_device",
                    lambda sid, path: neonize.create(sid, path, nothing, time.monotonic),
                ),
                Kind(
                    "neonize-aged",
                    whatsmeow_variants(aged, rounds, seed=2, ratchets=5),
                    "whatsmeow_device",
                    lambda sid, path: neonize.create(sid, path, nothing, time.monotonic),
                ),
                Kind(
                    "sim",
                    sim_variants(work, rounds),
                    "sim_device",
                    lambda sid, path: sim.create(sid, path, nothing, time.monotonic),
                ),
            ]
            print(f"aged whatsmeow store: {len(aged):,} bytes; rows: {AGED_ROWS}", flush=True)
            for kind in kinds:
                (work / kind.name).mkdir()
                row = await measure(kind, db, keyring, sessions, saves, work / kind.name)
                report.add(**row)
                rows.append(row)
        finally:
            await neonize.stop()
            await client.close()
            server.stop()
    report.save()
    print(table(rows))
    return report
