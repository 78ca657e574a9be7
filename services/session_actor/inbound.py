"""Inbound messages of one session: their files fetched into the media bucket, then each
published as a `message` event, in the order WhatsApp delivered them, and acked after.

Why a pipeline beside the actor's inbox rather than in it: a 5 MB file takes a while to
download and store, and the inbox also carries receipts, commands and connection events
that must not wait behind it. So each message with a file starts its fetch at once, in a
task of its own (at most `slots` fetches per node hold a file in memory); one publisher
task takes the messages in arrival order, waits for each one's fetch, publishes its event,
then acks it. Events of a session therefore keep WhatsApp's order (a text sent after a
photo is published after it), fetches overlap, and the ack-after-publish rule holds: a
message is acked only once its event is in the stream, so one whose actor stops first
(moved, crashed) is delivered again to the next owner. A fetch that fails for good still
publishes the event, with `media.error`: no message waits forever on its file.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import structlog

from contracts.events import MessageEvent
from contracts.messages import MediaInfo, MessageParts, parts
from contracts.types import utcnow
from services.common.tasks import cancel_and_wait
from services.session_actor import inbound_media as rules
from services.session_actor import metrics
from services.session_actor.adapters.base import InboundMedia, InboundMessage, MediaFetchError
from services.session_actor.authors import RecentAuthors
from services.session_actor.media_store import StoredFile

log = structlog.get_logger(__name__)

# A publish that failed (NATS unreachable) is tried again after this, for as long as the
# node may act; the message stays unacked meanwhile.
REPUBLISH_DELAY = 1.0


class MediaFiles(Protocol):
    """The media bucket (media_store.MediaStore)."""

    async def find(self, media_id: str) -> StoredFile | None: ...

    async def put(self, media_id: str, data: bytes, *, mime: str, session: str, message_id: str) -> StoredFile: ...


@dataclass(frozen=True)
class InboundKit:
    """What the inbound pipelines of a node share: the bucket, the rules, the fetch slots."""

    files: MediaFiles
    policy: rules.InboundMediaPolicy
    slots: asyncio.Semaphore


def message_event(sid: str, message: InboundMessage, media: MediaInfo | None) -> MessageEvent:
    return MessageEvent(
        # Deterministic: a message delivered again is stored once (Nats-Msg-Id).
        event_id=f"{sid}:msg:{message.message_id}",
        session_id=sid,
        at=utcnow(),
        message_id=message.message_id,
        chat=message.chat,
        sender=message.sender,
        from_me=message.from_me,
        type=message.type,  # type: ignore[arg-type]
        timestamp=message.timestamp,
        text=message.text,
        media=media,
        **parts(message.parts, MessageParts),
    )


class InboundPipeline:
    def __init__(
        self,
        kit: InboundKit,
        *,
        sid: str,
        publish: Callable[[MessageEvent], Awaitable[None]],
        may_act: Callable[[], bool],
        authors: RecentAuthors,
    ) -> None:
        self._kit = kit
        self._sid = sid
        self._publish = publish
        self._may_act = may_act
        self._authors = authors
        self._waiting: asyncio.Queue[tuple[InboundMessage, asyncio.Future[MediaInfo | None]]] = asyncio.Queue()
        self._fetches: set[asyncio.Future[MediaInfo | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()

    def add(self, message: InboundMessage) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"inbound-{self._sid}")
        if message.media is None:
            fetched: asyncio.Future[MediaInfo | None] = asyncio.get_running_loop().create_future()
            fetched.set_result(None)
        else:
            fetched = asyncio.ensure_future(self._fetch(message, message.media))
            self._fetches.add(fetched)
            fetched.add_done_callback(self._fetches.discard)
        self._waiting.put_nowait((message, fetched))

    async def stop(self) -> None:
        """Stop at once: what is not published yet is not acked, so WhatsApp delivers it again."""
        await cancel_and_wait(self._task, *self._fetches)  # type: ignore[arg-type]

    async def _run(self) -> None:
        while True:
            message, fetched = await self._waiting.get()
            event = message_event(self._sid, message, await fetched)
            if not await self._published(event):
                return  # the node may no longer act: a newer owner takes the session over
            metrics.INBOUND.labels(event.type).inc()
            self._authors.note(message.message_id, message.from_me, message.sender)
            if message.ack is not None:
                await message.ack()

    async def _published(self, event: MessageEvent) -> bool:
        while self._may_act():
            try:
                await self._publish(event)
                return True
            except Exception as exc:  # NATS unreachable, a timeout: the event must not be skipped
                log.warning("inbound event not published; trying again", session=self._sid, error=repr(exc))
                await asyncio.sleep(REPUBLISH_DELAY)
        return False

    async def _fetch(self, message: InboundMessage, media: InboundMedia) -> MediaInfo:
        """The file into the bucket, retried with backoff; never raises (a failure is the
        event's `media.error`)."""
        policy = self._kit.policy
        media_id = rules.media_id(self._sid, message.message_id)
        attempt = 0
        while True:
            attempt += 1
            try:
                found = await self._store(message, media, media_id)
                return rules.stored(media, media_id, found.size, found.sha256)
            except MediaFetchError as exc:
                error = exc
            delay = policy.retry_in(error, attempt, self._rng)
            if delay is None:
                log.info("inbound file not stored", session=self._sid, message=message.message_id, error=str(error))
                return rules.failed(media, error, attempt)
            await asyncio.sleep(delay)

    async def _store(self, message: InboundMessage, media: InboundMedia, media_id: str) -> StoredFile:
        policy, files = self._kit.policy, self._kit.files
        if (oversize := policy.too_large(message.type, media.size)) is not None:
            raise oversize
        async with self._kit.slots:
            with _failures_as(rules.MEDIA_STORE_FAILED, "the media bucket"):
                found = await files.find(media_id)
            if found is not None and found.sha256 == media.sha256:
                return found  # delivered again: stored already
            with _failures_as(rules.MEDIA_DOWNLOAD_FAILED, "the download"):
                data = await media.download()
            if (oversize := policy.too_large(message.type, len(data))) is not None:
                raise oversize
            with _failures_as(rules.MEDIA_STORE_FAILED, "the media bucket"):
                return await files.put(
                    media_id, data, mime=media.mime, session=self._sid, message_id=message.message_id
                )


@contextlib.contextmanager
def _failures_as(code: str, what: str) -> Iterator[None]:
    """Any other failure of `what` as a transient MediaFetchError: retried, then reported on
    the event, never a pipeline that stops."""
    try:
        yield
    except MediaFetchError:
        raise
    except Exception as exc:
        raise MediaFetchError(code, f"{what} failed: {exc!r}") from exc
