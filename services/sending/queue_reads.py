"""Reading the send queues without taking from them: how many sends wait in each session's
queue, and since when the oldest has waited. For the outbound-queue (stats, gauges) and the
health monitor's dashboard."""

from __future__ import annotations

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from contracts.internal import QueuedSend
from contracts.subjects import Subjects, token
from contracts.types import utcnow

_queued = msgspec.json.Decoder(QueuedSend)


async def queue_depths(js: JetStreamContext, subjects: Subjects) -> dict[str, int]:
    """Sends waiting per session (sessions with none are left out), in one stream read."""
    info = await js.stream_info(subjects.outbound_stream, subjects_filter=subjects.outbound("*"))
    return {token(subject, -1): count for subject, count in (info.state.subjects or {}).items()}


async def oldest_age(js: JetStreamContext, stream: str, subject: str) -> float | None:
    """Seconds since the oldest send waiting on `subject` (wildcards allowed) was accepted."""
    try:
        first = await js.get_msg(stream, seq=1, subject=subject, next=True)
    except NotFoundError:
        return None
    return (utcnow() - _queued.decode(first.data).accepted_at).total_seconds()
