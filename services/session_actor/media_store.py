"""The media bucket (`<PREFIX>_MEDIA`, a JetStream object store): where actors put the files
of inbound messages, an object per `media_id`, for any NATS client to read with its own
object-store API.

Each object carries headers in the form every NATS client reads (name -> list of values):
the file's type, and the session and message it came with (`wactl media get` checks the
session).
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js.api import ObjectMeta
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from contracts.messages import MESSAGE_HEADER, SESSION_HEADER
from services.common.bus import object_sha256


@dataclass(frozen=True)
class StoredFile:
    size: int
    sha256: str  # hex


class MediaStore:
    def __init__(self, bucket: ObjectStore) -> None:
        self._bucket = bucket

    async def find(self, media_id: str) -> StoredFile | None:
        """The file stored under `media_id`, if any (a message delivered again finds its file)."""
        try:
            info = await self._bucket.get_info(media_id)
        except NotFoundError:  # ObjectNotFoundError is one
            return None
        return StoredFile(info.size or 0, object_sha256(info))

    async def put(self, media_id: str, data: bytes, *, mime: str, session: str, message_id: str) -> StoredFile:
        headers = {"Content-Type": [mime], SESSION_HEADER: [session], MESSAGE_HEADER: [message_id]}
        info = await self._bucket.put(media_id, data, meta=ObjectMeta(name=media_id, headers=headers))
        return StoredFile(info.size or 0, object_sha256(info))
