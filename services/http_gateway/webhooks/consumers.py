"""The durable JetStream consumer behind each subscription, on the events stream.

- `filter_subjects`: the subscription's filter (filters.py), selected by the server;
- `deliver_policy=new`: events from the moment the subscription is made;
- `max_ack_pending=1`: one event in flight for the whole subscription, whatever the number
  of replicas pulling from it: the order of the stream, so of every session, is kept;
- `ack_wait`: past the POST's timeout, so only the loss of the replica holding an event
  makes the server hand it to another;
- no delivery limit: an event leaves the backlog only delivered (or past the stream's age);
- pausing is the server's own consumer pause: no replica gets anything until resumed.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts.subjects import Subjects
from services.http_gateway.webhooks.filters import filter_subjects

# A pause with no end (the server wants a time): resumed by request only.
FOREVER = "9999-01-01T00:00:00Z"


class Consumers:
    def __init__(self, js: JetStreamContext, subjects: Subjects, ack_wait: float) -> None:
        self._js = js
        self._subjects = subjects
        self._ack_wait = ack_wait

    @property
    def stream(self) -> str:
        return self._subjects.events_stream

    def name(self, wid: str) -> str:
        return self._subjects.webhook_consumer(wid)

    async def create(self, wid: str, sessions: list[str], kinds: list[str]) -> None:
        await self._js.add_consumer(
            self.stream,
            ConsumerConfig(
                durable_name=self.name(wid),
                description=f"webhook subscription {wid}",
                filter_subjects=filter_subjects(self._subjects, sessions, kinds),
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.EXPLICIT,
                max_ack_pending=1,
                ack_wait=self._ack_wait,
                max_deliver=-1,
            ),
        )

    async def delete(self, wid: str) -> None:
        await self._js.delete_consumer(self.stream, self.name(wid))

    async def pause(self, wid: str) -> None:
        await self._js.pause_consumer(self.stream, self.name(wid), FOREVER)

    async def resume(self, wid: str) -> None:
        await self._js.resume_consumer(self.stream, self.name(wid))

    async def backlog(self, wid: str) -> int:
        info = await self._js.consumer_info(self.stream, self.name(wid))
        return (info.num_pending or 0) + (info.num_ack_pending or 0)
