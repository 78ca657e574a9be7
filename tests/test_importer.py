"""Importing existing credential stores and Baileys auth folders as sessions (`wactl import`,
`wactl import baileys`, WA_IMPORT_DIR), against real MongoDB-wire and NATS servers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
from nats.js.errors import KeyNotFoundError

from contracts.internal import Ownership
from contracts.sim import DeviceCredentials
from contracts.types import utcnow
from services.common.bus import EventPublisher
from services.common.cluster import OWN
from services.common.sessions import SessionStore
from services.credentials import importer
from services.credentials.importer import Refused, Registry, copy_stores, session_id_for
from services.credentials.vault import CredentialVault, Keyring, check_store
from services.devstack.neonize_stores import forge_linked_store
from services.devstack.probes import EventTap, wait_until
from services.devstack.processes import REPO_ROOT, settings_env
from services.session_actor.adapters.sim import SimStore
from tests.baileys_folders import write_folder

pytestmark = pytest.mark.timeout(60)


# ----------------------------------------------------------------------------- stores


def sim_store(path: Path, jid: str = "15550001111:1@s.whatsapp.net", generation: int = 1) -> bytes:
    """A simulator store with a linked device, as the sim adapter writes it."""
    SimStore(path).write(DeviceCredentials(jid=jid, device_id=f"d-{path.stem}", secret="s3cret", key_generation=generation))
    return path.read_bytes()


_TEMPLATE: list[bytes] = []


def whatsmeow_store(jid: str = "15550001111:7@s.whatsapp.net") -> bytes:
    """A whatsmeow store with a hand-made device row (random keys), as pairing would leave it.

    The empty store comes from the Go library itself, in a child process, so the test
    process never loads it (one event loop per process, and it redirects nothing here).
    """
    if not _TEMPLATE:
        script = textwrap.dedent(
            """
            import asyncio, sys, tempfile
            from pathlib import Path
            from services.devstack.neonize_stores import fresh_store
            from services.common.config import Settings
            from services.session_actor.adapters.neonize.factory import NeonizeClientFactory

            async def main():
                factory = NeonizeClientFactory(Settings(), check_reachability=False)
                await factory.start()
                with tempfile.TemporaryDirectory() as tmp:
                    Path(sys.argv[1]).write_bytes(await fresh_store(factory, Path(tmp)))
                await factory.stop()

            asyncio.run(main())
            """
        )
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "template.db"
            subprocess.run([sys.executable, "-c", script, str(out)], cwd=REPO_ROOT, check=True, timeout=60)
            _TEMPLATE.append(out.read_bytes())
    return forge_linked_store(_TEMPLATE[0], jid)


def sqlite_file(path: Path, *statements: str) -> Path:
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()
    return path


def registry_for(settings, nc, db, device_table: str = "sim_device", by: str = "test") -> Registry:
    js = nc.jetstream()
    keyring = Keyring.parse(settings.vault_keys.get_secret_value())
    return Registry(
        SessionStore(db),
        CredentialVault(db, keyring, device_table),
        None,  # type: ignore[arg-type] - set by `with_kv`
        EventPublisher(js, settings.subjects),
        db[importer.LEDGER],
        by,
    )


async def with_kv(registry: Registry, settings, nc) -> Registry:
    registry.kv = await nc.jetstream().key_value(settings.subjects.leases_bucket)
    return registry


async def owner_entry(registry: Registry, sid: str) -> Ownership | None:
    try:
        entry = await registry.kv.get(OWN + sid)
    except KeyNotFoundError:
        return None
    return msgspec.json.decode(entry.value, type=Ownership) if entry.value else None


# --------------------------------------------------------------------------- unit-ish


@pytest.mark.parametrize(
    ("name", "sid"),
    [
        ("alice.db", "alice"),
        ("Bob Smith.sqlite3", "Bob-Smith"),
        ("+55 (11) 99999-0000.sqlite", "55-11-99999-0000"),
        ("josé_2.db", "jose_2"),
        ("store.v2.db", "store-v2"),
        ("x" * 64 + ".db", "x" * 64),
    ],
)
def test_session_id_comes_from_the_file_name(name: str, sid: str) -> None:
    assert session_id_for(Path(name)) == sid


@pytest.mark.parametrize(("name", "why"), [("!!!.db", "no letters"), ("ж.db", "no letters"), ("y" * 65 + ".db", "65-character")])
def test_names_that_cannot_be_made_a_session_id_are_refused(name: str, why: str) -> None:
    with pytest.raises(Refused, match=why):
        session_id_for(Path(name))


WRITER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
print("ready", flush=True)
i = 0
while True:
    i += 1
    db.execute("BEGIN IMMEDIATE")
    db.execute("UPDATE a SET x = ?, pad = randomblob(400000)", (i,))
    db.execute("UPDATE b SET x = ?", (i,))
    db.execute("COMMIT")
"""

