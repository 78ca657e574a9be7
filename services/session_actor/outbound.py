"""The actor's side of outbound delivery: take the next accepted send, pace it, send it once.

The rules (services/sending/policy.py) and the bookkeeping (services/sending/ledger.py) are
shared with the outbound-queue; this executor only sequences them for one session:

    expired? -> wait for the pacer (holding the message) -> claim -> typing -> send -> record

Sends come from the session's own queue (send_queue.py), one at a time. Pacing happens
before the claim: a send that waits (minutes, or until tomorrow under a daily cap) is not
yet `sending`, so an owner that dies meanwhile leaves nothing ambiguous behind. A failed attempt is handed back with an
explicit delayed NAK (a plain NAK would redeliver at once); with one message in flight a
NAKed send keeps its place, later sends wait behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import msgspec
import structlog

from contracts.alerts import AlertEvent
from contracts.envelope import ErrorBody
from contracts.internal import QueuedSend
from contracts.messages import SendableParts, parts
from contracts.queue import PacingPolicy, SendPolicy
from contracts.sending import Media
from contracts.types import to_jid, utcnow
from services.common.alerts import daily_cap_alert
from services.common.connection import Reconnections
from services.common.media import MediaLimits
from services.common.tasks import cancel_and_wait, wait_event
from services.sending.journal import SendRecord, accepted_record
from services.sending.ledger import Ledger
from services.sending.policy import Pacer, RetryPolicy, expired
from services.session_actor import media as media_files
from services.session_actor import metrics
from services.session_actor.adapters.base import (
    MessageRef,
    Outgoing,
    OutgoingMedia,
    Receipt,
    SendError,
    SendResult,
    WhatsAppClient,
)
from services.session_actor.authors import RecentAuthors
from services.session_actor.send_queue import ACK_WAIT, SendQueues

log = structlog.get_logger(__name__)

FETCH_WAIT = 5.0
# Once a session's queue was found empty, it is polled this seldom: an idle session costs
# one pull request per IDLE_FETCH_WAIT (a request every 5 s each cost 10,000 idle sessions
# a good part of a core). A reconnection cuts such a wait short (the request is gone).
IDLE_FETCH_WAIT = 60.0
# A send that failed because the connection dropped waits for the reconnect, then this.
NOT_CONNECTED_RETRY = 1.0
# A send step that failed on our side (NATS or JetStream away for a moment) is tried again
# after this; so is fetching the next send.
STEP_RETRY = 1.0
RECENT_SENDS = 10_000

_queued = msgspec.json.Decoder(QueuedSend)


@dataclass(frozen=True)
class SendingKit:
    """What every executor of a node shares: the bookkeeping, the queues and the rules."""

    ledger: Ledger
    queues: SendQueues
    reconnections: Reconnections
    retry: RetryPolicy
    default_pacing: PacingPolicy
    media_limits: MediaLimits
    media_concurrency: int


class SendExecutor:
    """Sends of one session, for the actor that owns it under fencing token `token`.

    `client` gives the actor's current WhatsApp client (it is replaced when credentials are
    destroyed), `connected` is set while the connection is up, `may_act` says whether the
    node still holds its lease, `authors` who wrote the messages the actor saw lately (what
    a reply, reaction, edit or revoke says of its target), `alert` publishes an alert (the
    daily cap reached).
    """

    def __init__(
        self,
        kit: SendingKit,
        *,
        sid: str,
        token: str,
        node_id: str,
        client: Callable[[], WhatsAppClient | None],
        connected: asyncio.Event,
        may_act: Callable[[], bool],
        authors: RecentAuthors,
        alert: Callable[[AlertEvent], Awaitable[None]],
    ) -> None:
        self._kit = kit
        self._ledger = kit.ledger
        self._sid = sid
        self._token = token
        self._node_id = node_id
        self._client = client
        self._connected = connected
        self._may_act = may_act
        self._authors = authors
        self._alert = alert
        self._capped_on: date | None = None  # the day the daily cap alert went out
        self.policy = SendPolicy()
        self.pacer = Pacer(kit.default_pacing, random.Random(), started=time.monotonic())
        self._task: asyncio.Task[None] | None = None
        self._current: Any = None
        self._by_message: OrderedDict[str, str] = OrderedDict()
        self._policy_changed = asyncio.Event()

    def apply(self, policy: SendPolicy) -> None:
        """A new policy for this session; the pacing state starts over with it, at once."""
        self.policy = policy
        self.pacer = Pacer(policy.pacing or self._kit.default_pacing, random.Random(), started=time.monotonic())
        self._policy_changed.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"sender-{self._sid}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._current is not None:
            # Hand the message back at once: the next owner gets it before any later one.
            with contextlib.suppress(Exception):
                await self._current.nak()
            self._current = None

    async def forget(self) -> None:
        """The session is deleted: drop its queue's consumer (the outbound-queue fails what
        is left)."""
        await self.stop()
        await self._kit.queues.forget(self._sid)

    async def _run(self) -> None:
        psub = await self._kit.queues.open(self._sid)
        idle = False
        try:
            while True:
                await self._connected.wait()
                try:
                    msgs = await (self._idle_fetch(psub) if idle else psub.fetch(1, timeout=FETCH_WAIT))
                except TimeoutError:
                    idle = True
                    continue
                except Exception as exc:  # NATS reconnecting, a JetStream error: ask again soon
                    log.warning("fetching the next send failed; asking again", session=self._sid, error=repr(exc))
                    await asyncio.sleep(STEP_RETRY)
                    continue
                idle = False
                for msg in msgs:
                    self._current = msg
                    await self._deliver_or_hand_back(msg)
                    self._current = None
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _idle_fetch(self, psub: Any) -> Any:
        """A long poll of an empty queue, given up when the connection comes back."""
        came_back = self._kit.reconnections.next()
        fetching = asyncio.ensure_future(psub.fetch(1, timeout=IDLE_FETCH_WAIT))
        waking = asyncio.ensure_future(came_back.wait())
        try:
            await asyncio.wait({fetching, waking}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waking.cancel()
            if not fetching.done():
                # A message that still comes is kept by the subscription for the next fetch.
                await cancel_and_wait(fetching)
        if fetching.cancelled():
            raise TimeoutError("the connection came back: poll again")
        return fetching.result()

    async def _deliver_or_hand_back(self, msg: Any) -> None:
        """Deliver; a step that failed hands the send back to be tried again.

        A JetStream write can fail for a moment (a leader election on a NATS cluster): the
        executor must outlive it. The send comes back after STEP_RETRY and its journal record
        says how far the first try got, so the retry repeats what was recorded, fails `ambiguous`
        what may have left, and never sends twice. (An executor that died here left its
        session sending nothing until its actor restarted.)
        """
        try:
            item = _queued.decode(msg.data)
        except msgspec.DecodeError as exc:
            log.error("undecodable queued send terminated", session=self._sid, error=str(exc))
            await msg.term()
            return
        try:
            await self._deliver(msg, item)
        except Exception as exc:
            log.warning("a send step failed; the send is tried again", session=self._sid, id=item.id, error=repr(exc))
            with contextlib.suppress(Exception):
                await msg.nak(delay=STEP_RETRY)

    async def _deliver(self, msg: Any, item: QueuedSend) -> None:
        if await self._expired(item):
            await msg.ack()
            return
        await self._pace(msg)
        if await self._expired(item):
            await msg.ack()
            return
        record = await self._claim(item)
        if record is None:
            await msg.ack()
            return
        try:
            if self.pacer.policy.enabled and self.pacer.policy.typing_seconds:
                await self._typing(msg, item)
            result = await self._send(item)
        except SendError as exc:
            await self._failed_attempt(msg, item, record, exc)
            return
        await self._ledger.sent(self._sid, record, result.message_id)
        self.pacer.sent(time.monotonic())
        self._remember(result.message_id, item.id)
        await msg.ack()

    async def _expired(self, item: QueuedSend) -> bool:
        if not expired(item.expires_at, utcnow()):
            return False
        if not await self._ledger.expire(self._sid, item.id):  # settled already (e.g. by the expiry timer)
            found = await self._ledger.journal.get(self._sid, item.id)
            if found is not None:
                await self._ledger.repeat(self._sid, found[0])
        return True

    async def _pace(self, msg: Any) -> None:
        """Hold the message until the pacer lets it go (pacing delays, it never drops)."""
        while True:
            if not self._connected.is_set():
                await self._holding(msg, self._connected.wait())
            now = utcnow()
            midnight = datetime(now.year, now.month, now.day, tzinfo=now.tzinfo) + timedelta(days=1)
            wait = self.pacer.delay(time.monotonic(), now.date(), (midnight - now).total_seconds())
            if wait <= 0:
                return
            metrics.PACING_DELAY.observe(wait)
            if self.pacer.capped(now.date()) and self._capped_on != now.date():
                self._capped_on = now.date()
                cap = self.pacer.policy.daily_cap or 0
                await self._alert(daily_cap_alert(self._sid, now.date(), cap, now, self._node_id))
            self._policy_changed.clear()
            await self._holding(msg, wait_event(self._policy_changed, wait))

    async def _claim(self, item: QueuedSend) -> SendRecord | None:
        """Make this send ours (`sending`), or settle a copy that is already past that."""
        journal, sid = self._ledger.journal, self._sid
        known = None
        if item.journal_revision is not None:  # as intake recorded it; tried without a read
            known = (accepted_record(item.id, item.accepted_at), item.journal_revision)
        claimed, record = await journal.claim(sid, item.id, self._token, self._node_id, known=known)
        if not claimed and record.state == "sending" and self.policy.resend_ambiguous:
            claimed, record = await journal.claim(sid, item.id, self._token, self._node_id, from_state="sending")
        if claimed:
            return record
        if record.state == "sending":
            error = ErrorBody(
                code="ambiguous", message="an earlier attempt may have reached WhatsApp; not sent again"
            )
            await self._ledger.fail(sid, record, error, dead_letter=item, node=self._node_id)
        else:
            await self._ledger.repeat(sid, record)
        return None

    async def _typing(self, msg: Any, item: QueuedSend) -> None:
        client = self._client()
        if client is not None:
            await client.show_typing(to_jid(item.to))
            await self._holding(msg, asyncio.sleep(self.pacer.policy.typing_seconds))

    async def _send(self, item: QueuedSend) -> SendResult:
        client = self._client()
        if client is None or not self._connected.is_set() or not self._may_act():
            raise SendError("not_connected", "the session is not connected")
        if item.media is None:
            return await client.send(to_jid(item.to), await self._outgoing(item), ref=item.id)
        # A media send downloads (URL) or decodes (base64) its file now, then the adapter
        # uploads and sends it; that can outlast ACK_WAIT, so the message is kept in progress.
        work = asyncio.ensure_future(self._send_media(client, item, item.media))
        if self._current is not None:
            await self._holding(self._current, work)
        return await work

    async def _send_media(self, client: WhatsAppClient, item: QueuedSend, media: Media) -> SendResult:
        async with media_files.slot(self._kit.media_concurrency):
            prepared = await media_files.prepare(media, item.text, self._kit.media_limits)
            return await client.send(to_jid(item.to), await self._outgoing(item, prepared), ref=item.id)

    async def _outgoing(self, item: QueuedSend, media: OutgoingMedia | None = None) -> Outgoing:
        """The message of a queued send, with whose the messages it points at are."""
        target = item.target_id
        return Outgoing(
            text=None if media is not None else item.text,
            media=media,
            parts=SendableParts(**parts(item)),
            reply_to=None if item.reply_to is None else await self._ref(item.reply_to),
            target=None if target is None else await self._ref(target),
        )

    async def _ref(self, message_id: str) -> MessageRef:
        """Whose message `message_id` is: seen lately, or one of ours by the send journal's
        message-id index (it outlives this actor); else a contact's, author unknown."""
        seen = self._authors.get(message_id)
        if seen is not None:
            return seen
        ours = await self._ledger.journal.send_id_of(self._sid, message_id) is not None
        return MessageRef(message_id, from_me=ours)

    async def _failed_attempt(self, msg: Any, item: QueuedSend, record: SendRecord, exc: SendError) -> None:
        ledger, sid = self._ledger, self._sid
        error = ErrorBody(code=exc.code, message=exc.message)
        if exc.ambiguous:
            await ledger.fail(sid, record, ErrorBody(code="ambiguous", message=exc.message), item, self._node_id)
            await msg.ack()
            return
        if exc.permanent:
            await ledger.fail(sid, record, error)
            await msg.ack()
            return
        # A dropped connection is not the message's fault: it costs no attempt.
        counted = exc.code != "not_connected"
        attempts = record.attempts + counted
        if attempts >= self._kit.retry.max_attempts:
            failed = msgspec.structs.replace(record, attempts=attempts)
            await ledger.fail(sid, failed, error, dead_letter=item, node=self._node_id)
            await msg.ack()
            return
        await ledger.release(sid, record, attempts)
        delay = self._kit.retry.delay(attempts, random.Random()) if counted else NOT_CONNECTED_RETRY
        log.info("send failed, retrying", session=sid, id=item.id, error=str(exc), attempt=attempts, delay=delay)
        await msg.nak(delay=delay)

    async def _holding(self, msg: Any, waiting: Any) -> None:
        """Wait while telling JetStream we still work on `msg` (no redelivery meanwhile)."""
        task = asyncio.ensure_future(waiting)
        try:
            while not task.done():
                await msg.in_progress()
                await asyncio.wait([task], timeout=ACK_WAIT / 3)
        finally:
            task.cancel()

    def _remember(self, message_id: str, send_id: str) -> None:
        self._authors.note(message_id, from_me=True)
        self._by_message[message_id] = send_id
        while len(self._by_message) > RECENT_SENDS:
            self._by_message.popitem(last=False)

    async def receipt(self, receipt: Receipt) -> None:
        if receipt.kind not in ("delivered", "read", "played"):
            return
        ledger, sid = self._ledger, self._sid
        for message_id in receipt.message_ids:
            send_id = self._by_message.get(message_id)
            if send_id is None:
                send_id = await ledger.journal.send_id_of(sid, message_id)
                found = None if send_id is None else await ledger.journal.get(sid, send_id)
                # An owner that died between sending and recording `sent` left the send to
                # be failed `ambiguous`: it keeps that one terminal state.
                if found is None or found[0].state != "sent":
                    continue
            # A read receipt implies delivery; the event ids make repeats harmless.
            await ledger.event(sid, send_id, "delivered", message_id=message_id)
            if receipt.kind in ("read", "played"):
                await ledger.event(sid, send_id, "read", message_id=message_id)
