"""Metrics of the queues, sampled from the outbound and dead-letter streams.

Every outbound-queue replica samples the same streams: aggregate with `max`, not `sum`.
Per-session series only with `WA_METRICS_PER_SESSION`: 10,000 sessions must not become
20,000 series by default.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from prometheus_client import Gauge

from contracts.subjects import Subjects
from services.sending.queue_reads import oldest_age, queue_depths

QUEUE_DEPTH = Gauge("wa_queue_depth", "Sends waiting in the queues of all sessions (scheduled ones not counted)")
QUEUE_OLDEST = Gauge("wa_queue_oldest_age_seconds", "Age of the oldest send waiting in any queue (0: none waits)")
SCHEDULED = Gauge("wa_queue_scheduled", "Sends waiting for their send_at")
DLQ = Gauge("wa_dlq_messages", "Sends in the dead-letter queue")
SESSION_DEPTH = Gauge("wa_session_queue_depth", "Sends waiting in one session's queue", ["session"])
SESSION_OLDEST = Gauge(
    "wa_session_queue_oldest_age_seconds", "Age of the oldest send waiting in one session's queue", ["session"]
)


class QueueGauges:
    def __init__(self, js: JetStreamContext, subjects: Subjects, per_session: bool) -> None:
        self._js = js
        self._subjects = subjects
        self._per_session = per_session
        self._sessions: set[str] = set()  # sessions with per-session series

    async def sample(self) -> None:
        s, js = self._subjects, self._js
        depths = await queue_depths(js, s)
        QUEUE_DEPTH.set(sum(depths.values()))
        QUEUE_OLDEST.set(await oldest_age(js, s.outbound_stream, s.outbound("*")) or 0.0)
        scheduled = await js.stream_info(s.outbound_stream, subjects_filter=s.scheduled("*", "*"))
        SCHEDULED.set(sum((scheduled.state.subjects or {}).values()))
        DLQ.set((await js.stream_info(s.dead_letter_stream)).state.messages)
        if self._per_session:
            await self._sample_sessions(depths)

    async def _sample_sessions(self, depths: dict[str, int]) -> None:
        for sid in self._sessions - depths.keys():  # emptied queues leave no stale series
            SESSION_DEPTH.remove(sid)
            SESSION_OLDEST.remove(sid)
        for sid, depth in depths.items():
            SESSION_DEPTH.labels(sid).set(depth)
            age = await oldest_age(self._js, self._subjects.outbound_stream, self._subjects.outbound(sid))
            SESSION_OLDEST.labels(sid).set(age or 0.0)
        self._sessions = set(depths)
