"""A linked WhatsApp device as whatsmeow keeps it (the keys and the phone's signed consent
that make a companion device), and the checks an imported one passes before anything of
it is stored: every key pair is whole, every signature verifies, the JIDs parse.

Engine-neutral: a Baileys auth state is read into it (`baileys_device`), a whatsmeow store
is built from it (`whatsmeow_store`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from services.credentials import signal_keys, wa_proto

# whatsmeow's CHECK constraints: 24-bit (pre-)key ids, 32-bit registration ids.
MAX_KEY_ID = 1 << 24
MAX_REGISTRATION_ID = 1 << 32
# A companion device's JID: the phone number, the device number, the user server.
DEVICE_JID = re.compile(r"(?P<user>[0-9]+):(?P<device>[0-9]+)@s\.whatsapp\.net")
LID = re.compile(r"(?P<user>[0-9]+)(?::(?P<device>[0-9]+))?@lid")
# What the phone's and the device's signatures over the device identity begin with
# (whatsmeow pair.go, Baileys Defaults).
ACCOUNT_SIGNATURE_PREFIX = bytes([6, 0])
HOSTED_ACCOUNT_SIGNATURE_PREFIX = bytes([6, 5])
DEVICE_SIGNATURE_PREFIX = bytes([6, 1])


class Unusable(ValueError):
    """These credentials cannot be imported; the message says why."""


@dataclass(frozen=True)
class KeyPair:
    private: bytes
    public: bytes


@dataclass(frozen=True)
class PreKey:
    key_id: int
    pair: KeyPair
    uploaded: bool  # WhatsApp's servers hand it out to contacts starting a session


@dataclass(frozen=True)
class AppStateKey:
    key_id: bytes
    data: bytes
    timestamp: int
    fingerprint: bytes  # a marshalled AppStateSyncKeyFingerprint


@dataclass(frozen=True)
class LinkedDevice:
    jid: str  # <phone>:<device>@s.whatsapp.net
    lid: str | None  # <lid>:<device>@lid, unknown to older stores
    registration_id: int
    noise: KeyPair
    identity: KeyPair
    signed_pre_key: KeyPair
    signed_pre_key_id: int
    signed_pre_key_signature: bytes
    adv_secret: bytes
    # The signed device identity (ADVSignedDeviceIdentity) the phone gave at pairing.
    adv_details: bytes
    account_signature_key: bytes  # the phone's identity key
    account_signature: bytes
    device_signature: bytes
    platform: str
    push_name: str
    pre_keys: tuple[PreKey, ...] = ()
    app_state_keys: tuple[AppStateKey, ...] = ()
    # Contacts' identity keys by Signal address (`<user>[_<domain>]:<device>`).
    identities: tuple[tuple[str, bytes], ...] = ()
    # (LID user, phone number user) pairs.
    lid_map: tuple[tuple[str, str], ...] = ()


def check(device: LinkedDevice) -> None:
    """Raise Unusable, saying what is wrong, unless the device would log in as itself."""
    jid = DEVICE_JID.fullmatch(device.jid)
    if jid is None or int(jid["device"]) == 0:  # device 0 is the phone itself
        raise Unusable(f"the JID {device.jid!r} is not a linked device's (<phone>:<device>@s.whatsapp.net)")
    if device.lid is not None and not LID.fullmatch(device.lid):
        raise Unusable(f"the LID {device.lid!r} does not parse (<lid>:<device>@lid)")
    if not 0 <= device.registration_id < MAX_REGISTRATION_ID:
        raise Unusable(f"registration id {device.registration_id} is out of range")
    for name, pair in (("noise key", device.noise), ("identity key", device.identity), ("signed pre-key", device.signed_pre_key)):
        _check_pair(name, pair)
    if not 0 <= device.signed_pre_key_id < MAX_KEY_ID:
        raise Unusable(f"signed pre-key id {device.signed_pre_key_id} is out of range (24 bits)")
    if not signal_keys.verify(
        device.identity.public, signal_keys.DJB_TYPE + device.signed_pre_key.public, device.signed_pre_key_signature
    ):
        raise Unusable("the signed pre-key's signature does not verify under the identity key")
    if len(device.adv_secret) != signal_keys.KEY_SIZE:
        raise Unusable(f"the ADV secret key is {len(device.adv_secret)} bytes, not 32")
    _check_device_identity(device)
    seen: set[int] = set()
    for pre_key in device.pre_keys:
        if pre_key.key_id in seen:
            raise Unusable(f"pre-key id {pre_key.key_id} appears twice")
        seen.add(pre_key.key_id)
        if not 0 <= pre_key.key_id < MAX_KEY_ID:
            raise Unusable(f"pre-key id {pre_key.key_id} is out of range (24 bits)")
        _check_pair(f"pre-key {pre_key.key_id}", pre_key.pair)
    for address, key in device.identities:
        if len(key) != signal_keys.KEY_SIZE:
            raise Unusable(f"the identity key of {address} is {len(key)} bytes, not 32")


def _check_pair(name: str, pair: KeyPair) -> None:
    if len(pair.private) != signal_keys.KEY_SIZE or len(pair.public) != signal_keys.KEY_SIZE:
        raise Unusable(f"the {name} is not a pair of 32-byte keys")
    if signal_keys.public_key(pair.private) != pair.public:
        raise Unusable(f"the {name}'s public key does not match its private key")


def _check_device_identity(device: LinkedDevice) -> None:
    """The phone's signature over this device's identity key, and the device's own."""
    try:
        details = wa_proto.ADVDeviceIdentity.FromString(device.adv_details)
    except DecodeError:
        raise Unusable("the signed device identity's details do not decode") from None
    hosted = details.deviceType == wa_proto.HOSTED
    prefix = HOSTED_ACCOUNT_SIGNATURE_PREFIX if hosted else ACCOUNT_SIGNATURE_PREFIX
    identity = device.identity.public
    if not signal_keys.verify(
        device.account_signature_key, prefix + device.adv_details + identity, device.account_signature
    ):
        raise Unusable("the account signature (the phone's, over this device's identity key) does not verify")
    if not signal_keys.verify(
        identity,
        DEVICE_SIGNATURE_PREFIX + device.adv_details + identity + device.account_signature_key,
        device.device_signature,
    ):
        raise Unusable("the device signature does not verify under the identity key")
