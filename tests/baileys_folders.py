"""Baileys multi-file auth folders for tests, from fresh key material, written as Baileys
writes them: `JSON.stringify(value, BufferJSON.replacer)` (compact JSON, Buffers as
{"type": "Buffer", "data": base64}, protobuf objects through protobufjs' toJSON: bytes as
base64 strings, 64-bit integers as strings), keys made and signed as libsignal-node does,
and the phone's part of pairing played here. `tests/data/baileys-7.0.0-rc14` holds a
folder written by Baileys' own code, to hold this writer to.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xeddsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from services.credentials import wa_proto

ACCOUNT_PREFIX, HOSTED_ACCOUNT_PREFIX, DEVICE_PREFIX = bytes([6, 0]), bytes([6, 5]), bytes([6, 1])


def buffer(data: bytes) -> dict[str, str]:
    return {"type": "Buffer", "data": base64.b64encode(data).decode()}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def key_pair() -> tuple[bytes, bytes]:
    private = X25519PrivateKey.generate()
    return private.private_bytes_raw(), private.public_key().public_bytes_raw()


def sign(private: bytes, message: bytes) -> bytes:
    """libsignal's curve25519_sign: the Edwards public key's sign bit goes into the signature."""
    signature = bytearray(xeddsa.ed25519_priv_sign(private, message))
    signature[63] |= xeddsa.priv_to_ed25519_pub(private)[31] & 0x80
    return bytes(signature)


def pair_json(pair: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"private": buffer(pair[0]), "public": buffer(pair[1])}


def write(folder: Path, name: str, value: Any) -> None:
    (folder / name).write_text(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


@dataclass
class BaileysDevice:
    """The key material of a folder, to compare the import with."""

    jid: str
    lid: str
    registration_id: int
    identity: tuple[bytes, bytes]
    signed_pre_key: tuple[bytes, bytes]
    signed_pre_key_id: int
    phone_identity: tuple[bytes, bytes]
    pre_keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    creds: dict[str, Any] = field(default_factory=dict)


def write_folder(
    folder: Path,
    jid: str = "15550001111:7@s.whatsapp.net",
    lid: str = "12345678901234:7@lid",
    *,
    pre_keys: int = 4,
    uploaded: int = 3,
    sessions: int = 2,
    hosted: bool = False,
) -> BaileysDevice:
    """A linked device's folder: creds.json, `pre_keys` pre-keys (the first `uploaded` of
    them uploaded), an app-state key, a contact's identity key and LID mapping, and
    `sessions` Signal sessions (left out by an import)."""
    folder.mkdir(parents=True, exist_ok=True)
    identity, noise, signed = key_pair(), key_pair(), key_pair()
    phone = key_pair()  # the phone's identity key: it signs this device's at pairing
    adv_secret = os.urandom(32)
    details = wa_proto.ADVDeviceIdentity(
        rawID=4242, timestamp=1760000000, keyIndex=2, deviceType=wa_proto.HOSTED if hosted else 0
    ).SerializeToString()
    account_signature = sign(phone[0], (HOSTED_ACCOUNT_PREFIX if hosted else ACCOUNT_PREFIX) + details + identity[1])
    device_signature = sign(identity[0], DEVICE_PREFIX + details + identity[1] + phone[1])
    device = BaileysDevice(jid, lid, int.from_bytes(os.urandom(2)) & 16383, identity, signed, 1, phone)
    device.creds = {
        "noiseKey": pair_json(noise),
        "pairingEphemeralKeyPair": pair_json(key_pair()),
        "signedIdentityKey": pair_json(identity),
        "signedPreKey": {"keyPair": pair_json(signed), "signature": buffer(sign(identity[0], b"\x05" + signed[1])), "keyId": 1},
        "registrationId": device.registration_id,
        "advSecretKey": b64(adv_secret),
        "processedHistoryMessages": [],
        "nextPreKeyId": pre_keys + 1,
        "firstUnuploadedPreKeyId": uploaded + 1,
        "accountSyncCounter": 0,
        "accountSettings": {"unarchiveChats": False},
        "registered": False,
        "account": {
            "details": b64(details),
            "accountSignatureKey": b64(phone[1]),
            "accountSignature": b64(account_signature),
            "deviceSignature": b64(device_signature),
        },
        "me": {"id": jid, "name": "Zoë's bot", "lid": lid},
        "signalIdentities": [
            {"identifier": {"name": lid, "deviceId": 0}, "identifierKey": buffer(b"\x05" + phone[1])}
        ],
        "platform": "smba",
    }
    write(folder, "creds.json", device.creds)
    for key_id in range(1, pre_keys + 1):
        device.pre_keys[key_id] = key_pair()
        write(folder, f"pre-key-{key_id}.json", pair_json(device.pre_keys[key_id]))
    key_id = b"\x00\x00\x00\x00\x1f\xfe"  # base64 "AAAAAB/+": a `/` in the file name becomes `__`
    write(
        folder,
        f"app-state-sync-key-{b64(key_id).replace('/', '__')}.json",
        {"keyData": b64(os.urandom(32)), "fingerprint": {"rawId": 7, "currentIndex": 1, "deviceIndexes": [0, 7]}, "timestamp": "1760000000123"},
    )
    write(folder, "identity-key-19998887777_1.3.json", buffer(b"\x05" + key_pair()[1]))
    write(folder, "lid-mapping-15552223333.json", "19998887777")
    write(folder, "lid-mapping-19998887777_reverse.json", "15552223333")
    for n in range(sessions):
        write(folder, f"session-1555444{n:04d}.0.json", {"_sessions": {}, "version": "v1"})
    write(folder, "sender-key-memory-120363000000000000@g.us.json", {"15550001111:7@s.whatsapp.net": True})
    return device
