"""The credential vault: WhatsApp credential stores, encrypted and versioned in MongoDB.

One document per session in `credentials`:

    {_id: sid, owner_token, next_version,
     versions: [{version, key_id, nonce, sha256, size, created_at, blob | gridfs_id}, ...]}

- A version is the whole SQLite store, zstd-compressed, then sealed with AES-256-GCM under
  the active key. The associated data binds it to its session, version and key, so a blob
  copied to another session or version does not decrypt. `sha256` is of the plain store.
- The newest 3 versions are kept. Blobs over `INLINE_LIMIT` go to GridFS (the document
  holds all three versions and must stay far below MongoDB's 16 MB).
- Writes are fenced: refused once a newer owner has raised `owner_token`.
- Restore tries the newest version first and falls back to older ones when a version is
  damaged (does not decrypt, wrong checksum, not a sound SQLite store, no device row).
  When no version decrypts at all, the key is the likely culprit: that is an error, and
  nothing is destroyed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard
from bson import Binary
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from gridfs import AsyncGridFSBucket
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from contracts.types import utcnow
from services.common.mongo import GroupCommit, GroupRead
from services.common.offload import off_loop_if_large

KEEP_VERSIONS = 3
# Where `make run` keeps a generated key (local development only), under WA_DATA_DIR.
DEV_KEY_FILE = "vault.keys"
INLINE_LIMIT = 4 * 1024 * 1024
KEY_SAMPLES = 3


class VaultError(Exception):
    """Credentials exist but cannot be used; nothing was destroyed."""


class BadVersion(Exception):
    """One stored version is damaged."""


# ---------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class Keyring:
    """AES-256 keys by id; the first one seals new versions, all of them open old ones."""

    keys: dict[str, bytes]
    active: str

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """`id:base64key` entries separated by commas or new lines; the first is active."""
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for raw in text.replace(",", "\n").splitlines():
            entry = raw.strip()
            if not entry or entry.startswith("#"):
                continue
            key_id, sep, encoded = entry.partition(":")
            if not sep or not key_id:
                raise VaultError(f"vault key entry must look like 'id:base64', got {entry[:12]!r}...")
            key = base64.b64decode(encoded.strip(), validate=True)
            if len(key) != 32:
                raise VaultError(f"vault key {key_id!r} must be 32 bytes (AES-256), got {len(key)}")
            keys[key_id] = key
            order.append(key_id)
        if not order:
            raise VaultError("no vault key configured: set WA_VAULT_KEYS or WA_VAULT_KEY_FILE")
        return cls(keys, order[0])

    @classmethod
    def load(cls, keys: str, key_file: Path | None, data_dir: Path | None = None) -> Keyring:
        """From WA_VAULT_KEYS, else WA_VAULT_KEY_FILE, else the dev key `make run` generates."""
        if keys.strip():
            return cls.parse(keys)
        dev_file = data_dir / DEV_KEY_FILE if data_dir is not None else None
        for candidate in (key_file, dev_file):
            if candidate is not None and candidate.exists():
                return cls.parse(candidate.read_text())
        raise VaultError("no vault key configured: set WA_VAULT_KEYS or WA_VAULT_KEY_FILE")


def new_key_entry(key_id: str) -> str:
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


# ----------------------------------------------------------------------- sealing


def _aad(sid: str, version: int, key_id: str) -> bytes:
    return f"{sid}|{version}|{key_id}".encode()


def seal(keyring: Keyring, sid: str, version: int, store: bytes) -> dict[str, Any]:
    nonce = os.urandom(12)
    compressed = zstandard.ZstdCompressor(level=6).compress(store)
    key_id = keyring.active
    ciphertext = AESGCM(keyring.keys[key_id]).encrypt(nonce, compressed, _aad(sid, version, key_id))
    return {
        "version": version,
        "key_id": key_id,
        "nonce": Binary(nonce),
        "sha256": hashlib.sha256(store).hexdigest(),
        "size": len(store),
        "sealed_size": len(ciphertext),
        "created_at": utcnow(),
        "ciphertext": ciphertext,
    }


def open_sealed(keyring: Keyring, sid: str, meta: dict[str, Any], ciphertext: bytes) -> bytes:
    """Decrypt and check one version; raises BadVersion (damaged) or VaultError (no key)."""
    key_id = meta["key_id"]
    key = keyring.keys.get(key_id)
    if key is None:
        raise VaultError(f"version {meta['version']} is sealed with key {key_id!r}, which is not configured")
    try:
        compressed = AESGCM(key).decrypt(bytes(meta["nonce"]), ciphertext, _aad(sid, meta["version"], key_id))
    except InvalidTag:
        raise BadVersion("does not decrypt (damaged, or the key changed)") from None
    store = zstandard.ZstdDecompressor().decompress(compressed, max_output_size=256 * 1024 * 1024)
    if hashlib.sha256(store).hexdigest() != meta["sha256"]:
        raise BadVersion("checksum mismatch")
    return store


def check_store(store: bytes, device_table: str) -> None:
    """A restored store must be a sound SQLite database holding a linked device.

    Runs on a private temporary copy: never on a live store a Go client may be writing.
    """
    with tempfile.NamedTemporaryFile(suffix=".db") as tmp:
        tmp.write(store)
        tmp.flush()
        try:
            db = sqlite3.connect(f"file:{tmp.name}?mode=ro", uri=True)
            try:
                verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
                devices = db.execute(f'SELECT count(*) FROM "{device_table}"').fetchone()[0]
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            raise BadVersion(f"not a usable SQLite store: {exc}") from None
    if verdict != "ok":
        raise BadVersion(f"SQLite integrity check failed: {verdict}")
    if not devices:
        raise BadVersion("no device in the store")


# -------------------------------------------------------------------------- vault



@dataclass
class Restored:
    store: bytes
    version: int
    sha256: str
    # Versions skipped because they were damaged, newest first: (version, why).
    skipped: list[tuple[int, str]] = field(default_factory=list)


class CredentialVault:
    def __init__(self, db: AsyncDatabase, keyring: Keyring, device_table: str) -> None:
        self.collection = db["credentials"]
        self._blobs = AsyncGridFSBucket(db, bucket_name="credential_blobs")
        # A node taking over many sessions fences and restores them all at once.
        self._fences = GroupCommit(self.collection)
        self._reads = GroupRead(self.collection)
        self.keyring = keyring
        self.device_table = device_table

    async def fence(self, sid: str, token: str) -> None:
        await self._fences.apply({"_id": sid}, {"$max": {"owner_token": token}})

    async def key_problems(self) -> list[str]:
        """Keys that stored credentials are sealed with and this keyring cannot open (absent,
        or the same id with other key bytes), one line each; empty when every key works.

        Each key is tried on up to KEY_SAMPLES versions sealed with it: one damaged version
        must not make a good key look wrong.
        """
        problems = []
        # Not distinct("versions.key_id"): the dev server does not look into arrays there.
        in_use = await self.collection.aggregate([{"$unwind": "$versions"}, {"$group": {"_id": "$versions.key_id"}}])
        for key_id in sorted([row["_id"] async for row in in_use]):
            if key_id not in self.keyring.keys:
                problems.append(f"key {key_id!r} seals stored credentials but is not configured")
                continue
            samples = self.collection.find(
                {"versions.key_id": key_id}, {"versions": {"$elemMatch": {"key_id": key_id}}}
            ).limit(KEY_SAMPLES)
            tried = 0
            async for doc in samples:
                meta = doc["versions"][0]
                tried += 1
                try:
                    open_sealed(self.keyring, doc["_id"], meta, await self._ciphertext(meta))
                    break
                except BadVersion:
                    continue
            else:
                if tried:
                    problems.append(f"key {key_id!r} does not open credentials sealed with {key_id!r}: another key's bytes")
        return problems

    async def exists(self, sid: str) -> bool:
        return await self.collection.count_documents({"_id": sid, "versions.0": {"$exists": True}}, limit=1) > 0

    def _open_checked(self, sid: str, meta: dict[str, Any], ciphertext: bytes) -> bytes:
        store = open_sealed(self.keyring, sid, meta, ciphertext)
        check_store(store, self.device_table)
        return store

    def _resealed(self, sid: str, meta: dict[str, Any], ciphertext: bytes) -> dict[str, Any]:
        return seal(self.keyring, sid, meta["version"], open_sealed(self.keyring, sid, meta, ciphertext))

    async def restore(self, sid: str) -> Restored | None:
        """The newest sound version, or None when the session has no credentials."""
        doc = await self._reads.get(sid)
        versions = sorted((doc or {}).get("versions", []), key=lambda v: v["version"], reverse=True)
        if not versions:
            return None
        skipped: list[tuple[int, str]] = []
        for meta in versions:
            try:
                ciphertext = await self._ciphertext(meta)
                store = await off_loop_if_large(len(ciphertext), self._open_checked, sid, meta, ciphertext)
            except BadVersion as exc:
                skipped.append((meta["version"], str(exc)))
                continue
            return Restored(store, meta["version"], meta["sha256"], skipped)
        if all("decrypt" in why for _, why in skipped):
            raise VaultError(
                f"no credential version of {sid!r} decrypts with the configured keys "
                f"(active key {self.keyring.active!r}); is the right key configured? Nothing was destroyed."
            )
        raise VaultError(f"every credential version of {sid!r} is damaged: {skipped}")

    async def save(self, sid: str, token: str, store: bytes, last: Restored | None = None) -> Restored | None:
        """Store a new version unless it equals the newest one; None when fenced out."""
        digest = hashlib.sha256(store).hexdigest()
        if last is not None and last.sha256 == digest:
            return last
        doc = await self.collection.find_one({"_id": sid}, {"next_version": 1, "owner_token": 1})
        if doc is not None and doc.get("owner_token", "") > token:
            return None
        version = (doc or {}).get("next_version", 1)
        sealed = await off_loop_if_large(len(store), seal, self.keyring, sid, version, store)
        ciphertext = sealed.pop("ciphertext")
        if len(ciphertext) > INLINE_LIMIT:
            sealed["gridfs_id"] = await self._blobs.upload_from_stream(
                f"{sid}.v{version}", ciphertext, metadata={"session_id": sid, "version": version}
            )
        else:
            sealed["blob"] = Binary(ciphertext)
        try:
            result = await self.collection.update_one(
                {"_id": sid, "owner_token": {"$lte": token}, "next_version": {"$in": [version, None]}},
                {
                    "$set": {"owner_token": token, "next_version": version + 1},
                    "$push": {"versions": {"$each": [sealed], "$slice": -KEEP_VERSIONS}},
                },
                upsert=True,
            )
        except DuplicateKeyError:  # the filter did not match an existing document: fenced
            result = None
        if result is None or (result.matched_count == 0 and result.upserted_id is None):
            if "gridfs_id" in sealed:
                await self._blobs.delete(sealed["gridfs_id"])
            return None
        await self._drop_unreferenced_blobs(sid)
        return Restored(store, version, digest)

    async def destroy(self, sid: str, token: str | None = None) -> bool:
        """Delete every version (fenced when a token is given)."""
        query: dict[str, Any] = {"_id": sid}
        if token is not None:
            query["owner_token"] = {"$lte": token}
        result = await self.collection.delete_one(query)
        if result.deleted_count or token is None:
            await self._drop_unreferenced_blobs(sid)
        return result.deleted_count > 0 or token is None

    async def rotate(self) -> tuple[int, int]:
        """Re-seal every version under the active key; returns (sessions, versions) re-sealed.

        Runs while the system serves: each version is replaced by a positional update that
        only applies if that version is still there under its old key.
        """
        sessions = versions = 0
        async for doc in self.collection.find({"versions.key_id": {"$ne": self.keyring.active}}):
            touched = False
            for meta in doc.get("versions", []):
                if meta["key_id"] == self.keyring.active:
                    continue
                sid = doc["_id"]
                resealed = await asyncio.to_thread(self._resealed, sid, meta, await self._ciphertext(meta))
                resealed["created_at"] = meta["created_at"]
                ciphertext = resealed.pop("ciphertext")
                if "gridfs_id" in meta:
                    resealed["gridfs_id"] = await self._blobs.upload_from_stream(
                        f"{sid}.v{meta['version']}", ciphertext, metadata={"session_id": sid}
                    )
                else:
                    resealed["blob"] = Binary(ciphertext)
                result = await self.collection.update_one(
                    {"_id": sid, "versions": {"$elemMatch": {"version": meta["version"], "key_id": meta["key_id"]}}},
                    {"$set": {"versions.$": resealed}},
                )
                if result.modified_count:
                    versions += 1
                    touched = True
                    if "gridfs_id" in meta:
                        await self._blobs.delete(meta["gridfs_id"])
            sessions += touched
        return sessions, versions

    async def versions(self, sid: str) -> list[dict[str, Any]]:
        doc = await self.collection.find_one({"_id": sid}, {"versions.blob": 0})
        return (doc or {}).get("versions", [])

    async def _ciphertext(self, meta: dict[str, Any]) -> bytes:
        if "gridfs_id" in meta:
            stream = await self._blobs.open_download_stream(meta["gridfs_id"])
            return await stream.read()
        return bytes(meta["blob"])

    async def _drop_unreferenced_blobs(self, sid: str) -> None:
        doc = await self.collection.find_one({"_id": sid}, {"versions.gridfs_id": 1})
        keep = {v.get("gridfs_id") for v in (doc or {}).get("versions", [])}
        async for blob in self._blobs.find({"metadata.session_id": sid}):
            if blob._id not in keep:
                await self._blobs.delete(blob._id)
