"""Each session's queue of accepted sends: a durable consumer on its own subject of the
outbound stream, with one message in flight, so sends leave in acceptance order and
whichever node owns the session next continues where the last owner stopped."""

from __future__ import annotations

import contextlib
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from contracts.subjects import Subjects

ACK_WAIT = 60.0


def consumer_name(sid: str) -> str:
    return f"out-{sid}"


class SendQueues:
    def __init__(self, js: JetStreamContext, subjects: Subjects) -> None:
        self._js = js
        self._subjects = subjects

    async def open(self, sid: str) -> Any:
        """A pull subscription bound to the session's consumer, made afresh if a previous
        owner died holding a send.

        JetStream would hold that send back for ACK_WAIT, and every later one behind it. The
        outbound stream is a work queue (a send is removed once acked), so a fresh consumer
        starts at exactly the oldest unfinished send; the journal's claim settles whatever the
        dead owner had begun.
        """
        stream, name = self._subjects.outbound_stream, consumer_name(sid)
        try:
            info = await self._js.consumer_info(stream, name)
            usable = not info.num_ack_pending
            if not usable:
                await self._js.delete_consumer(stream, name)
        except NotFoundError:
            usable = False
        if not usable:
            config = ConsumerConfig(
                durable_name=name,
                filter_subject=self._subjects.outbound(sid),
                ack_policy=AckPolicy.EXPLICIT,
                max_ack_pending=1,
                ack_wait=ACK_WAIT,
                max_deliver=-1,
                deliver_policy=DeliverPolicy.ALL,
            )
            await self._js.add_consumer(stream, config=config)
        return await self._js.pull_subscribe_bind(durable=name, stream=stream)

    async def forget(self, sid: str) -> None:
        """The session is deleted: drop its consumer (the outbound-queue fails what is left)."""
        with contextlib.suppress(NotFoundError):
            await self._js.delete_consumer(self._subjects.outbound_stream, consumer_name(sid))
