"""What an API key looks like, and what of it is stored: plain code, no I/O.

A key is `wak_<key id>_<secret>`: the id (12 hex characters) finds its record, the secret
(32 random bytes, URL-safe base64) proves it. Only the SHA-256 of the secret is stored:
with 256 random bits there is nothing to guess, so a fast hash is enough, and a stolen
database holds no usable key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PREFIX = "wak"
_TOKEN = re.compile(rf"^{PREFIX}_(?P<key_id>[0-9a-f]{{12}})_(?P<secret>[A-Za-z0-9_-]{{43}})$")


def new_token() -> tuple[str, str]:
    """A fresh key: (its id, the whole key to hand out)."""
    key_id = secrets.token_hex(6)
    return key_id, f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def parse(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _TOKEN.match(token)
    return (match["key_id"], match["secret"]) if match else None


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def matches(secret: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(secret), stored_digest)
