"""The rules for the files of inbound messages, as plain code: where one is stored, how
large it may be, how often its download is tried, and what the event says when it fails.

A file is stored under a `media_id` made of the session and the WhatsApp message id, so a
message WhatsApp delivers again lands on the same object. Errors on the event
(`media.error.code`):

- `media_too_large`: over the kind's limit (`WA_INBOUND_MEDIA_MAX_<KIND>`), as declared
  by the sender or once downloaded; nothing is stored;
- `media_unavailable`: WhatsApp no longer has the file (expired, deleted): not retried;
- `media_download_failed` / `media_store_failed`: the download, or the write to the
  media bucket, failed on every attempt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import msgspec

from contracts.envelope import ErrorBody
from contracts.messages import MediaInfo
from services.common.config import Settings
from services.common.media import MediaLimits, size_text
from services.sending.policy import RetryPolicy
from services.session_actor.adapters.base import InboundMedia, MediaFetchError

MEDIA_TOO_LARGE = "media_too_large"
MEDIA_UNAVAILABLE = "media_unavailable"
MEDIA_DOWNLOAD_FAILED = "media_download_failed"
MEDIA_STORE_FAILED = "media_store_failed"

# The limit (setting) each kind of file falls under.
LIMIT_OF = {"image": "image", "sticker": "image", "video": "video", "audio": "audio", "voice": "audio", "document": "document"}


def media_id(sid: str, message_id: str) -> str:
    return f"{sid}/{message_id}"


@dataclass(frozen=True)
class InboundMediaPolicy:
    limits: MediaLimits  # per kind of file (LIMIT_OF); the others are the sending side's
    retry: RetryPolicy

    @classmethod
    def from_settings(cls, settings: Settings) -> InboundMediaPolicy:
        limits = MediaLimits(
            image=settings.inbound_media_max_image,
            video=settings.inbound_media_max_video,
            audio=settings.inbound_media_max_audio,
            document=settings.inbound_media_max_document,
        )
        retry = RetryPolicy(
            settings.inbound_media_attempts, settings.inbound_media_retry_base, settings.inbound_media_retry_cap
        )
        return cls(limits, retry)

    def too_large(self, kind: str, size: int | None) -> MediaFetchError | None:
        """The error for a file of `size` bytes over the kind's limit, else None."""
        limit_name = LIMIT_OF[kind]
        limit = self.limits.for_kind(limit_name)
        if size is None or size <= limit:
            return None
        return MediaFetchError(
            MEDIA_TOO_LARGE,
            f"the {kind} is {size_text(size)}; at most {size_text(limit)} is stored "
            f"(WA_INBOUND_MEDIA_MAX_{limit_name.upper()})",
            permanent=True,
        )

    def retry_in(self, error: MediaFetchError, attempt: int, rng: random.Random) -> float | None:
        """Seconds until the next attempt after `error` ended attempt number `attempt`, or
        None to give up."""
        if error.permanent or attempt >= self.retry.max_attempts:
            return None
        return self.retry.delay(attempt, rng)


def described(media: InboundMedia) -> MediaInfo:
    """What the message says of its file, before anything is fetched."""
    return MediaInfo(
        mime=media.mime,
        size=media.size,
        filename=media.filename,
        seconds=media.seconds,
        width=media.width,
        height=media.height,
    )


def stored(media: InboundMedia, media_id: str, size: int, sha256: str) -> MediaInfo:
    return msgspec.structs.replace(described(media), media_id=media_id, size=size, sha256=sha256)


def failed(media: InboundMedia, error: MediaFetchError, attempts: int) -> MediaInfo:
    message = error.message if error.permanent else f"gave up after {attempts} attempts: {error.message}"
    return msgspec.structs.replace(described(media), error=ErrorBody(code=error.code, message=message))
