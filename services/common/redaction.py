"""What never reaches a log line: message texts and captions, QR payloads, pair codes,
credential bytes, keys and passwords (by the name of the field that holds them), passwords
in URLs, and phone numbers, masked wherever they appear (`15551231111` -> `1555***1111`).

Plain code; services/common/logs.py applies it to every line of every service, its own and
those of its libraries (nats, FastStream, neonize), tracebacks included.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

REDACTED = "[redacted]"

# Fields whose values are never logged, whatever they hold.
SECRET_FIELDS = frozenset(
    {
        "text",
        "caption",
        "qr",
        "pair_code",
        "vcard",
        "body",
        "payload",
        "store",
        "secret",
        "credentials",
        "vault_keys",
        "key",
        "keys",
        "password",
        "nats_password",
        "nats_token",
        "dashboard_token",
        "authorization",
        "cookie",
    }
)

# A phone number: 7 to 15 digits standing alone (not part of a word, a decimal or a
# fencing token such as `01796558009529.0000000000000003`), as written in a JID
# (`15551231111@s.whatsapp.net`, `15551231111:12@...`), an E.164 number or a `to` field.
_PHONE = re.compile(r"(?<![\w.])(\d{7,15})(?![\w]|\.\d)", re.ASCII)


def mask_phone(digits: str) -> str:
    keep = 4 if len(digits) >= 10 else 2
    return f"{digits[:keep]}***{digits[-keep:]}"


# The password in a URL's user info (`nats://acme:<password>@host`, `mongodb://u:<pw>@host`).
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@/\s]+@", re.IGNORECASE)


# Secrets libraries write into their own messages: neonize logs "Pair code: ABCD-EFGH" at
# INFO; a WhatsApp pair code is 8 characters of this alphabet, shown as two groups of 4; a
# whatsmeow QR payload is `2@<ref>,<key>,<key>,<secret>`.
_PAIR_CODE = re.compile(r"\b[1-9A-HJ-NP-TV-Z]{4}-[1-9A-HJ-NP-TV-Z]{4}\b")
_QR_PAYLOAD = re.compile(r"\b\d@[A-Za-z0-9+/=_-]+(?:,[A-Za-z0-9+/=_-]+){2,}")


def scrub_text(text: str) -> str:
    """Phone numbers masked; passwords in URLs, pair codes and QR payloads replaced."""
    text = _URL_PASSWORD.sub(r"\1***@", text)
    text = _QR_PAYLOAD.sub(REDACTED, _PAIR_CODE.sub(REDACTED, text))
    return _PHONE.sub(lambda match: mask_phone(match[1]), text)


def redact(fields: dict[str, Any]) -> dict[str, Any]:
    """A log line's fields with secrets removed and phone numbers masked (nested too)."""
    return {key: REDACTED if key.lower() in SECRET_FIELDS else _clean(value) for key, value in fields.items()}


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return redact({str(k): v for k, v in value.items()})
    if isinstance(value, list | tuple | set):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    try:  # a Struct or a dataclass: field by field, so its secret fields go too
        return _clean(msgspec.to_builtins(value))
    except TypeError:  # anything else as its text, masked like the rest
        return scrub_text(repr(value))
