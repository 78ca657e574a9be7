"""Media sends: the limits, and the checks intake (and wactl) make before accepting one.

Plain code, no I/O: nothing is fetched at intake (a URL is checked syntactically; the
owning actor downloads it when the send leaves, see services/session_actor/media.py).

Limits (settings in services/common/config.py, `WA_MEDIA_*`):
- inline (`base64`) files: `media_inline_max` decoded bytes (700 KiB), because the file
  rides inside the request and the queued send, both NATS messages (1 MiB by default);
  and the whole queued send must fit the NATS server's max payload with `PAYLOAD_HEADROOM`
  to spare (a dead letter wraps it with a few hundred bytes);
- files by URL: per kind (`media_max_<kind>`), enforced while downloading.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from urllib.parse import urlsplit

from contracts.envelope import ContractError, invalid
from contracts.sending import Media, SendText
from services.common.config import Settings

# Room a queued send leaves in a NATS message: the dead letter that may carry it later adds
# the error, attempts, node and times.
PAYLOAD_HEADROOM = 8 * 1024
NATS_DEFAULT_MAX_PAYLOAD = 1024 * 1024


@dataclass(frozen=True)
class MediaLimits:
    inline: int = 700 * 1024
    image: int = 16 * 1024 * 1024
    audio: int = 16 * 1024 * 1024
    video: int = 64 * 1024 * 1024
    document: int = 100 * 1024 * 1024
    download_timeout: float = 120.0
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    fetch_private: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaLimits:
        return cls(
            inline=settings.media_inline_max,
            image=settings.media_max_image,
            audio=settings.media_max_audio,
            video=settings.media_max_video,
            document=settings.media_max_document,
            download_timeout=settings.media_download_timeout,
            connect_timeout=settings.media_connect_timeout,
            read_timeout=settings.media_read_timeout,
            fetch_private=settings.media_fetch_private,
        )

    def for_kind(self, kind: str) -> int:
        return int(getattr(self, kind))


def size_text(n: int) -> str:
    """`716,800 bytes (700 KiB)`: exact, and readable."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            shown = f"{value:.0f}" if value == int(value) else f"{value:.1f}"
            return f"{n:,} bytes ({shown} {unit})"
    return f"{n:,} bytes"


def decoded_length(data: str) -> int:
    """Bytes `data` decodes to (padding counted), without decoding it."""
    return len(data) * 3 // 4 - (len(data) - len(data.rstrip("=")))


def decode_base64(data: str) -> bytes:
    """Strict standard base64; ValueError naming the problem."""
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except binascii.Error as exc:
        raise ValueError(str(exc) or "malformed") from None


def check_send(req: SendText, limits: MediaLimits) -> None:
    """Raise `invalid_request` for a media send that cannot be accepted (no-op for text)."""
    media = req.media
    if media is None:
        return
    if media.kind == "audio" and req.text is not None:
        raise invalid("text: an audio message has no caption; send the text as a message of its own")
    if media.mime is not None and media.kind != "document" and not media.mime.lower().startswith(media.kind + "/"):
        article = "an" if media.kind[0] in "aeiou" else "a"
        raise invalid(
            f"media.mime: {media.mime!r} is not {article} {media.kind}/* type; send other files as kind document"
        )
    if media.url is not None:
        check_url(media.url)
    else:
        assert media.base64 is not None  # Media guarantees exactly one of the two
        check_inline(media, limits)


def check_url(url: str) -> None:
    """What the URL pattern cannot see; a syntactic check only (nothing is resolved)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is not a number in 0-65535
    except ValueError as exc:
        raise invalid(f"media.url: not a valid URL ({exc})") from None
    if not parts.hostname:
        raise invalid("media.url: the URL names no host")
    if port == 0:
        raise invalid("media.url: port 0 is not a port one can fetch from")


def check_inline(media: Media, limits: MediaLimits) -> None:
    assert media.base64 is not None
    limit = min(limits.inline, limits.for_kind(media.kind))
    size = decoded_length(media.base64)
    if size > limit:
        raise invalid(
            f"media.base64: the file is {size_text(size)}; at most {size_text(limit)} can be sent inline "
            "(it travels inside NATS messages, 1 MiB each by default); put larger files at an "
            "http(s) URL the gateway can reach and send `media.url` instead"
        )
    try:
        data = decode_base64(media.base64)
    except ValueError as exc:
        raise invalid(f"media.base64: not valid base64 ({exc})") from None
    if not data:
        raise invalid("media.base64: the file is empty")


def check_fits(encoded_size: int, max_payload: int) -> None:
    """The queued send (as encoded) must fit in one NATS message, with headroom."""
    room = max_payload - PAYLOAD_HEADROOM
    if encoded_size > room:
        raise ContractError(
            "invalid_request",
            f"body: the send would be {size_text(encoded_size)} once queued, more than the "
            f"{size_text(room)} a queued send may take on this NATS server (max payload "
            f"{size_text(max_payload)}); send the media by url, or a shorter text",
        )
