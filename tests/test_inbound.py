"""Inbound messages of a session: the rules for their files (pure), the pipeline that fetches
them and publishes events in order (driven with narrow fakes), and the media bucket itself
on a real NATS server."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from contracts.events import MessageEvent
from contracts.messages import MESSAGE_HEADER, SESSION_HEADER, MessageParts, Reaction
from services.common.config import Settings
from services.devstack.probes import wait_until
from services.session_actor.adapters.base import InboundMedia, InboundMessage, MediaFetchError
from services.session_actor.authors import RecentAuthors
from services.session_actor.inbound import InboundPipeline
from services.session_actor.inbound_media import InboundMediaPolicy, media_id
from services.session_actor.media_store import MediaStore
from tests.fakes import FakeMediaFiles, inbound_kit

SID = "s1"
AT = datetime(2026, 12, 6, tzinfo=UTC)
PHOTO = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PHOTO_SHA = hashlib.sha256(PHOTO).hexdigest()


# ------------------------------------------------------------------------------- rules


def test_each_kind_of_file_falls_under_its_limit() -> None:
    policy = InboundMediaPolicy.from_settings(
        Settings(inbound_media_max_image=10, inbound_media_max_audio=20, inbound_media_max_video=30, inbound_media_max_document=40)
    )
    for kind, limit in (("image", 10), ("sticker", 10), ("audio", 20), ("voice", 20), ("video", 30), ("document", 40)):
        assert policy.too_large(kind, limit) is None and policy.too_large(kind, None) is None
        error = policy.too_large(kind, limit + 1)
        assert error is not None and error.code == "media_too_large" and error.permanent
    assert "WA_INBOUND_MEDIA_MAX_AUDIO" in policy.too_large("voice", 21).message  # type: ignore[union-attr]


def test_a_failed_fetch_is_tried_again_with_backoff_until_its_attempts_run_out() -> None:
    policy = InboundMediaPolicy.from_settings(Settings(inbound_media_attempts=3, inbound_media_retry_base=1.0, inbound_media_retry_cap=1.5))
    rng = random.Random(1)
    flaky = MediaFetchError("media_download_failed", "503")
    first, second = policy.retry_in(flaky, 1, rng), policy.retry_in(flaky, 2, rng)
    assert first is not None and 0.5 <= first <= 1.0
    assert second is not None and 0.75 <= second <= 1.5  # capped
    assert policy.retry_in(flaky, 3, rng) is None  # the third attempt was the last
    assert policy.retry_in(MediaFetchError("media_unavailable", "gone", permanent=True), 1, rng) is None
    assert media_id("alice", "3EB0AA") == "alice/3EB0AA"


# ---------------------------------------------------------------------------- pipeline


class File:
    """A file at WhatsApp: answers downloads as scripted (bytes, or an error to raise)."""

    def __init__(self, *answers: bytes | Exception, gate: asyncio.Event | None = None) -> None:
        self.answers = list(answers)
        self.gate = gate
        self.downloads = 0

    async def download(self) -> bytes:
        self.downloads += 1
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def media(self, size: int | None = None, sha256: str | None = None) -> InboundMedia:
        return InboundMedia(mime="image/png", download=self.download, size=size, sha256=sha256, width=8)


class Rig:
    def __init__(self, **settings: Any) -> None:
        self.files = FakeMediaFiles()
        self.published: list[MessageEvent] = []
        self.acked: list[str] = []
        self.may_act = True
        self.publish_failures: list[Exception] = []
        self.authors = RecentAuthors()
        self.pipeline = InboundPipeline(
            inbound_kit(self.files, **settings), sid=SID, publish=self.publish, may_act=lambda: self.may_act, authors=self.authors
        )

    async def publish(self, event: MessageEvent) -> None:
        if self.publish_failures:
            raise self.publish_failures.pop(0)
        self.published.append(event)

    def add(self, message_id: str, kind: str = "text", media: InboundMedia | None = None, **fields: Any) -> None:
        async def ack() -> None:
            self.acked.append(message_id)

        chat = "15550002222@s.whatsapp.net"
        text = fields.pop("text", "hi" if kind == "text" else None)
        self.pipeline.add(InboundMessage(message_id, chat, chat, False, kind, AT, text, media=media, ack=ack, **fields))

    async def until_acked(self, *ids: str) -> None:
        await wait_until(lambda: self.acked == list(ids), timeout=5, what=f"{ids} acked")

    def event(self, message_id: str) -> MessageEvent:
        return next(e for e in self.published if e.message_id == message_id)


@pytest.fixture
async def rig() -> Any:
    made: list[Rig] = []

    def make(**settings: Any) -> Rig:
        made.append(Rig(**settings))
        return made[-1]

    yield make
    for r in made:
        await r.pipeline.stop()


async def test_a_file_is_stored_under_its_media_id_and_the_event_carries_its_hash(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.add("m1", "image", File(PHOTO).media(size=len(PHOTO)), text="look")
    await r.until_acked("m1")
    event = r.event("m1")
    assert (event.event_id, event.type, event.text) == (f"{SID}:msg:m1", "image", "look")
    assert event.media is not None and event.media.error is None
    assert (event.media.media_id, event.media.size, event.media.sha256) == ("s1/m1", len(PHOTO), PHOTO_SHA)
    assert (event.media.mime, event.media.width) == ("image/png", 8)
    assert r.files.objects["s1/m1"] == PHOTO
    assert r.files.headers["s1/m1"] == {"mime": "image/png", "session": SID, "message_id": "m1"}
    assert r.authors.get("m1") is not None  # a later reaction to it knows whose it is


async def test_events_keep_whatsapps_order_while_a_large_file_is_still_coming(rig: Callable[..., Rig]) -> None:
    r = rig()
    gate = asyncio.Event()
    slow = File(PHOTO, gate=gate)
    r.add("m1", "image", slow.media())
    r.add("m2")
    r.add("m3", "image", File(PHOTO).media())
    await wait_until(lambda: "s1/m3" in r.files.objects, what="the later file fetched meanwhile")
    assert r.published == [] and r.acked == []  # nothing overtakes the first message
    gate.set()
    await r.until_acked("m1", "m2", "m3")
    assert [e.message_id for e in r.published] == ["m1", "m2", "m3"]


async def test_a_download_that_falters_is_retried_and_one_that_keeps_failing_still_gives_its_event(
    rig: Callable[..., Rig],
) -> None:
    r = rig(inbound_media_attempts=3)
    flaky = File(MediaFetchError("media_download_failed", "503"), MediaFetchError("media_download_failed", "503"), PHOTO)
    broken = File(MediaFetchError("media_download_failed", "connection reset"))
    gone = File(MediaFetchError("media_unavailable", "404: expired", permanent=True))
    r.add("m1", "image", flaky.media())
    r.add("m2", "image", broken.media())
    r.add("m3", "voice", gone.media(size=100))
    r.add("m4")
    await r.until_acked("m1", "m2", "m3", "m4")
    assert (flaky.downloads, r.event("m1").media.media_id) == (3, "s1/m1")  # type: ignore[union-attr]
    failed = r.event("m2").media
    assert broken.downloads == 3 and failed is not None and failed.media_id is None and failed.sha256 is None
    assert (failed.error.code, failed.error.message) == ("media_download_failed", "gave up after 3 attempts: connection reset")  # type: ignore[union-attr]
    expired = r.event("m3").media
    assert gone.downloads == 1 and expired is not None and expired.size == 100  # as declared
    assert (expired.error.code, expired.error.message) == ("media_unavailable", "404: expired")  # type: ignore[union-attr]
    assert set(r.files.objects) == {"s1/m1"}


async def test_a_file_over_its_limit_is_not_kept_whether_declared_or_found_out(rig: Callable[..., Rig]) -> None:
    r = rig(inbound_media_max_image=len(PHOTO) - 1)
    declared, undeclared = File(PHOTO), File(PHOTO)
    r.add("m1", "image", declared.media(size=len(PHOTO)))
    r.add("m2", "sticker", undeclared.media())
    await r.until_acked("m1", "m2")
    assert declared.downloads == 0  # refused before a byte was fetched
    assert undeclared.downloads == 1
    for message_id in ("m1", "m2"):
        error = r.event(message_id).media.error  # type: ignore[union-attr]
        assert error is not None and error.code == "media_too_large"
    assert r.files.objects == {}


async def test_the_bucket_failing_is_retried_then_reported(rig: Callable[..., Rig]) -> None:
    r = rig(inbound_media_attempts=2)
    r.files.failures = [TimeoutError("nats: timeout"), TimeoutError("nats: timeout")]
    r.add("m1", "image", File(PHOTO).media())
    await r.until_acked("m1")
    r.add("m2", "image", File(PHOTO).media())
    await r.until_acked("m1", "m2")
    first, second = r.event("m1").media, r.event("m2").media
    assert first is not None and first.error is not None and first.error.code == "media_store_failed"
    assert second is not None and second.media_id == "s1/m2"  # the bucket came back


async def test_a_message_delivered_again_finds_its_file_stored(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.files.objects["s1/m1"] = PHOTO
    again = File(b"never fetched")
    r.add("m1", "image", again.media(sha256=PHOTO_SHA))
    await r.until_acked("m1")
    assert again.downloads == 0 and r.event("m1").media.sha256 == PHOTO_SHA  # type: ignore[union-attr]


async def test_publishing_is_retried_and_a_node_that_may_not_act_acks_nothing(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.publish_failures = [TimeoutError("nats: timeout")]
    r.add("m1", parts=MessageParts(reaction=Reaction("m0", "👍")), text=None)
    await r.until_acked("m1")
    assert r.event("m1").reaction == Reaction("m0", "👍")
    r.may_act = False
    r.add("m2")
    await asyncio.sleep(0.05)  # nothing to wait for: the point is that nothing happens
    assert [e.message_id for e in r.published] == ["m1"] and r.acked == ["m1"]


async def test_a_stop_abandons_unpublished_messages_unacked(rig: Callable[..., Rig]) -> None:
    r = rig()
    gate = asyncio.Event()
    stuck = File(PHOTO, gate=gate)
    r.add("m1", "image", stuck.media())
    await wait_until(lambda: stuck.downloads == 1, what="the download under way")
    await r.pipeline.stop()
    assert r.published == [] and r.acked == []  # WhatsApp delivers it again to the next owner


# ------------------------------------------------------------------- the media bucket


async def test_the_media_bucket_keeps_files_with_their_headers_and_hash(nc: NatsClient, settings: Settings) -> None:
    js = nc.jetstream()
    bucket = await js.object_store(settings.subjects.media_bucket)
    status = await bucket.status()
    assert status.ttl == settings.media_retention_days * 86400
    store = MediaStore(bucket)
    assert await store.find("s1/m1") is None
    big = PHOTO * 600  # several chunks
    stored = await store.put("s1/m1", big, mime="image/png", session="s1", message_id="m1")
    assert (stored.size, stored.sha256) == (len(big), hashlib.sha256(big).hexdigest())
    assert await store.find("s1/m1") == stored
    # Any NATS client reads it with its own object-store API.
    result = await (await nc.jetstream().object_store(settings.subjects.media_bucket)).get("s1/m1")
    assert result.data == big
    assert result.info.headers == {"Content-Type": ["image/png"], SESSION_HEADER: ["s1"], MESSAGE_HEADER: ["m1"]}
