"""The actor's side of outbound delivery: take the next accepted send, send it once, report.

Each session has a durable consumer on its own subject of the outbound stream with one
message in flight at a time, so sends leave in acceptance order, and whichever node owns
the session next continues where the last owner stopped.

At most once: before sending, the actor moves the send's journal record from `accepted` to
`sending` by compare-and-set (services/common/sends.py); after sending, it records the
result. A message that comes back in `sending` may or may not have reached WhatsApp; it is
reported `failed` with code `ambiguous` instead of being sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from contracts.envelope import ErrorBody
from contracts.events import OutboundEvent
from contracts.internal import QueuedSend
from contracts.types import to_jid, utcnow
from services.common.sends import SendRecord
from services.session_actor.adapters.base import Receipt, SendError

if TYPE_CHECKING:
    from services.session_actor.actor import SessionActor

log = structlog.get_logger(__name__)

ACK_WAIT = 60.0
FETCH_WAIT = 5.0
MAX_ATTEMPTS = 5
RETRY_BASE = 1.0
RETRY_CAP = 30.0
RECENT_SENDS = 10_000


_queued = msgspec.json.Decoder(QueuedSend)


def consumer_name(sid: str) -> str:
    return f"out-{sid}"


class SendExecutor:
    def __init__(self, actor: SessionActor) -> None:
        self.actor = actor
        self._task: asyncio.Task[None] | None = None
        self._current: Any = None
        self._by_message: OrderedDict[str, str] = OrderedDict()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"sender-{self.actor.sid}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._current is not None:
            # Hand the message back at once: the next owner gets it before any later one.
            with contextlib.suppress(Exception):
                await self._current.nak()
            self._current = None

    async def forget(self) -> None:
        """The session is deleted: drop its consumer (its queued sends are failed by the queue)."""
        await self.stop()
        node = self.actor.node
        with contextlib.suppress(NotFoundError):
            await node.js.delete_consumer(node.subjects.outbound_stream, consumer_name(self.actor.sid))

    async def _run(self) -> None:
        node, sid = self.actor.node, self.actor.sid
        psub = await node.js.pull_subscribe(
            node.subjects.outbound(sid),
            durable=consumer_name(sid),
            stream=node.subjects.outbound_stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                max_ack_pending=1,
                ack_wait=ACK_WAIT,
                max_deliver=-1,
                deliver_policy=DeliverPolicy.ALL,
            ),
        )
        try:
            while True:
                await self.actor.connected.wait()
                try:
                    msgs = await psub.fetch(1, timeout=FETCH_WAIT)
                except TimeoutError:
                    continue
                for msg in msgs:
                    self._current = msg
                    await self._deliver(msg)
                    self._current = None
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _deliver(self, msg: Any) -> None:
        item = _queued.decode(msg.data)
        node = self.actor.node
        claimed, intent = await node.journal.claim(self.actor.sid, item.id, self.actor.token, node.id)
        if not claimed:
            await self._settle_seen(msg, item, intent)
            return
        attempt = 0
        while True:
            # A session that is offline holds its next send; waiting costs no attempt.
            await self._holding(msg, self.actor.connected.wait())
            try:
                result = await self._send(item)
                break
            except SendError as exc:
                if exc.ambiguous:
                    await self._fail(msg, item, "ambiguous", exc.message, record=intent)
                    return
                attempt += exc.code != "not_connected"
                if exc.permanent or attempt >= MAX_ATTEMPTS:
                    await self._fail(msg, item, exc.code, exc.message, record=intent)
                    return
                # It surely did not go out: hand it back, so a crash now leaves it sendable.
                await node.journal.settle(self.actor.sid, SendRecord(id=item.id, state="accepted"))
                delay = min(RETRY_CAP, RETRY_BASE * 2 ** max(0, attempt - 1)) * random.uniform(0.5, 1.0)
                log.info("send failed, retrying", session=self.actor.sid, id=item.id, error=str(exc), delay=delay)
                await self._holding(msg, asyncio.sleep(delay))
                claimed, intent = await node.journal.claim(self.actor.sid, item.id, self.actor.token, node.id)
                if not claimed:
                    await self._settle_seen(msg, item, intent)
                    return
        await node.journal.settle(self.actor.sid, msgspec.structs.replace(intent, state="sent", message_id=result.message_id))
        self._remember(result.message_id, item.id)
        await self._publish(item.id, "sent", message_id=result.message_id)
        await msg.ack()

    async def _holding(self, msg: Any, waiting: Any) -> None:
        """Wait while telling JetStream we still work on `msg` (no redelivery meanwhile)."""
        task = asyncio.ensure_future(waiting)
        try:
            while not task.done():
                await msg.in_progress()
                await asyncio.wait([task], timeout=ACK_WAIT / 3)
        finally:
            task.cancel()

    async def _send(self, item: QueuedSend) -> Any:
        client = self.actor.client
        if client is None or not self.actor.connected.is_set() or not self.actor.node.may_act():
            raise SendError("not_connected", "the session is not connected")
        return await client.send_text(to_jid(item.to), item.text, ref=item.id)

    async def _settle_seen(self, msg: Any, item: QueuedSend, record: SendRecord) -> None:
        """A send we have a record of came back (redelivery after a crash, or a copy)."""
        if record.state == "sent" and record.message_id:
            self._remember(record.message_id, item.id)
            await self._publish(item.id, "sent", message_id=record.message_id)
        elif record.state == "failed":
            await self._publish(item.id, "failed", error=ErrorBody(code=record.failed, message="failed earlier"))
        else:
            await self._fail(
                msg, item, "ambiguous", "an earlier attempt may have reached WhatsApp; not sent again", record=None
            )
            return
        await msg.ack()

    async def _fail(self, msg: Any, item: QueuedSend, code: str, message: str, record: SendRecord | None) -> None:
        if record is not None:
            await self.actor.node.journal.settle(
                self.actor.sid, msgspec.structs.replace(record, state="failed", failed=code)
            )
        await self._publish(item.id, "failed", error=ErrorBody(code=code, message=message))
        await msg.ack()

    async def _publish(
        self, send_id: str, state: str, message_id: str | None = None, error: ErrorBody | None = None
    ) -> None:
        await self.actor.node.events.publish(
            OutboundEvent(
                event_id=f"{self.actor.sid}:out:{send_id}:{state}",
                session_id=self.actor.sid,
                at=utcnow(),
                id=send_id,
                state=state,  # type: ignore[arg-type]
                message_id=message_id,
                error=error,
            )
        )

    def _remember(self, message_id: str, send_id: str) -> None:
        self._by_message[message_id] = send_id
        while len(self._by_message) > RECENT_SENDS:
            self._by_message.popitem(last=False)

    async def receipt(self, receipt: Receipt) -> None:
        if receipt.kind not in ("delivered", "read", "played"):
            return
        for message_id in receipt.message_ids:
            send_id = self._by_message.get(message_id) or await self.actor.node.send_id_of(self.actor.sid, message_id)
            if send_id is None:
                continue
            # A read receipt implies delivery; the event ids make repeats harmless.
            await self._publish(send_id, "delivered", message_id=message_id)
            if receipt.kind in ("read", "played"):
                await self._publish(send_id, "read", message_id=message_id)
