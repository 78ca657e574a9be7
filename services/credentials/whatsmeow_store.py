"""A whatsmeow SQLite store holding one linked device, built from its keys: what whatsmeow
itself leaves after pairing (the device row, the phone's identity, the own LID mapping),
plus the pre-keys, app-state keys, contacts' identities and LID mappings carried over.

The schema is whatsmeow's own (`whatsmeow_schema.sql`, at the version neonize's library
creates; a test compares the two), so the Go library loads the store without upgrading it.

Trap: built with Python's sqlite3 in a private temporary file. The importing process may
run the Go library, but no Go client ever has this file open, and two SQLite copies in one
process only cancel each other's locks on the same file (see importer's docstring).
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from services.credentials import signal_keys
from services.credentials.linked_device import DEVICE_JID, LID, LinkedDevice, Unusable

SCHEMA = Path(__file__).with_name("whatsmeow_schema.sql")
SCHEMA_VERSION = 15
SCHEMA_COMPAT = 8
# Where go.mau.fi/util's dbutil records the schema version (created before the schema).
VERSION_TABLE = "CREATE TABLE whatsmeow_version (version INTEGER, compat INTEGER)"
# whatsmeow's Signal address domain of LID users (types.LIDDomain): `<user>_1:<device>`.
LID_DOMAIN = 1


def build_store(device: LinkedDevice) -> bytes:
    """The bytes of a whatsmeow store holding `device` (checked by `linked_device.check`).

    Raises Unusable when whatsmeow's constraints refuse a row.
    """
    with tempfile.TemporaryDirectory(prefix="wa-store-") as tmp:
        path = Path(tmp) / "store.db"
        db = sqlite3.connect(path)
        try:
            db.execute(VERSION_TABLE)
            db.executescript(SCHEMA.read_text())
            with db:
                db.execute("INSERT INTO whatsmeow_version VALUES (?, ?)", (SCHEMA_VERSION, SCHEMA_COMPAT))
                _insert(db, device)
        except sqlite3.IntegrityError as exc:  # e.g. one app-state key id written twice
            raise Unusable(f"the keys do not fit whatsmeow's store: {exc}") from None
        finally:
            db.close()
        return path.read_bytes()


def _insert(db: sqlite3.Connection, device: LinkedDevice) -> None:
    jid = device.jid
    db.execute(
        "INSERT INTO whatsmeow_device (jid, lid, registration_id, noise_key, identity_key, signed_pre_key,"
        " signed_pre_key_id, signed_pre_key_sig, adv_key, adv_details, adv_account_sig, adv_account_sig_key,"
        " adv_device_sig, platform, push_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            jid,
            device.lid,
            device.registration_id,
            signal_keys.clamped(device.noise.private),
            signal_keys.clamped(device.identity.private),
            signal_keys.clamped(device.signed_pre_key.private),
            device.signed_pre_key_id,
            device.signed_pre_key_signature,
            device.adv_secret,
            device.adv_details,
            device.account_signature,
            device.account_signature_key,
            device.device_signature,
            device.platform,
            device.push_name,
        ),
    )
    db.executemany(
        "INSERT INTO whatsmeow_pre_keys (jid, key_id, key, uploaded) VALUES (?, ?, ?, ?)",
        [(jid, k.key_id, signal_keys.clamped(k.pair.private), k.uploaded) for k in device.pre_keys],
    )
    db.executemany(
        "INSERT INTO whatsmeow_app_state_sync_keys (jid, key_id, key_data, timestamp, fingerprint)"
        " VALUES (?, ?, ?, ?, ?)",
        [(jid, k.key_id, k.data, k.timestamp, k.fingerprint) for k in device.app_state_keys],
    )
    # As pairing does: the phone (device 0) is trusted with the key that signed this device.
    phone_user = DEVICE_JID.fullmatch(jid)["user"]  # type: ignore[index] - checked
    lid = LID.fullmatch(device.lid) if device.lid else None
    phone_address = f"{lid['user']}_{LID_DOMAIN}:0" if lid else f"{phone_user}:0"
    identities = dict(device.identities)
    identities[phone_address] = device.account_signature_key
    db.executemany(
        "INSERT INTO whatsmeow_identity_keys (our_jid, their_id, identity) VALUES (?, ?, ?)",
        [(jid, address, key) for address, key in identities.items()],
    )
    lid_map = [(lid["user"], phone_user)] if lid else []
    # A LID or a number mapped twice (a stale mapping): the first one stays.
    db.executemany("INSERT OR IGNORE INTO whatsmeow_lid_map (lid, pn) VALUES (?, ?)", lid_map + list(device.lid_map))
