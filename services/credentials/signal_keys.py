"""The Curve25519 keys of a linked device and the signatures made with them (Signal's
scheme, used by WhatsApp's multi-device protocol, Baileys and whatsmeow alike).

Signatures are XEdDSA: an Ed25519 signature made with a Curve25519 (Montgomery) private
key, checked against the Edwards form of the Montgomery public key (Signal's "The XEdDSA
and VXEdDSA Signature Schemes", revision 1, 2016, section 2.3 convert_mont). libsignal's
curve25519_sign, which Baileys (through curve25519-js) and whatsmeow (go.mau.fi/libsignal)
use, keeps the sign bit of the Edwards public key in the top bit of the signature's last
byte instead of forcing it to 0 as the paper does; the check reads it from there, which
accepts signatures made either way (the paper's always leave that bit 0).
"""

from __future__ import annotations

import xeddsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

KEY_SIZE = 32
SIGNATURE_SIZE = 64
# The type byte libsignal puts before a serialized Curve25519 public key (DJB_TYPE).
DJB_TYPE = b"\x05"


def public_key(private: bytes) -> bytes:
    """The Curve25519 public key of a private key (X25519 clamps the scalar itself)."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def clamped(private: bytes) -> bytes:
    """The private key as Curve25519 clamps it (RFC 7748, section 5).

    The same key for X25519, but whatsmeow signs with the stored scalar as it is: an
    unclamped private key (node's X25519 keys may be stored so) would sign under another
    public key.
    """
    scalar = bytearray(private)
    scalar[0] &= 248
    scalar[31] &= 127
    scalar[31] |= 64
    return bytes(scalar)


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether `signature` is a Signal (XEdDSA) signature of `message` by `public`."""
    if len(public) != KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    sign_bit = bool(signature[63] & 0x80)
    edwards = xeddsa.curve25519_pub_to_ed25519_pub(public, sign_bit)
    return xeddsa.ed25519_verify(signature[:63] + bytes([signature[63] & 0x7F]), edwards, message)
