"""NATS plumbing shared by the services: topology, event publishing, request helpers."""

from __future__ import annotations

import base64
import uuid
from typing import Any, TypeVar

import msgspec
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.api import (
    KeyValueConfig,
    ObjectInfo,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError, ServiceUnavailableError
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from contracts.alerts import AlertEvent
from contracts.envelope import ContractError, Reply
from contracts.events import Event, MessageEvent, OutboundEvent, StatusEvent
from contracts.subjects import Subjects
from services.common.config import Settings
from services.common.metrics import ALERTS

T = TypeVar("T")
DAY = 86400.0
# How long a service waits at start for JetStream to be ready.
TOPOLOGY_PATIENCE = 60.0
# Per-session consumers: the server's default of 1,000 per stream is far too low.
MAX_CONSUMERS = 1_000_000

_encoder = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def new_id() -> str:
    return uuid.uuid4().hex


def stream_configs(settings: Settings) -> list[StreamConfig]:
    s = settings.subjects
    return [
        StreamConfig(
            name=s.events_stream,
            description="Public events (contract v1): status, inbound messages, outbound lifecycle, "
            "alerts; and the alerts of webhook subscriptions",
            subjects=[s.events_all, s.webhook_alerts_all],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=settings.js_replicas,
            max_age=settings.events_max_age_days * DAY,
            duplicate_window=120.0,
        ),
        StreamConfig(
            name=s.outbound_stream,
            description="Accepted sends, one subject per session, consumed by the owning actor",
            subjects=[s.outbound("*"), s.scheduled("*", "*"), s.expiry_timer("*", "*"), s.expiry("*")],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=settings.js_replicas,
            max_consumers=MAX_CONSUMERS,
            duplicate_window=600.0,
            allow_msg_schedules=True,
        ),
        StreamConfig(
            name=s.dead_letter_stream,
            description="Sends that failed for good, with the reason",
            subjects=[s.dead_letter("*")],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=settings.js_replicas,
            max_age=30 * DAY,
            duplicate_window=120.0,
        ),
    ]


def leases_config(settings: Settings) -> KeyValueConfig:
    return KeyValueConfig(
        bucket=settings.subjects.leases_bucket,
        description="node.<id>: node leases (server-side TTL); own.<sid>: session ownership",
        history=1,
        storage=StorageType.FILE,
        replicas=settings.js_replicas,
        # Watchers see a marker the moment a node lease expires.
        limit_marker_ttl=1.0,
    )


def sends_config(settings: Settings) -> KeyValueConfig:
    return KeyValueConfig(
        bucket=settings.subjects.sends_bucket,
        description="<sid>.<hash of send id>: intent, then outcome, of each send (at most once)",
        history=1,
        storage=StorageType.FILE,
        replicas=settings.js_replicas,
        ttl=settings.outbound_retention_days * DAY,
    )


def object_sha256(info: ObjectInfo) -> str:
    """The SHA-256 (hex) of an object in an object store, from its info: the store hashes
    what it keeps (`SHA-256=<base64url>`), so nothing needs hashing twice."""
    digest = (info.digest or "").removeprefix("SHA-256=")
    return base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4)).hex()


def media_config(settings: Settings) -> ObjectStoreConfig:
    return ObjectStoreConfig(
        bucket=settings.subjects.media_bucket,
        description="Inbound files, an object per media_id (contract v1 addition)",
        ttl=settings.media_retention_days * DAY,
        storage=StorageType.FILE,
        replicas=settings.js_replicas,
    )


@retry(
    retry=retry_if_exception_type((ServiceUnavailableError, NoRespondersError, TimeoutError)),
    wait=wait_exponential(multiplier=0.2, max=2),
    stop=stop_after_delay(TOPOLOGY_PATIENCE),
    reraise=True,
)
async def ensure_topology(js: JetStreamContext, settings: Settings) -> None:
    """Create or update every stream and bucket; safe to run from many processes at once.

    Retried while JetStream is not ready yet (a NATS cluster electing its leader answers 503).

    The replica count (`js_replicas`) applies to existing ones too: a deployment that grows
    from one NATS server to a cluster gets its data replicated by the next start.
    """
    for config in stream_configs(settings):
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)
    for bucket in (leases_config(settings), sends_config(settings)):
        try:
            await js.key_value(bucket.bucket)
        except (NotFoundError, BucketNotFoundError):
            try:
                await js.create_key_value(bucket)
            except BadRequestError:
                pass  # created concurrently by another process
        await ensure_replicas(js, f"KV_{bucket.bucket}", settings.js_replicas)
    media = media_config(settings)
    try:
        await js.object_store(media.bucket)
    except (NotFoundError, BucketNotFoundError):
        try:
            await js.create_object_store(media.bucket, media)
        except BadRequestError:
            pass  # created concurrently by another process
    await ensure_replicas(js, f"OBJ_{media.bucket}", settings.js_replicas)


async def ensure_replicas(js: JetStreamContext, stream: str, replicas: int) -> None:
    """Set the replica count of a stream that backs a bucket (a bucket's own config cannot be
    updated through nats-py; its stream's can)."""
    config = (await js.stream_info(stream)).config
    if config.num_replicas != replicas:
        config.num_replicas = replicas
        await js.update_stream(config)


class EventPublisher:
    """Publishes public events with their `event_id` as `Nats-Msg-Id` (stored once)."""

    def __init__(self, js: JetStreamContext, subjects: Subjects) -> None:
        self._js = js
        self._subjects = subjects

    async def publish(self, event: Event) -> None:
        kind = _EVENT_KIND[type(event)]
        await self._js.publish(
            self._subjects.event(event.session_id, kind),
            encode(event),
            headers={"Nats-Msg-Id": event.event_id},
        )
        if isinstance(event, AlertEvent):
            ALERTS.labels(event.kind).inc()


_EVENT_KIND: dict[type, str] = {StatusEvent: "status", MessageEvent: "message", OutboundEvent: "outbound", AlertEvent: "alert"}


async def request(nc: NatsClient, subject: str, body: Any, timeout: float = 5.0) -> Any:
    """Send a request and return `data` of an ok reply; raise ContractError for an error reply.

    NATS' own NoRespondersError and TimeoutError pass through: what they mean depends on
    the caller (a session between owners, a service that is down).
    """
    payload = body if isinstance(body, bytes) else encode(body)
    msg = await nc.request(subject, payload, timeout=timeout)
    reply = msgspec.json.decode(msg.data, type=Reply)
    if not reply.ok:
        assert reply.error is not None
        raise ContractError(reply.error.code, reply.error.message, reply.error.retry_after)
    return reply.data