CRASHING_WRITER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA cache_size = 1")  # spill to the file before the commit
db.execute("BEGIN")
db.execute("CREATE TABLE junk (pad BLOB)")
for _ in range(200):
    db.execute("INSERT INTO junk VALUES (randomblob(4000))")
db.execute("DELETE FROM sim_device")
print("ready", flush=True)
time.sleep(60)
"""


async def python_until_ready(script: str, *args: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, *args, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and await proc.stdout.readline() == b"ready\n"
    return proc


def counters(store: bytes) -> tuple[int, int]:
    with tempfile.NamedTemporaryFile(suffix=".db") as tmp:
        Path(tmp.name).write_bytes(store)
        db = sqlite3.connect(tmp.name)
        try:
            return db.execute("SELECT (SELECT x FROM a), (SELECT x FROM b)").fetchone()
        finally:
            db.close()


def with_journal(path: Path) -> tuple[bytes, bytes]:
    return path.read_bytes(), Path(f"{path}-journal").read_bytes()


async def test_a_live_store_is_copied_consistently_and_a_dead_writers_journal_rolled_back(tmp_path) -> None:
    live = sqlite_file(
        tmp_path / "live.db",
        "CREATE TABLE sim_device (jid TEXT)",
        "INSERT INTO sim_device VALUES ('1@s.whatsapp.net')",
        "CREATE TABLE a (x INTEGER, pad BLOB)",
        "CREATE TABLE b (x INTEGER)",
        "INSERT INTO a VALUES (0, NULL)",
        "INSERT INTO b VALUES (0)",
    )
    # Another process commits without pause: `a` and `b` always change in one transaction,
    # and each commit rewrites ~100 pages (a torn copy would show a != b, or be corrupt).
    writer = await python_until_ready(WRITER, str(live))
    try:
        copies = await copy_stores([live] * 15)
    finally:
        writer.kill()
        await writer.wait()
    seen = set()
    for copy in copies:
        assert copy.data is not None, copy.problem
        check_store(copy.data, "sim_device")
        a, b = counters(copy.data)
        assert a == b
        seen.add(a)
    assert len(seen) > 1, "the writer never committed while copies were taken"

    # A writer killed mid-transaction leaves a hot journal: the copy is rolled back, the
    # source stays as it is (journal included).
    dead = sqlite_file(tmp_path / "dead.db", "CREATE TABLE sim_device (jid TEXT)", "INSERT INTO sim_device VALUES ('1@s')")
    crashing = await python_until_ready(CRASHING_WRITER, str(dead))
    crashing.kill()
    await crashing.wait()
    before = with_journal(dead)
    [copy] = await copy_stores([dead])
    assert copy.data is not None and copy.note and "rolled back" in copy.note
    check_store(copy.data, "sim_device")  # the device row the transaction deleted is back
    assert with_journal(dead) == before


# ---------------------------------------------------------------------------- wactl


async def test_wactl_imports_a_folder_skipping_what_it_must_not_import(settings, nc, db, tmp_path) -> None:
    folder = tmp_path / "stores"
    folder.mkdir()
    alice = sim_store(folder / "alice.db")
    bob = sim_store(folder / "Bob Smith.sqlite3", jid="15550002222:1@s.whatsapp.net")
    (folder / "corrupt.db").write_bytes(b"SQLite format 3\x00" + os.urandom(5000))
    sqlite_file(folder / "unpaired.sqlite", "CREATE TABLE sim_device (jid TEXT)")
    sim_store(folder / "taken.db", generation=7)
    sim_store(folder / "twin.db")
    sim_store(folder / "twin.sqlite")
    sim_store(folder / "!!!.db")
    (folder / "notes.txt").write_text("not a store")

    registry = await with_kv(registry_for(settings, nc, db), settings, nc)
    # `taken` exists already, with credentials of its own: nothing of it may change.
    theirs = sim_store(tmp_path / "theirs.db", generation=1)
    await registry.vault.save("taken", "t1", theirs)
    await importer.register_session(registry, "taken", "mine")
    tap = await EventTap(nc, settings).start()

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.wactl",
        "import",
        str(folder),
        "--label-from-filename",
        cwd=REPO_ROOT,
        env=settings_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    lines = dict(
        (Path(line.split(": ", 2)[1].split(" -> ")[0]).name, line) for line in out.decode().splitlines()
    )
    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in err.decode()
    assert err.decode().strip() == "2 of 8 store(s) imported"
    assert sorted(lines) == sorted(
        ["!!!.db", "Bob Smith.sqlite3", "alice.db", "corrupt.db", "taken.db", "twin.db", "twin.sqlite", "unpaired.sqlite"]
    )
    assert lines["alice.db"].startswith("imported: ") and lines["alice.db"].endswith(
        f"alice.db -> session alice (credential version 1, {len(alice)} bytes)"
    )
    assert "-> session Bob-Smith (" in lines["Bob Smith.sqlite3"]
    assert "not a readable SQLite store" in lines["corrupt.db"]
    assert "no device in the store" in lines["unpaired.sqlite"]
    assert "session 'taken' already exists" in lines["taken.db"]
    assert "twin.db, twin.sqlite all give session id 'twin'" in lines["twin.sqlite"]
    assert "twin.db, twin.sqlite" in lines["twin.db"]
    assert "cannot derive a session id" in lines["!!!.db"]
    assert all(line.startswith("skipped: ") for name, line in lines.items() if name not in ("alice.db", "Bob Smith.sqlite3"))

    # Registered as the session API registers: document, claimable ownership entry, event.
    for sid, store, label in (("alice", alice, "alice"), ("Bob-Smith", bob, "Bob Smith")):
        doc = await registry.sessions.get(sid)
        assert doc is not None and (doc["state"], doc["label"], doc["owner_token"]) == ("created", label, "")
        assert await owner_entry(registry, sid) == Ownership()
        restored = await registry.vault.restore(sid)
        assert restored is not None and (restored.version, restored.store) == (1, store)
        await tap.wait_state(sid, "created")
    for sid in ("twin", "unpaired", "corrupt"):
        assert await registry.sessions.get(sid) is None and not await registry.vault.exists(sid)
    restored = await registry.vault.restore("taken")
    assert restored is not None and restored.store == theirs
    assert (await registry.sessions.get("taken"))["label"] == "mine"
    await tap.stop()


async def test_importing_a_session_that_exists_again_is_refused_and_changes_nothing(settings, nc, db, tmp_path) -> None:
    registry = await with_kv(registry_for(settings, nc, db), settings, nc)
    first = sim_store(tmp_path / "carol.db")
    [done] = await importer.import_stores(registry, [tmp_path / "carol.db"])
    assert done.imported
    (tmp_path / "again").mkdir()
    sim_store(tmp_path / "again" / "carol.db", generation=2)
    [again] = await importer.import_stores(registry, [tmp_path / "again" / "carol.db"])
    assert not again.imported and "already exists" in again.detail
    restored = await registry.vault.restore("carol")
    assert restored is not None and restored.store == first and len(await registry.vault.versions("carol")) == 1
    # Credentials without a session (left by a session whose delete did not finish) stay too.
    await registry.vault.save("dan", "t1", sim_store(tmp_path / "dan-old.db"))
    [dan] = await importer.import_stores(registry, [sim_file(tmp_path / "dan.db")])
    assert not dan.imported and "already has credentials" in dan.detail
    assert await registry.sessions.get("dan") is None


def sim_file(path: Path) -> Path:
    sim_store(path)
    return path


# --------------------------------------------------------------------- startup import


async def test_startup_import_runs_once_across_nodes_and_restarts(settings, nc, db, tmp_path) -> None:
    folder = tmp_path / "import"
    folder.mkdir()
    stores = {f"phone{i}": whatsmeow_store(f"1555000{i:04d}:7@s.whatsapp.net") for i in range(3)}
    for sid, store in stores.items():
        (folder / f"{sid}.db").write_bytes(store)
    (folder / "broken.sqlite").write_bytes(b"not a database at all")
    nodes = [
        await with_kv(registry_for(settings, nc, db, "whatsmeow_device", by=f"node{i}"), settings, nc)
        for i in range(3)
    ]
    tap = await EventTap(nc, settings).start()

    # Three nodes start at once: every store is imported by exactly one of them.
    rounds = await asyncio.gather(*(importer.import_at_startup(folder, node) for node in nodes))
    imported = [o.session_id for outcomes in rounds for o in outcomes if o.imported]
    assert sorted(imported) == sorted(stores)
    for outcomes in rounds:
        broken = next(o for o in outcomes if o.source.name == "broken.sqlite")
        assert not broken.imported and "not a readable SQLite store" in broken.detail
    registry = nodes[0]
    for sid, store in stores.items():
        restored = await registry.vault.restore(sid)  # sound, linked, version 1, byte for byte
        assert restored is not None and (restored.version, restored.store, restored.skipped) == (1, store, [])
        assert [v["version"] for v in await registry.vault.versions(sid)] == [1]
        assert await owner_entry(registry, sid) == Ownership()
        ledger = await registry.ledger.find_one({"_id": sid})
        assert ledger["state"] == "done" and ledger["result"] == "imported"
        assert ledger["sha256"] == hashlib.sha256(store).hexdigest()
    await wait_until(lambda: all(tap.states(sid) == ["created"] for sid in stores), 5, what="created events")

    # A restart imports nothing, without even reading the files.
    again = await importer.import_at_startup(folder, nodes[1])
    assert [o.known for o in again if o.session_id in stores] == [True] * 3
    assert not any(o.imported for o in again)

    # A session deleted after its import stays deleted.
    await registry.sessions.remove("phone0")
    await registry.vault.destroy("phone0")
    await registry.kv.delete(OWN + "phone0")
    assert not any(o.imported for o in await importer.import_at_startup(folder, nodes[2]))
    assert await registry.sessions.get("phone0") is None and not await registry.vault.exists("phone0")
    await asyncio.sleep(0.2)
    assert all(tap.states(sid) == ["created"] for sid in stores)
    await tap.stop()


async def test_an_import_left_unfinished_is_resumed_once_its_claim_is_stale(settings, nc, db, tmp_path) -> None:
    registry = await with_kv(registry_for(settings, nc, db, by="node-b"), settings, nc)
    folder = tmp_path / "import"
    folder.mkdir()
    store = sim_store(folder / "erin.db")
    # The importer that claimed `erin` saved its credentials and died before the session.
    claimed = {"_id": "erin", "state": "importing", "claim": "c1", "source": "x", "by": "node-a"}
    await registry.ledger.insert_one({**claimed, "sha256": hashlib.sha256(store).hexdigest(), "claimed_at": utcnow()})
    await registry.vault.save("erin", importer.IMPORT_TOKEN, store)

    [busy] = await importer.import_at_startup(folder, registry)  # its claim is fresh: hands off
    assert not busy.imported and "being imported by node-a right now" in busy.detail
    assert await registry.sessions.get("erin") is None

    stale = utcnow() - importer.CLAIM_TTL - timedelta(seconds=1)
    await registry.ledger.update_one({"_id": "erin"}, {"$set": {"claimed_at": stale}})
    sim_store(folder / "erin.db", generation=2)  # a live store moved on meanwhile
    [resumed] = await importer.import_at_startup(folder, registry)
    assert resumed.imported and resumed.detail == "resumed an unfinished import"
    assert (await registry.sessions.get("erin"))["state"] == "created"
    assert await owner_entry(registry, "erin") == Ownership()
    restored = await registry.vault.restore("erin")
    assert restored is not None and restored.store == store and len(await registry.vault.versions("erin")) == 1
    assert (await registry.ledger.find_one({"_id": "erin"}))["by"] == "node-b"


# ------------------------------------------------------------------------ Baileys folders


async def test_wactl_imports_baileys_folders_and_stores_nothing_of_a_refused_one(settings, nc, db, tmp_path) -> None:
    root = tmp_path / "auth"
    alice = write_folder(root / "alice", sessions=2)
    waha = write_folder(root / waha_name(), "15550002222:3@s.whatsapp.net")
    # Evolution API v2: key files in instances/<id>/, creds in its Session table.
    evolution = root / "4b1f0a9c-2d3e-4f50-8a6b-7c8d9e0f1a2b"
    write_folder(evolution, "15550003333:4@s.whatsapp.net")
    sessions_export = tmp_path / "sessions.json"
    creds_text = (evolution / "creds.json").read_text()
    sessions_export.write_text(json.dumps([{"sessionId": evolution.name, "creds": json.dumps(creds_text)}]))
    (evolution / "creds.json").unlink()
    forged = root / "forged"
    write_folder(forged)
    creds = json.loads((forged / "creds.json").read_text())
    creds["account"]["deviceSignature"] = creds["account"]["accountSignature"]
    (forged / "creds.json").write_text(json.dumps(creds))
    truncated = root / "truncated"
    write_folder(truncated)
    (truncated / "creds.json").write_text(creds_text[:100])
    empty = root / "empty"
    empty.mkdir()
    registry = await with_kv(registry_for(settings, nc, db, "whatsmeow_device"), settings, nc)

    async def wactl_import(*folders: Path) -> tuple[int, dict[str, str], str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.wactl", "import", "baileys", *map(str, folders),
            "--evolution-sessions", str(sessions_export),
            cwd=REPO_ROOT, env=settings_env(settings),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        lines = {Path(line.split(": ", 2)[1].split(" -> ")[0]).name: line for line in out.decode().splitlines()}
        assert "Traceback" not in err.decode()
        return proc.returncode or 0, lines, err.decode().strip()

    code, lines, summary = await wactl_import(root / "alice", root / waha_name(), evolution, forged, truncated, empty)
    assert (code, summary) == (1, "3 of 6 folder(s) imported")
    assert lines["alice"].startswith(f"imported: {root / 'alice'} -> session alice (credential version 1, ")
    assert lines["alice"].endswith(
        f"; from Baileys: {alice.jid}, 4 pre-keys, 1 app-state keys, 1 contact identities; "
        "left out (whatsmeow re-establishes them): 2 Signal sessions)"
    )
    assert "-> session sales (" in lines[waha_name()]
    assert f"-> session {evolution.name} (" in lines[evolution.name]
    assert lines["forged"] == (
        f"skipped: {forged}: not a usable Baileys auth folder: the device signature does not verify under the identity key"
    )
    assert "not a usable Baileys auth folder: creds.json is not valid JSON (" in lines["truncated"]
    assert "not a usable Baileys auth folder: no creds.json in " in lines["empty"]

    for sid, jid in (("alice", alice.jid), ("sales", waha.jid), (evolution.name, "15550003333:4@s.whatsapp.net")):
        doc = await registry.sessions.get(sid)
        assert doc is not None and doc["state"] == "created"
        assert await owner_entry(registry, sid) == Ownership()
        restored = await registry.vault.restore(sid)  # sealed, version 1, a sound linked store
        assert restored is not None and restored.version == 1
        assert device_jid(restored.store) == jid
    for sid in ("forged", "truncated", "empty"):  # nothing of a refused folder is stored
        assert await registry.sessions.get(sid) is None
        assert not await registry.vault.exists(sid)
        assert await registry.ledger.find_one({"_id": sid}) is None

    # A folder already imported is not imported twice.
    code, lines, summary = await wactl_import(root / "alice")
    assert (code, summary) == (1, "0 of 1 folder(s) imported")
    assert "session 'alice' already exists" in lines["alice"]
    assert [v["version"] for v in await registry.vault.versions("alice")] == [1]


def waha_name() -> str:
    return f"sales-{hashlib.md5(b'sales').hexdigest()}"


def device_jid(store: bytes) -> str:
    with tempfile.NamedTemporaryFile(suffix=".db") as tmp:
        Path(tmp.name).write_bytes(store)
        db = sqlite3.connect(tmp.name)
        try:
            return db.execute("SELECT jid FROM whatsmeow_device").fetchone()[0]
        finally:
            db.close()


async def test_startup_import_takes_baileys_folders_beside_stores_once(settings, nc, db, tmp_path) -> None:
    folder = tmp_path / "import"
    write_folder(folder / "bob")
    (folder / "carol.db").write_bytes(whatsmeow_store("15550004444:2@s.whatsapp.net"))
    write_folder(folder / "dave")  # two sources of one session: neither is guessed
    (folder / "dave.db").write_bytes(whatsmeow_store("15550005555:2@s.whatsapp.net"))
    (folder / "notes").mkdir()  # a folder without creds.json is not a Baileys folder
    registry = await with_kv(registry_for(settings, nc, db, "whatsmeow_device"), settings, nc)

    outcomes = {o.source.name: o for o in await importer.import_at_startup(folder, registry)}
    assert sorted(outcomes) == ["bob", "carol.db", "dave", "dave.db"]
    assert outcomes["bob"].imported and outcomes["carol.db"].imported
    assert "dave.db, dave all give session id 'dave'" in outcomes["dave"].detail
    assert await registry.vault.exists("bob") and not await registry.vault.exists("dave")
    again = await importer.import_at_startup(folder, registry)
    assert [o.known for o in again if o.session_id in ("bob", "carol")] == [True, True]
