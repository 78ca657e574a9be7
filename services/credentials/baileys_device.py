"""A Baileys auth state (`baileys_auth`) mapped onto a linked device as whatsmeow keeps it.

| Baileys                                        | whatsmeow                                   |
| creds.me.id / me.lid / me.name                 | whatsmeow_device jid / lid / push_name      |
| creds.registrationId, creds.platform           | registration_id, platform                   |
| creds.noiseKey, signedIdentityKey (.private)   | noise_key, identity_key                     |
| creds.signedPreKey keyPair.private/keyId/sig   | signed_pre_key, _id, _sig                   |
| creds.advSecretKey (base64)                    | adv_key                                     |
| creds.account details, accountSignatureKey,    | adv_details, adv_account_sig_key,           |
|   accountSignature, deviceSignature (base64)   |   adv_account_sig, adv_device_sig           |
| pre-key-<id> (id < firstUnuploadedPreKeyId:    | whatsmeow_pre_keys (uploaded)               |
|   uploaded)                                    |                                             |
| app-state-sync-key-<base64 key id>             | whatsmeow_app_state_sync_keys               |
| identity-key-<user>[_<domain>].<device>        | whatsmeow_identity_keys (<user>...:<device>)|
| lid-mapping-<phone user> -> <lid user>         | whatsmeow_lid_map                           |

whatsmeow stores only private keys and derives the public ones; the public keys read here
are what `linked_device.check` compares them with.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from services.credentials import signal_keys, wa_proto
from services.credentials.baileys_auth import AuthState
from services.credentials.linked_device import AppStateKey, KeyPair, LinkedDevice, PreKey, Unusable

# libsignal-node's ProtocolAddress.toString(): `<user>[_<domain>].<device>`.
_SIGNAL_ADDRESS = re.compile(r"(?P<user>[0-9]+(?:_[0-9]+)?)\.(?P<device>[0-9]+)")


def linked_device(auth: AuthState) -> LinkedDevice:
    """Raises Unusable when a field is missing or malformed (not yet `check`ed)."""
    creds = auth.creds
    me, account = creds.get("me"), creds.get("account")
    if not isinstance(me, dict) or not isinstance(account, dict):
        raise Unusable(
            "creds.json holds no linked device (no `me` or `account`): it never finished pairing; "
            "link this number with a QR code instead"
        )
    signed = _dict(creds, "signedPreKey")
    first_unuploaded = _int(creds, "firstUnuploadedPreKeyId", default=0)
    pre_keys = sorted(
        ((_key_id(key_id, "pre-key"), pair) for key_id, pair in auth.keys["pre-key"].items()), key=lambda item: item[0]
    )
    return LinkedDevice(
        jid=_str(me, "me.id"),
        lid=_str(me, "me.lid") if me.get("lid") else None,
        registration_id=_int(creds, "registrationId"),
        noise=_pair(creds.get("noiseKey"), "noiseKey"),
        identity=_pair(creds.get("signedIdentityKey"), "signedIdentityKey"),
        signed_pre_key=_pair(signed.get("keyPair"), "signedPreKey.keyPair"),
        signed_pre_key_id=_int(signed, "keyId", "signedPreKey.keyId"),
        signed_pre_key_signature=_bytes(signed.get("signature"), "signedPreKey.signature"),
        adv_secret=_bytes(creds.get("advSecretKey"), "advSecretKey"),
        adv_details=_bytes(account.get("details"), "account.details"),
        account_signature_key=_bytes(account.get("accountSignatureKey"), "account.accountSignatureKey"),
        account_signature=_bytes(account.get("accountSignature"), "account.accountSignature"),
        device_signature=_bytes(account.get("deviceSignature"), "account.deviceSignature"),
        platform=str(creds.get("platform") or ""),
        push_name=str(me.get("name") or ""),
        pre_keys=tuple(
            PreKey(key_id, _pair(pair, f"pre-key-{key_id}"), key_id < first_unuploaded) for key_id, pair in pre_keys
        ),
        app_state_keys=tuple(_app_state_key(key_id, key) for key_id, key in sorted(auth.keys["app-state-sync-key"].items())),
        identities=tuple(_identity(address, key) for address, key in sorted(auth.keys["identity-key"].items())),
        lid_map=tuple(
            (lid, phone)
            for phone, lid in sorted(auth.keys["lid-mapping"].items())
            # `<lid>_reverse` files map back; plain ones map a phone number to its LID.
            if phone.isdigit() and isinstance(lid, str) and lid.isdigit()
        ),
    )


def _app_state_key(key_id: str, key: Any) -> AppStateKey:
    what = f"app-state-sync-key-{key_id}"
    if not isinstance(key, dict):
        raise Unusable(f"{what} does not hold an object")
    fingerprint = key.get("fingerprint") or {}
    try:
        marshalled = wa_proto.AppStateSyncKeyFingerprint(
            rawID=fingerprint.get("rawId"),
            currentIndex=fingerprint.get("currentIndex"),
            deviceIndexes=fingerprint.get("deviceIndexes") or [],
        ).SerializeToString()
    except (AttributeError, TypeError, ValueError):
        raise Unusable(f"{what} has a malformed fingerprint") from None
    return AppStateKey(
        key_id=_bytes(key_id, f"the id of {what}"),
        data=_bytes(key.get("keyData"), f"{what} keyData"),
        # protobufjs writes 64-bit integers as strings.
        timestamp=_int(key, "timestamp", f"{what} timestamp", default=0),
        fingerprint=marshalled,
    )


def _identity(address: str, key: Any) -> tuple[str, bytes]:
    parts = _SIGNAL_ADDRESS.fullmatch(address)
    if parts is None:
        raise Unusable(f"identity-key-{address}.json: {address!r} is not a Signal address")
    key = _bytes(key, f"identity-key-{address}")
    if len(key) == signal_keys.KEY_SIZE + 1 and key[:1] == signal_keys.DJB_TYPE:
        key = key[1:]  # libsignal's serialized form
    return f"{parts['user']}:{parts['device']}", key


def _pair(value: Any, what: str) -> KeyPair:
    if not isinstance(value, dict):
        raise Unusable(f"{what} is missing or not a key pair")
    return KeyPair(_bytes(value.get("private"), f"{what}.private"), _bytes(value.get("public"), f"{what}.public"))


def _bytes(value: Any, what: str) -> bytes:
    """A Buffer (revived) or a base64 string (protobufjs' JSON, advSecretKey, key ids)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise Unusable(f"{what} is not base64") from None
    raise Unusable(f"{what} is missing or not a Buffer")


def _dict(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise Unusable(f"{key} is missing or not an object")
    return value


def _str(parent: dict[str, Any], what: str) -> str:
    value = parent.get(what.rpartition(".")[2])
    if not isinstance(value, str):
        raise Unusable(f"{what} is missing or not a string")
    return value


def _int(parent: dict[str, Any], key: str, what: str | None = None, default: int | None = None) -> int:
    value = parent.get(key, default)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise Unusable(f"{what or key} is missing or not an integer")
    return value


def _key_id(key_id: str, category: str) -> int:
    if not key_id.isdigit():
        raise Unusable(f"{category}-{key_id}.json: the id is not a number")
    return int(key_id)
