"""Migration: existing WhatsApp credential stores (neonize/whatsmeow or simulator SQLite files,
and Baileys auth folders) become sessions. Used by `wactl import PATH`, `wactl import
baileys DIR...` and, when WA_IMPORT_DIR is set, by every session-actor node at startup
(`import_at_startup`, which takes both kinds).

One store file, or one Baileys folder, gives one session:

1. its id comes from the file or folder name (`session_id_for`); a name that cannot be
   made a valid id is refused, and so are several sources that give the same id;
2. a store file is copied safely (`copy_stores`, below); a Baileys folder is read, its
   keys and signatures checked and a whatsmeow store built from them
   (`baileys_import.store_from_folder`); either is then checked like a restored version
   (`vault.check_store`: a sound SQLite file holding a device row);
3. the copy becomes credential version 1 (`CredentialVault.save` under IMPORT_TOKEN, which
   sorts before every owner's fencing token: the first real owner fences above it). The
   vault refuses to write where credentials exist; an import never replaces anything;
4. the session is registered as the session API creates one (`register_session`): its
   document (refused when it exists), a claimable `own.<sid>` entry, a `created` status
   event. Credentials go in first, so the node that claims the session always finds them.

Reading a store safely: the file may be the live store of a running neonize process, this
one included. The copy is taken in a child process (one per batch, running `store_copy`)
with Python's sqlite3: read-only, in one read transaction over every page (`serialize`),
waiting up to BUSY_TIMEOUT for a writer's commit. A separate process takes part in SQLite's
ordinary cross-process locking with any writer, the Go library of the importing process
included, and the importing process never opens a store with any SQLite: the trap is two
SQLite copies in one process, whose POSIX locks cancel each other. (The importing process
does use Python's sqlite3 on private temporary files no Go client opens: the checks, and
the stores built from Baileys folders.) A store whose writer died
mid-transaction (a hot journal) cannot be opened read-only; that file and its journal are
copied to a private directory where SQLite rolls the transaction back. The source files
are never written.

Idempotency: the `imports` collection is a ledger with one entry per session id,
{_id: sid, state: importing | done, result, source, sha256, by, claimed_at}. An importer
claims the id by inserting the entry (unique `_id`) before it writes anything. The startup
import skips every id the ledger knows, so a second node or a restart imports nothing twice,
and a session deleted after its import does not come back. A claim left `importing` by an
importer that died is taken over after CLAIM_TTL and the import resumes: credentials with
the dead attempt's checksum, and a session created after its claim, count as its work.
`wactl import` (a person asking) may import an id again once its session and credentials
are gone.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sys
import tempfile
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from contracts.envelope import ContractError
from contracts.internal import Ownership
from contracts.types import MAX_LABEL, SESSION_ID_PATTERN, utcnow
from services.common import registration
from services.common.bus import EventPublisher, encode, new_id
from services.common.cluster import OWN
from services.common.sessions import SessionStore
from services.credentials import baileys_auth, baileys_import, store_copy
from services.credentials.linked_device import Unusable
from services.credentials.vault import BadVersion, CredentialVault, check_store

log = structlog.get_logger(__name__)

STORE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
LEDGER = "imports"
# Owner token of imported credentials: "" sorts before every fencing token.
IMPORT_TOKEN = ""
# A claim older than this whose importer never finished is taken over.
CLAIM_TTL = timedelta(seconds=60)
# How long a copy waits for a writer's commit (SQLite busy timeout).
BUSY_TIMEOUT = 5.0
# Stores copied per child process (and held in memory at once).
BATCH = 32
_SID = re.compile(SESSION_ID_PATTERN)


class Refused(Exception):
    """This store is not imported; the message says why."""


class _Known(Refused):
    """The ledger has handled this session id before (startup import: nothing to do)."""


@dataclass(frozen=True)
class Outcome:
    source: Path
    session_id: str | None
    imported: bool
    detail: str
    # Skipped because an earlier import handled it: the startup import's normal case.
    known: bool = False

    def line(self) -> str:
        if self.imported:
            return f"imported: {self.source} -> session {self.session_id} ({self.detail})"
        return f"skipped: {self.source}: {self.detail}"


@dataclass
class Registry:
    """Where imported sessions go: the very stores the session API and the actors use."""

    sessions: SessionStore
    vault: CredentialVault
    kv: KeyValue  # the leases bucket (own.<sid>)
    events: EventPublisher
    ledger: AsyncCollection
    by: str  # who imports, for the ledger: a node id, or wactl@host


# ------------------------------------------------------------------------ stores on disk


def source_name(path: Path) -> str:
    """What names a source's session: a store file's name without the suffix, a Baileys
    folder's name (`baileys_auth.folder_name`)."""
    return baileys_auth.folder_name(path) if path.is_dir() else path.stem


