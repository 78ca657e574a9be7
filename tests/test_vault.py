"""The credential vault against a real MongoDB-wire server."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from bson import Binary

from services.common.cluster import fence_token
from services.common.config import Settings
from services.credentials import vault as v
from services.credentials.vault import CredentialVault, Keyring, VaultError, new_key_entry

TABLE = "sim_device"


def make_store(tmp_path: Path, generation: int, padding: int = 0) -> bytes:
    path = tmp_path / f"store-{generation}-{padding}.db"
    if path.exists():
        return path.read_bytes()
    db = sqlite3.connect(path)
    db.execute(f"CREATE TABLE {TABLE} (jid TEXT, device_id TEXT, secret TEXT, key_generation INTEGER, pad BLOB)")
    db.execute(f"INSERT INTO {TABLE} VALUES ('1@s.whatsapp.net', 'd1', 's', ?, randomblob(?))", (generation, padding))
    db.commit()
    db.close()
    return path.read_bytes()


def token(n: int) -> str:
    return fence_token(1, n)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.parse(new_key_entry("k1"))


async def test_save_and_restore_the_newest_version_keeping_three(db, tmp_path, keyring) -> None:
    vault = CredentialVault(db, keyring, TABLE)
    last = None
    for generation in range(1, 6):
        last = await vault.save("alice", token(1), make_store(tmp_path, generation), last=last)
        assert last is not None and last.version == generation
    versions = await vault.versions("alice")
    assert [x["version"] for x in versions] == [3, 4, 5]
    assert all(x["key_id"] == "k1" and "blob" not in x for x in versions)
    restored = await vault.restore("alice")
    assert restored is not None and restored.version == 5 and restored.skipped == []
    assert restored.store == make_store(tmp_path, 5)


async def test_unchanged_store_is_not_written_again(db, tmp_path, keyring) -> None:
    vault = CredentialVault(db, keyring, TABLE)
    first = await vault.save("bob", token(1), make_store(tmp_path, 1))
    again = await vault.save("bob", token(1), make_store(tmp_path, 1), last=first)
    assert again is first and len(await vault.versions("bob")) == 1


async def test_damaged_latest_version_falls_back_to_the_previous_one(db, tmp_path, keyring) -> None:
    vault = CredentialVault(db, keyring, TABLE)
    last = await vault.save("carol", token(1), make_store(tmp_path, 1))
    await vault.save("carol", token(1), make_store(tmp_path, 2), last=last)
    doc = await db["credentials"].find_one({"_id": "carol"})
    blob = bytearray(doc["versions"][-1]["blob"])
    blob[10] ^= 0xFF
    await db["credentials"].update_one({"_id": "carol"}, {"$set": {"versions.1.blob": Binary(bytes(blob))}})
    restored = await vault.restore("carol")
    assert restored is not None and restored.version == 1
    assert restored.skipped == [(2, "does not decrypt (damaged, or the key changed)")]


async def test_a_store_without_a_device_is_not_a_usable_version(db, tmp_path, keyring) -> None:
    empty = sqlite3.connect(tmp_path / "empty.db")
    empty.execute(f"CREATE TABLE {TABLE} (jid TEXT)")
    empty.commit()
    empty.close()
    vault = CredentialVault(db, keyring, TABLE)
    last = await vault.save("dave", token(1), make_store(tmp_path, 1))
    await vault.save("dave", token(1), (tmp_path / "empty.db").read_bytes(), last=last)
    restored = await vault.restore("dave")
    assert restored is not None and restored.version == 1 and "no device" in restored.skipped[0][1]


async def test_wrong_key_is_a_clear_error_and_destroys_nothing(db, tmp_path, keyring) -> None:
    await CredentialVault(db, keyring, TABLE).save("erin", token(1), make_store(tmp_path, 1))
    impostor = Keyring.parse(new_key_entry("k1"))  # same id, different key
    with pytest.raises(VaultError, match="decrypts with the configured keys"):
        await CredentialVault(db, impostor, TABLE).restore("erin")
    with pytest.raises(VaultError, match="not configured"):
        await CredentialVault(db, Keyring.parse(new_key_entry("k9")), TABLE).restore("erin")
    assert len(await CredentialVault(db, keyring, TABLE).versions("erin")) == 1


async def test_writes_of_an_older_owner_are_refused(db, tmp_path, keyring) -> None:
    vault = CredentialVault(db, keyring, TABLE)
    await vault.save("fay", token(5), make_store(tmp_path, 1))
    await vault.fence("fay", token(9))  # a newer owner claimed the session
    assert await vault.save("fay", token(5), make_store(tmp_path, 2)) is None
    assert not await vault.destroy("fay", token(5))
    assert (await vault.restore("fay")).version == 1
    assert await vault.save("fay", token(9), make_store(tmp_path, 3)) is not None
    assert await vault.destroy("fay", token(9))
    assert await vault.restore("fay") is None


async def test_rotate_key_reseals_every_version_and_all_still_restore(db, tmp_path) -> None:
    old = Keyring.parse(new_key_entry("old"))
    last = None
    for generation in (1, 2):
        last = await CredentialVault(db, old, TABLE).save("gus", token(1), make_store(tmp_path, generation), last=last)
    await CredentialVault(db, old, TABLE).save("hal", token(1), make_store(tmp_path, 7))
    both = Keyring({**old.keys, "new": Keyring.parse(new_key_entry("new")).keys["new"]}, "new")
    assert await CredentialVault(db, both, TABLE).rotate() == (2, 3)
    only_new = Keyring({"new": both.keys["new"]}, "new")
    for sid, generation in (("gus", 2), ("hal", 7)):
        restored = await CredentialVault(db, only_new, TABLE).restore(sid)
        assert restored is not None and restored.store == make_store(tmp_path, generation)
    assert {x["key_id"] for x in await CredentialVault(db, only_new, TABLE).versions("gus")} == {"new"}


async def test_large_stores_go_to_gridfs_and_are_cleaned_up(db, tmp_path, keyring, monkeypatch) -> None:
    monkeypatch.setattr(v, "INLINE_LIMIT", 64 * 1024)
    vault = CredentialVault(db, keyring, TABLE)
    last = None
    for generation in range(1, 5):
        last = await vault.save("ivy", token(1), make_store(tmp_path, generation, padding=200_000), last=last)
    versions = await vault.versions("ivy")
    assert all("gridfs_id" in x for x in versions)
    assert await db["credential_blobs.files"].count_documents({}) == 3
    assert (await vault.restore("ivy")).store == make_store(tmp_path, 4, padding=200_000)
    await vault.destroy("ivy", token(1))
    assert await db["credential_blobs.files"].count_documents({}) == 0


def test_keyring_parsing_rejects_bad_entries() -> None:
    with pytest.raises(VaultError, match="no vault key"):
        Keyring.parse("  \n# comment\n")
    with pytest.raises(VaultError, match="32 bytes"):
        Keyring.parse("k1:AAAA")
    ring = Keyring.parse(f"{new_key_entry('a')},{new_key_entry('b')}")
    assert ring.active == "a" and set(ring.keys) == {"a", "b"}


def test_an_empty_key_file_setting_means_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # WA_VAULT_KEY_FILE= (as a compose file or shell often leaves it) must not read "." as a key file.
    monkeypatch.setenv("WA_VAULT_KEY_FILE", "")
    settings = Settings()
    assert settings.vault_key_file is None
    (tmp_path / v.DEV_KEY_FILE).write_text(new_key_entry("dev"))
    assert Keyring.load("", settings.vault_key_file, tmp_path).active == "dev"
