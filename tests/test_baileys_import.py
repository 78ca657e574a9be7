"""Baileys auth folders made into whatsmeow stores (services/credentials: baileys_auth,
baileys_device, linked_device, whatsmeow_store), without servers: the format read as
Baileys writes it, the mapping onto whatsmeow's tables, and every refusal."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest

from services.credentials import baileys_auth, signal_keys, wa_proto
from services.credentials.baileys_import import store_from_folder
from services.credentials.importer import session_id_for
from services.credentials.linked_device import Unusable
from services.credentials.vault import check_store
from tests.baileys_folders import b64, buffer, key_pair, sign, write, write_folder

BAILEYS_WRITTEN = Path(__file__).parent / "data" / "baileys-7.0.0-rc14"


def rows(store: bytes, query: str) -> list[tuple[Any, ...]]:
    """Rows of a store (a copy on disk: no Go client has it open)."""
    with tempfile.NamedTemporaryFile(suffix=".db") as tmp:
        Path(tmp.name).write_bytes(store)
        db = sqlite3.connect(tmp.name)
        try:
            return db.execute(query).fetchall()
        finally:
            db.close()


DEVICE = (
    "SELECT jid, lid, registration_id, noise_key, identity_key, signed_pre_key, signed_pre_key_id,"
    " signed_pre_key_sig, adv_key, adv_details, adv_account_sig, adv_account_sig_key, adv_device_sig,"
    " platform, push_name FROM whatsmeow_device"
)


def verify_as_whatsmeow(store: bytes) -> tuple[Any, ...]:
    """The device row, its signatures checked from what whatsmeow loads: private keys only,
    public keys derived as whatsmeow derives them."""
    [device] = rows(store, DEVICE)
    (_, _, _, _, identity_priv, spk_priv, _, spk_sig, _, details, account_sig, account_key, device_sig, *_) = device
    identity = signal_keys.public_key(identity_priv)
    assert signal_keys.verify(identity, b"\x05" + signal_keys.public_key(spk_priv), spk_sig)
    assert signal_keys.verify(account_key, bytes([6, 0]) + details + identity, account_sig)
    assert signal_keys.verify(identity, bytes([6, 1]) + details + identity + account_key, device_sig)
    return device


# ------------------------------------------------------------------------- primitives


def test_signal_signatures_are_checked_as_libsignal_checks_them() -> None:
    """libsignal-protocol-c's own vector (tests/test_curve25519.c, test_curve25519_signature):
    its signature carries the sign bit in its last byte; any flipped bit is refused."""
    private = bytes.fromhex("c097248412e58bf05df487968205132794178e367637f5818f81e0e6ce73e865")
    public = bytes.fromhex("ab7e717d4a163b7d9a1d8071dfe9dcf8cdcd1cea3339b6356be84d887e322c64")
    message = bytes.fromhex("05edce9d9c415ca78cb7252e72c2c4a554d3eb29485a0e1d503118d1a82d99fb4a")
    signature = bytes.fromhex(
        "5de88ca9a89b4a115da79109c67c9c7464a3e4180274f1cb8c63c2984e286dfb"
        "ede82deb9dcd9fae0bfbb821569b3d9001bd8130cd11d486cef047bd60b86e88"
    )
    assert signal_keys.public_key(private) == public
    assert signature[63] & 0x80  # the vector exercises the sign bit
    assert signal_keys.verify(public, message, signature)
    for index in range(64):
        for bit in range(8):
            tampered = bytearray(signature)
            tampered[index] ^= 1 << bit
            assert not signal_keys.verify(public, message, bytes(tampered)), (index, bit)
    assert not signal_keys.verify(public, message + b"!", signature)
    assert not signal_keys.verify(public[:31], message, signature)


def test_clamping_keeps_the_public_key() -> None:
    private = bytes(range(224, 256))  # bits Curve25519 clears and sets are all wrong here
    assert signal_keys.clamped(private) != private
    assert signal_keys.public_key(signal_keys.clamped(private)) == signal_keys.public_key(private)


@pytest.mark.parametrize(
    "stored",
    [
        '{"type":"Buffer","data":"AQID"}',  # what Baileys writes
        '{"type":"Buffer","data":[1,2,3]}',  # Buffer.toJSON without the replacer
        '{"buffer":true,"value":"AQID"}',  # the older form its reviver still reads
        '{"0":1,"1":2,"2":3}',  # a Uint8Array stringified without the replacer
    ],
)
def test_buffers_are_revived_in_every_form_baileys_reads(stored: str) -> None:
    assert baileys_auth.parse(f'{{"k":{stored}}}', "x") == {"k": b"\x01\x02\x03"}


def test_waha_core_folder_names_give_the_session_name(tmp_path) -> None:
    waha = tmp_path / f"sales-{hashlib.md5(b'sales').hexdigest()}"
    other = tmp_path / f"sales-{hashlib.md5(b'other').hexdigest()}"
    waha.mkdir()
    other.mkdir()
    assert session_id_for(waha) == "sales"
    assert session_id_for(other) == other.name
    assert session_id_for(tmp_path / "alice.db") == "alice"


# ----------------------------------------------------------------------------- mapping


def test_a_folder_written_by_baileys_itself_becomes_the_same_device(tmp_path) -> None:
    store, note = store_from_folder(BAILEYS_WRITTEN)
    creds = baileys_auth.parse((BAILEYS_WRITTEN / "creds.json").read_text(), "creds")
    check_store(store, "whatsmeow_device")
    jid, lid, registration_id, noise, identity, spk, spk_id, spk_sig, adv, *_, platform, name = (
        verify_as_whatsmeow(store)
    )
    assert (jid, lid, registration_id, platform, name) == (
        "15550009999:21@s.whatsapp.net", "98765432109876:21@lid", creds["registrationId"], "smba", "Baileys Bot"
    )
    assert signal_keys.public_key(identity) == creds["signedIdentityKey"]["public"]
    assert signal_keys.public_key(noise) == creds["noiseKey"]["public"]
    assert signal_keys.public_key(spk) == creds["signedPreKey"]["keyPair"]["public"]
    assert (spk_id, spk_sig) == (1, creds["signedPreKey"]["signature"])
    assert adv == base64.b64decode(creds["advSecretKey"])
    assert rows(store, "SELECT key_id, uploaded FROM whatsmeow_pre_keys") == [(i, 1) for i in range(1, 6)]
    [(key_id, data, timestamp, fingerprint)] = rows(
        store, "SELECT key_id, key_data, timestamp, fingerprint FROM whatsmeow_app_state_sync_keys"
    )
    assert (key_id, data, timestamp) == (base64.b64decode("AAAAAEA/"), b"\x07" * 32, 1760000000123)
    marshalled = wa_proto.AppStateSyncKeyFingerprint.FromString(fingerprint)
    assert (marshalled.rawID, marshalled.currentIndex, list(marshalled.deviceIndexes)) == (99, 2, [0, 21])
    # As whatsmeow's pairing leaves it: the phone trusted under its LID, the LID mapped.
    phone_key = base64.b64decode(creds["account"]["accountSignatureKey"])
    assert rows(store, "SELECT their_id, identity FROM whatsmeow_identity_keys") == [("98765432109876_1:0", phone_key)]
    assert rows(store, "SELECT lid, pn FROM whatsmeow_lid_map") == [("98765432109876", "15550009999")]
    assert note.startswith("from Baileys: 15550009999:21@s.whatsapp.net, 5 pre-keys, 1 app-state keys")

    # The test writer writes what Baileys writes: the same fields, the same JSON types.
    write_folder(tmp_path / "ours")
    ours = json.loads((tmp_path / "ours" / "creds.json").read_text())
    theirs = json.loads((BAILEYS_WRITTEN / "creds.json").read_text())
    assert shape(ours) == shape(theirs)
    assert (BAILEYS_WRITTEN / "creds.json").read_text().startswith('{"noiseKey":{"private":{"type":"Buffer","data":"')


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


@pytest.mark.parametrize("hosted", [False, True])
def test_fresh_key_material_maps_onto_whatsmeow_tables(tmp_path, hosted: bool) -> None:
    device = write_folder(tmp_path / "bot", pre_keys=4, uploaded=3, sessions=3, hosted=hosted)
    store, note = store_from_folder(tmp_path / "bot")
    check_store(store, "whatsmeow_device")
    if hosted:  # a hosted device's account signature has its own prefix
        [(details, account_sig, key)] = rows(store, "SELECT adv_details, adv_account_sig, adv_account_sig_key FROM whatsmeow_device")
        identity = device.identity[1]
        assert signal_keys.verify(key, bytes([6, 5]) + details + identity, account_sig)
    else:
        jid, lid, registration_id, _, identity, spk, spk_id, *_ = verify_as_whatsmeow(store)
        assert (jid, lid, registration_id, spk_id) == (device.jid, device.lid, device.registration_id, 1)
        assert identity == signal_keys.clamped(device.identity[0])
        assert signal_keys.public_key(identity) == device.identity[1]
        assert signal_keys.public_key(spk) == device.signed_pre_key[1]
    pre_keys = rows(store, "SELECT key_id, key, uploaded FROM whatsmeow_pre_keys ORDER BY key_id")
    assert [(k, signal_keys.public_key(priv), up) for k, priv, up in pre_keys] == [
        (k, device.pre_keys[k][1], int(k <= 3)) for k in range(1, 5)
    ]
    assert rows(store, "SELECT key_id FROM whatsmeow_app_state_sync_keys") == [(b"\x00\x00\x00\x00\x1f\xfe",)]
    identities = dict(rows(store, "SELECT their_id, identity FROM whatsmeow_identity_keys"))
    assert identities["12345678901234_1:0"] == device.phone_identity[1]
    assert len(identities["19998887777_1:3"]) == 32
    assert sorted(rows(store, "SELECT lid, pn FROM whatsmeow_lid_map")) == [
        ("12345678901234", "15550001111"), ("19998887777", "15552223333")
    ]
    assert rows(store, "SELECT count(*) FROM whatsmeow_sessions") == [(0,)]
    assert note.endswith("left out (whatsmeow re-establishes them): 3 Signal sessions")


def test_the_store_has_the_schema_the_go_library_creates(tmp_path) -> None:
    from tests.test_importer import whatsmeow_store  # made by the Go library, in a child process

    write_folder(tmp_path / "bot")
    built, _ = store_from_folder(tmp_path / "bot")
    schema = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid"
    go_made = whatsmeow_store()
    assert rows(built, schema) == rows(go_made, schema)
    assert rows(built, "SELECT * FROM whatsmeow_version") == rows(go_made, "SELECT * FROM whatsmeow_version")


# ---------------------------------------------------------------------------- refusals


def edit_creds(folder: Path, change) -> None:
    creds = json.loads((folder / "creds.json").read_text())
    change(creds)
    write(folder, "creds.json", creds)


def forged_signature(creds: dict[str, Any]) -> None:
    creds["signedPreKey"]["signature"] = buffer(sign(key_pair()[0], b"\x05" + b"\x00" * 32))


def other_identity(creds: dict[str, Any]) -> None:
    creds["signedIdentityKey"]["private"] = buffer(key_pair()[0])


def foreign_account(creds: dict[str, Any]) -> None:
    account = creds["account"]
    account["accountSignature"] = b64(sign(key_pair()[0], bytes([6, 0]) + b"x"))


def swapped_device_signature(creds: dict[str, Any]) -> None:
    creds["account"]["deviceSignature"] = creds["account"]["accountSignature"]


def bad_jid(creds: dict[str, Any]) -> None:
    creds["me"]["id"] = "15550001111@s.whatsapp.net"  # the phone's JID, not a device's


def never_paired(creds: dict[str, Any]) -> None:
    del creds["me"], creds["account"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (forged_signature, "the signed pre-key's signature does not verify under the identity key"),
        (other_identity, "the identity key's public key does not match its private key"),
        (foreign_account, "the account signature (the phone's, over this device's identity key) does not verify"),
        (swapped_device_signature, "the device signature does not verify under the identity key"),
        (bad_jid, "the JID '15550001111@s.whatsapp.net' is not a linked device's"),
        (never_paired, "it never finished pairing"),
    ],
)
def test_tampered_creds_are_refused_with_the_reason(tmp_path, change, reason: str) -> None:
    write_folder(tmp_path / "bot")
    edit_creds(tmp_path / "bot", change)
    with pytest.raises(Unusable, match=re.escape(reason)):
        store_from_folder(tmp_path / "bot")


def test_damaged_folders_are_refused_with_the_reason(tmp_path) -> None:
    truncated = tmp_path / "truncated"
    write_folder(truncated)
    text = (truncated / "creds.json").read_text()
    (truncated / "creds.json").write_text(text[: len(text) // 2])
    with pytest.raises(Unusable, match=r"creds.json is not valid JSON \(.* at line 1 column \d+\)"):
        store_from_folder(truncated)

    missing = tmp_path / "missing"
    write_folder(missing)
    (missing / "creds.json").unlink()
    with pytest.raises(Unusable, match=r"no creds\.json in .*missing: not a Baileys auth folder"):
        store_from_folder(missing)

    bad_pre_key = tmp_path / "bad-pre-key"
    write_folder(bad_pre_key)
    write(bad_pre_key, "pre-key-2.json", {"private": buffer(key_pair()[0]), "public": buffer(key_pair()[1])})
    with pytest.raises(Unusable, match="the pre-key 2's public key does not match its private key"):
        store_from_folder(bad_pre_key)


# --------------------------------------------------------------------------- Evolution


def test_evolution_v2_creds_come_from_its_session_table_export(tmp_path) -> None:
    """Evolution API v2 keeps the key files in instances/<id>/ and creds in its database,
    as JSON.stringify of the BufferJSON text."""
    instance = tmp_path / "instances" / "4b1f0a9c-2d3e-4f50-8a6b-7c8d9e0f1a2b"
    device = write_folder(instance)
    creds_text = (instance / "creds.json").read_text()
    (instance / "creds.json").unlink()
    row = {"id": "c1", "sessionId": instance.name, "creds": json.dumps(creds_text), "createdAt": "2026-01-01"}
    aggregated = tmp_path / "sessions.json"  # SELECT json_agg(s) FROM "Session" s
    aggregated.write_text(json.dumps([row]))
    lines = tmp_path / "sessions.jsonl"  # one row_to_json per line, creds as a JSON column
    lines.write_text(json.dumps({**row, "creds": json.loads(creds_text)}) + "\n")
    for export in (aggregated, lines):
        creds = baileys_auth.read_evolution_sessions(export)
        store, _ = store_from_folder(instance, creds[instance.name])
        assert verify_as_whatsmeow(store)[0] == device.jid
    with pytest.raises(Unusable, match=r"no creds\.json"):
        store_from_folder(instance)
    (tmp_path / "bad.json").write_text(json.dumps([{"sessionId": "x"}]))
    with pytest.raises(Unusable, match="a row without sessionId and creds"):
        baileys_auth.read_evolution_sessions(tmp_path / "bad.json")