def session_id_for(path: Path) -> str:
    """The session id a store file or Baileys folder gives: `source_name`, made a valid id.

    Accents are dropped (josé -> jose) and every run of other characters becomes one `-`.
    Refused when nothing usable is left, or the id would be longer than 64 characters
    (cutting it could merge two numbers into one session).
    """
    plain = unicodedata.normalize("NFKD", source_name(path)).encode("ascii", "ignore").decode()
    sid = re.sub(r"[^A-Za-z0-9_-]+", "-", plain).strip("-")
    if not sid:
        raise Refused(
            f"cannot derive a session id from the name {path.name!r} (no letters, digits, _ or - in it); "
            "rename it"
        )
    if not _SID.match(sid):
        raise Refused(
            f"the name {path.name!r} gives a {len(sid)}-character session id, at most 64 are allowed; "
            "rename it"
        )
    return sid


def find_stores(path: Path) -> list[Path]:
    """A file as given, or the store files of a folder (not recursive), sorted."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in STORE_SUFFIXES)
    return [path]


@dataclass(frozen=True)
class StoreCopy:
    data: bytes | None
    problem: str | None = None
    note: str | None = None


async def copy_stores(paths: list[Path]) -> list[StoreCopy]:
    """Consistent copies of store files that may be live (see the module doc)."""
    if not paths:
        return []
    with tempfile.TemporaryDirectory(prefix="wa-import-") as tmp:
        # `-I` with the file's path: a fresh interpreter that imports nothing of the
        # project (not even package __init__s) and ignores PYTHON* variables.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            store_copy.__file__,
            tmp,
            str(BUSY_TIMEOUT),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(json.dumps([str(p) for p in paths]).encode())
        lines = {entry["i"]: entry for entry in map(json.loads, out.decode().splitlines())}
        copies = []
        for index in range(len(paths)):
            entry = lines.get(index)
            if entry is None:
                why = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
                copies.append(StoreCopy(None, f"not read: the copying process failed ({why[0]})"))
            elif "error" in entry:
                copies.append(StoreCopy(None, entry["error"]))
            else:
                copies.append(StoreCopy((Path(tmp) / str(index)).read_bytes(), note=entry["note"]))
        return copies


async def read_sources(paths: list[Path], evolution_creds: dict[str, dict[str, Any]]) -> list[StoreCopy]:
    """The store each source gives: a store file copied, a Baileys folder converted.

    `evolution_creds`: creds by folder name, for Evolution API v2 folders without creds.json.
    """
    files = [i for i, path in enumerate(paths) if not path.is_dir()]
    stores = dict(zip(files, await copy_stores([paths[i] for i in files]), strict=True))
    for index, path in enumerate(paths):
        if index in stores:
            continue
        try:  # reading, signature checks and building: off the event loop
            store, note = await asyncio.to_thread(
                baileys_import.store_from_folder, path, evolution_creds.get(path.name)
            )
        except Unusable as exc:
            stores[index] = StoreCopy(None, f"not a usable Baileys auth folder: {exc}")
        except OSError as exc:
            stores[index] = StoreCopy(None, f"cannot read: {exc}")
        else:
            stores[index] = StoreCopy(store, note=note)
    return [stores[i] for i in range(len(paths))]


# -------------------------------------------------------------------------- registering


async def register_session(
    registry: Registry, sid: str, label: str, resuming: dict[str, Any] | None = None
) -> None:
    """Create the session as the session API does: document, claimable `own.<sid>`, event.

    Refused when the session exists, unless `resuming` (the ledger entry of a dead import)
    shows this import's earlier attempt created it.
    """
    try:
        await registration.register(registry.sessions, registry.kv, registry.events, sid, label)
        return
    except ContractError:  # conflict
        doc = await registry.sessions.get(sid)
        if resuming is None or doc is None or doc["created_at"] < resuming["claimed_at"]:
            raise Refused(f"session {sid!r} already exists; an import never replaces a session") from None
    # The dead attempt created the document; finish what it may have left undone.
    try:
        await registry.kv.create(OWN + sid, encode(Ownership()))
    except KeyWrongLastSequenceError:
        return  # it registered it; it may be owned by now
    await registration.announce(registry.events, sid, doc)


async def _claim(
    registry: Registry, sid: str, source: Path, sha256: str, again: bool
) -> tuple[str, dict[str, Any] | None]:
    """Take the ledger entry of `sid`: (claim id, a dead attempt's entry to resume or None).

    `again`: take an entry whose import is done (wactl: a person asks to import again).
    """
    now = utcnow()
    claim = new_id()
    entry = {
        "state": "importing",
        "claim": claim,
        "source": str(source),
        "sha256": sha256,
        "by": registry.by,
        "claimed_at": now,
    }
    try:
        await registry.ledger.insert_one({"_id": sid, **entry})
        return claim, None
    except DuplicateKeyError:
        old = await registry.ledger.find_one({"_id": sid})
    if old is None:
        raise Refused("the import ledger changed meanwhile; try again")
    importing = old["state"] == "importing"
    if importing and old["claimed_at"] > now - CLAIM_TTL:
        raise Refused(f"being imported by {old['by']} right now")
    if not importing and not again:
        when = old["claimed_at"].strftime("%Y-%m-%d %H:%M:%S")
        raise _Known(f"imported before ({old.get('result')}; {old['by']}, {when} UTC)")
    taken = await registry.ledger.update_one(
        {"_id": sid, "state": old["state"], "claim": old.get("claim")}, {"$set": entry}
    )
    if not taken.modified_count:
        raise Refused("being imported by another importer right now")
    if importing:
        log.warning("resuming an import its importer left unfinished", session=sid, by=old["by"])
        return claim, old
    return claim, None


async def _settle(registry: Registry, sid: str, claim: str, result: str) -> None:
    now = utcnow()
    done: dict[str, Any] = {"state": "done", "result": result, "done_at": now}
    if result == "imported":
        done["imported_at"] = now  # kept when a later `wactl import` of the id is refused
    await registry.ledger.update_one({"_id": sid, "claim": claim}, {"$set": done})


async def _import_one(
    registry: Registry, source: Path, sid: str, store: bytes, label: str, again: bool
) -> str:
    """Credentials first, then the session; returns what to report. Raises Refused."""
    sha256 = hashlib.sha256(store).hexdigest()
    claim, resuming = await _claim(registry, sid, source, sha256, again)
    vault = registry.vault
    try:
        if resuming is None and await registry.sessions.get(sid) is not None:
            raise Refused(f"session {sid!r} already exists; an import never replaces a session")
        # Checked first: the vault adds versions for a caller whose token equals the stored
        # one, and "" is the token of every import. The ledger claim keeps importers of this
        # id apart; an owner's fence makes `save` refuse.
        saved = None
        if not await vault.exists(sid):
            saved = await vault.save(sid, IMPORT_TOKEN, store)
        if saved is None and not (
            resuming is not None and any(v["sha256"] == resuming["sha256"] for v in await vault.versions(sid))
        ):
            raise Refused(f"session {sid!r} already has credentials in the vault; an import never replaces them")
        try:
            await register_session(registry, sid, label, resuming)
        except Refused:
            # Created meanwhile by someone else: take back what this import wrote (fenced:
            # only while no owner has touched it).
            if not await vault.destroy(sid, IMPORT_TOKEN):
                log.error("imported credentials could not be taken back", session=sid)
            raise
    except Refused as exc:
        await _settle(registry, sid, claim, f"refused: {exc}")
        raise
    # Anything else (servers unreachable) leaves the claim to expire: a later import resumes.
    await _settle(registry, sid, claim, "imported")
    return f"credential version 1, {len(store)} bytes" if saved is not None else "resumed an unfinished import"


# ------------------------------------------------------------------------------ batches


async def import_stores(
    registry: Registry,
    paths: Iterable[Path],
    *,
    label_from_filename: bool = False,
    startup: bool = False,
    report: Callable[[Outcome], None] | None = None,
    evolution_creds: dict[str, dict[str, Any]] | None = None,
) -> list[Outcome]:
    """Import each source (a store file, or a folder: a Baileys auth folder); one Outcome per
    path, in order. A failing source never stops the rest.

    `startup`: ids the ledger knows are skipped without reading their files.
    `evolution_creds`: see `read_sources`.
    """
    paths = list(paths)
    outcomes: dict[int, Outcome] = {}

    def done(index: int, outcome: Outcome) -> None:
        outcomes[index] = outcome
        if report is not None:
            report(outcome)

    sids: dict[int, str] = {}
    for index, path in enumerate(paths):
        try:
            sids[index] = session_id_for(path)
        except Refused as exc:
            done(index, Outcome(path, None, False, str(exc)))
    by_sid: dict[str, list[int]] = {}
    for index, sid in sids.items():
        by_sid.setdefault(sid, []).append(index)
    for sid, indexes in by_sid.items():
        if len(indexes) > 1:  # which file is the account? never guess
            names = ", ".join(paths[i].name for i in indexes)
            for index in indexes:
                del sids[index]
                done(index, Outcome(paths[index], sid, False, f"{names} all give session id {sid!r}; rename them"))
    if startup and sids:
        known = {
            doc["_id"]: doc
            async for doc in registry.ledger.find({"_id": {"$in": list(sids.values())}, "state": "done"})
        }
        for index, sid in list(sids.items()):
            if sid in known:
                del sids[index]
                done(index, Outcome(paths[index], sid, False, f"imported before ({known[sid].get('result')})", True))

    pending = sorted(sids)
    for start in range(0, len(pending), BATCH):
        batch = pending[start : start + BATCH]
        copies = await read_sources([paths[i] for i in batch], evolution_creds or {})
        for index, copy in zip(batch, copies, strict=True):
            path, sid = paths[index], sids[index]
            try:
                if copy.data is None:
                    raise Refused(copy.problem or "not read")
                try:
                    check_store(copy.data, registry.vault.device_table)
                except BadVersion as exc:
                    raise Refused(f"not a usable store: {exc}") from None
                label = source_name(path)[:MAX_LABEL] if label_from_filename else ""
                detail = await _import_one(registry, path, sid, copy.data, label, again=not startup)
            except _Known as exc:
                done(index, Outcome(path, sid, False, str(exc), known=True))
            except Refused as exc:
                done(index, Outcome(path, sid, False, str(exc)))
            else:
                done(index, Outcome(path, sid, True, detail + (f"; {copy.note}" if copy.note else "")))
    return [outcomes[i] for i in range(len(paths))]


async def import_at_startup(directory: Path, registry: Registry) -> list[Outcome]:
    """The node's startup import of WA_IMPORT_DIR (store files and Baileys auth folders in it);
    logs, never raises (the node must start)."""
    try:
        if not directory.is_dir():  # noqa: ASYNC240 - one stat
            log.warning("WA_IMPORT_DIR is not a folder; nothing imported", path=str(directory))
            return []
        sources = find_stores(directory) + baileys_import.find_folders(directory)
        outcomes = await import_stores(registry, sources, startup=True)
    except Exception:
        log.exception("startup import failed; it is retried at the next start", path=str(directory))
        return []
    for outcome in outcomes:
        if outcome.imported:
            log.info("store imported", source=str(outcome.source), session=outcome.session_id)
        elif not outcome.known:
            log.warning("store not imported", source=str(outcome.source), reason=outcome.detail)
    log.info(
        "startup import done",
        path=str(directory),
        imported=sum(o.imported for o in outcomes),
        known=sum(o.known for o in outcomes),
        refused=sum(not o.imported and not o.known for o in outcomes),
    )
    return outcomes
