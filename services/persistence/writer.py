"""The events stream into MongoDB: pulled in batches, written idempotently, then settled.

Collections (database `settings.mongo_db`):

    status_history  one document per status event, `_id` = event_id (QR and pairing codes
                    are pairing secrets: only `had_qr` / `had_pair_code` are kept)
    messages        inbound messages, `_id` = "<sid>/<message_id>"
    outbound        one document per send, `_id` = "<sid>/<id>", upserted by its events
                    (the recipient comes with `queued`)
    alerts          one document per alert event, `_id` = event_id

Every write can be applied any number of times, in any order, with the same result, so a
replay of the stream, a redelivery, or two persistence replicas sharing the consumer change
nothing: inserts keyed by the event (a duplicate key means "already stored"), and for sends
an update whose every field is an order-independent merge (see `outbound_update`).

Consumption is a plain pull loop (`EventConsumer`) rather than a FastStream batch subscriber:
FastStream 0.7.8's batch loop catches `nats.errors.TimeoutError`, but nats-py 2.16's fetch
can raise the builtin `TimeoutError` once a partial batch is collected, and that batch is
then abandoned un-acked until the ack wait expires. A direct `fetch` also returns as soon as
anything is available, so a quiet stream adds no batching delay and a busy one fills batches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pymongo import ASCENDING, DESCENDING, InsertOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, PyMongoError

from contracts.alerts import AlertEvent
from contracts.events import Event, MessageEvent, OutboundEvent, StatusEvent
from contracts.subjects import Subjects, token
from contracts.types import utcnow
from services.common.mongo import DUPLICATE_KEY
from services.common.tasks import cancel_and_wait
from services.persistence import metrics

log = structlog.get_logger(__name__)

DURABLE = "persistence"
BATCH = 200
# How long one pull waits when the stream is quiet; also the longest a stop waits for it.
FETCH_WAIT = 1.0
# Longer than a bulk write can take while MongoDB fails over (server selection: 10 s).
ACK_WAIT = 60.0
# A batch the database could not take is handed back to JetStream for this long.
RETRY_DELAY = 2.0
# How long a stop waits for the batch in hand.
STOP_GRACE = 3.0
# A single event whose write keeps being refused (not the database being down: that is
# retried forever) is given up after this many deliveries, loudly; it stays in the stream,
# so a replay after the fix stores it.
GIVE_UP_AFTER = 10

# The lifecycle rule of a send. `state` is the highest-ranked state of all its events.
# The rank is a total order, so the result does not depend on the order events arrive in:
# a send never moves backwards, a terminal state (expired, failed, read) is only ever
# replaced by a higher terminal state, and `read` — proof the recipient got the message —
# outranks everything. `failed` outranks `expired` only to keep the order total; a send
# that reported both is contradictory either way, and both stay in its history.
OUTBOUND_ORDER: tuple[str, ...] = ("queued", "sent", "delivered", "expired", "failed", "read")


def outbound_rank(state: str) -> int:
    return OUTBOUND_ORDER.index(state)


class PoisonEvent(ValueError):
    """A message on the events stream that is not a valid event; it can never be stored."""


_decoders: dict[str, msgspec.json.Decoder[Any]] = {
    "status": msgspec.json.Decoder(StatusEvent),
    "message": msgspec.json.Decoder(MessageEvent),
    "outbound": msgspec.json.Decoder(OutboundEvent),
    "alert": msgspec.json.Decoder(AlertEvent),
}


def decode_event(subject: str, data: bytes) -> Event:
    """The event published on `<prefix>.evt.<sid>.<kind>`; PoisonEvent says why not."""
    parts = subject.split(".")
    decoder = _decoders.get(parts[-1]) if len(parts) == 4 else None
    if decoder is None:
        raise PoisonEvent(f"not an event subject: {subject}")
    try:
        event: Event = decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise PoisonEvent(str(exc)) from None
    # History is looked up by the subject's session; a body for another session is a bug.
    if event.session_id != token(subject, -2):
        raise PoisonEvent(f"session_id {event.session_id!r} does not match the subject")
    return event


# -- documents ----------------------------------------------------------------------------
def _fields(event: Event, *leave_out: str) -> dict[str, Any]:
    return {k: v for k, v in msgspec.structs.asdict(event).items() if v is not None and k not in leave_out}


def status_document(event: StatusEvent) -> dict[str, Any]:
    doc = _fields(event, "event_id", "qr", "pair_code")
    doc["_id"] = event.event_id
    doc["had_qr"] = event.qr is not None
    doc["had_pair_code"] = event.pair_code is not None
    return doc


def message_document(event: MessageEvent) -> dict[str, Any]:
    # Its parts (media, quoted, reaction, ...) as subdocuments; times stay dates (pages sort by them).
    return {"_id": f"{event.session_id}/{event.message_id}", **msgspec.to_builtins(event, builtin_types=(datetime,))}


def outbound_key(event: OutboundEvent) -> str:
    return f"{event.session_id}/{event.id}"


def _literal(value: Any) -> dict[str, Any]:
    # Values from events ("$..." send ids or error texts) must never read as field paths.
    return {"$literal": value}


def outbound_update(events: Sequence[OutboundEvent]) -> list[dict[str, Any]]:
    """An update pipeline applying outbound events of one send to its document (upsert).

    Each field is a merge that gives the same result in any order and any number of times:
    identity is kept if present; `created_at` is the earliest time known and `updated_at`
    the latest; `state` (with its `error`) only moves to a higher rank; `history` gains each
    event once (by event_id), sorted by time. (Only the error text of two different events
    of the same state depends on order: the first one's stays.) Several events of a send in
    one batch (its `queued`, `sent` and `delivered` under load) are one write: the database
    is the dearest part of a send.
    """
    steps: dict[str, dict[str, Any]] = {}
    for event in events:
        step = _fields(event, "session_id", "id", "to")
        if event.error is not None:
            step["error"] = msgspec.to_builtins(event.error)  # without the fields left out
        steps.setdefault(event.event_id, step)
    best = max(events, key=lambda event: outbound_rank(event.state))  # the first of equal rank
    best_error = steps[best.event_id].get("error")
    first = events[0]
    advances = {"$gt": [outbound_rank(best.state), {"$indexOfArray": [list(OUTBOUND_ORDER), "$state"]}]}
    history = {"$ifNull": ["$history", []]}
    known = {"$map": {"input": history, "in": "$$this.event_id"}}
    new_steps = {"$filter": {"input": _literal(list(steps.values())), "cond": {"$not": [{"$in": ["$$this.event_id", known]}]}}}
    fields: dict[str, Any] = {
        "session_id": {"$ifNull": ["$session_id", _literal(first.session_id)]},
        "id": {"$ifNull": ["$id", _literal(first.id)]},
        # Intake's time, or the earliest event's if events came first (the TTL index needs one).
        "created_at": {"$min": ["$created_at", min(event.at for event in events)]},
        "updated_at": {"$max": ["$updated_at", max(event.at for event in events)]},
        "state": {"$cond": [advances, _literal(best.state), "$state"]},
        # The error describes the current state: set, kept or cleared together with it.
        "error": {"$cond": [advances, _literal(best_error) if best_error else "$$REMOVE", "$error"]},
        "history": {"$sortArray": {"input": {"$concatArrays": [history, new_steps]}, "sortBy": {"at": 1, "event_id": 1}}},
    }
    to = next((event.to for event in events if event.to is not None), None)
    if to is not None:
        fields["to"] = {"$ifNull": ["$to", _literal(to)]}
    message_ids = [event.message_id for event in events if event.message_id is not None]
    if message_ids:
        # One per send; should two ever differ, the smaller wins, whatever the order.
        fields["message_id"] = {"$min": ["$message_id", _literal(min(message_ids))]}
    return [{"$set": fields}]


# -- writing ------------------------------------------------------------------------------
WriteOp = InsertOne[Any] | UpdateOne


class EventWriter:
    def __init__(self, db: AsyncDatabase, outbound_retention_days: float) -> None:
        self.status = db["status_history"]
        self.messages = db["messages"]
        self.outbound = db["outbound"]
        self.alerts = db["alerts"]
        self._outbound_ttl = int(outbound_retention_days * 86400)

    async def ensure_indexes(self) -> None:
        # Pages are read newest first with `_id` as the tie-breaker (see queries.py).
        await self.status.create_index([("session_id", ASCENDING), ("at", DESCENDING), ("_id", DESCENDING)])
        await self.messages.create_index(
            [("session_id", ASCENDING), ("chat", ASCENDING), ("timestamp", DESCENDING), ("_id", DESCENDING)]
        )
        await self.messages.create_index(
            [("session_id", ASCENDING), ("timestamp", DESCENDING), ("_id", DESCENDING)]
        )
        # The session actor finds a send by WhatsApp message id when a receipt arrives.
        await self.outbound.create_index([("session_id", ASCENDING), ("message_id", ASCENDING)])
        # Same specification as outbound-queue's (identical index requests are no-ops).
        await self.outbound.create_index([("created_at", ASCENDING)], expireAfterSeconds=self._outbound_ttl)
        await self.outbound.create_index(
            [("session_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)]
        )

    async def write(self, events: Sequence[Event]) -> dict[int, str]:
        """Store `events` with one unordered bulk write per collection.

        Returns the positions of events whose write the database refused, with its reason.
        Raises PyMongoError when the database could not be used at all.
        """
        plans: dict[str, tuple[AsyncCollection, list[tuple[list[int], WriteOp]]]] = {}
        sends: dict[str, list[int]] = {}  # the events of each send, by position
        for position, event in enumerate(events):
            if isinstance(event, OutboundEvent):
                sends.setdefault(outbound_key(event), []).append(position)
                continue
            collection, op = self._insert(event)
            plans.setdefault(collection.name, (collection, []))[1].append(([position], op))
        for key, positions in sends.items():
            update = outbound_update([events[p] for p in positions])  # type: ignore[misc]
            plans.setdefault(self.outbound.name, (self.outbound, []))[1].append(
                (positions, UpdateOne({"_id": key}, update, upsert=True))
            )
        results = await asyncio.gather(
            *(self._bulk(c, ops) for c, ops in plans.values()), return_exceptions=True
        )
        refused: dict[int, str] = {}
        for result in results:
            if isinstance(result, BaseException):
                raise result  # every write is idempotent: the whole batch is simply retried
            refused.update(result)
        return refused

    def _insert(self, event: Event) -> tuple[AsyncCollection, WriteOp]:
        if isinstance(event, StatusEvent):
            return self.status, InsertOne(status_document(event))
        if isinstance(event, MessageEvent):
            return self.messages, InsertOne(message_document(event))
        return self.alerts, InsertOne({**_fields(event, "event_id"), "_id": event.event_id})

    @staticmethod
    async def _bulk(collection: AsyncCollection, ops: list[tuple[list[int], WriteOp]]) -> dict[int, str]:
        """One unordered bulk write; the positions of the events whose write was refused."""
        try:
            await collection.bulk_write([op for _, op in ops], ordered=False)
        except BulkWriteError as exc:
            if exc.details.get("writeConcernErrors"):
                raise  # written, but maybe not durably: the whole batch is retried
            refused: dict[int, str] = {}
            for error in exc.details.get("writeErrors", []):
                positions, op = ops[error["index"]]
                if error.get("code") == DUPLICATE_KEY and isinstance(op, InsertOne):
                    continue  # stored by an earlier delivery
                # e.g. two replicas upserting one new send at once: retried later
                refused.update(dict.fromkeys(positions, str(error.get("errmsg", error))))
            return refused
        return {}


async def store_batch(writer: EventWriter, msgs: Sequence[Msg]) -> None:
    """Store one pulled batch and settle every message: ack what is stored, terminate what
    can never be stored, hand back (NAK with a delay) what the database did not take."""
    events: list[Event] = []
    decoded: list[Msg] = []
    for msg in msgs:
        try:
            events.append(decode_event(msg.subject, msg.data))
        except PoisonEvent as exc:
            log.error(
                "undecodable event terminated",
                subject=msg.subject,
                stream_seq=msg.metadata.sequence.stream,
                reason=str(exc),
                body=msg.data[:200],
            )
            await msg.term()
            continue
        decoded.append(msg)
    if not events:
        return
    started = time.monotonic()
    try:
        refused = await writer.write(events)
    except PyMongoError as exc:
        log.warning(
            "database unavailable, batch handed back",
            events=len(events),
            error=f"{type(exc).__name__}: {str(exc)[:160]}",  # pymongo appends the whole topology
            retry_in=RETRY_DELAY,
        )
        for msg in decoded:
            await msg.nak(delay=RETRY_DELAY)
        return
    now = utcnow()
    for position, (msg, event) in enumerate(zip(decoded, events, strict=True)):
        reason = refused.get(position)
        if reason is None:
            metrics.EVENTS_STORED.labels(token(msg.subject, -1)).inc()
            metrics.LAG.observe(max(0.0, (now - event.at).total_seconds()))
            await msg.ack()
        elif msg.metadata.num_delivered >= GIVE_UP_AFTER:
            log.error(
                "event write refused, giving up", event_id=event.event_id, subject=msg.subject, reason=reason
            )
            await msg.term()
        else:
            log.warning("event write refused, retrying", event_id=event.event_id, reason=reason)
            await msg.nak(delay=RETRY_DELAY)
    log.debug(
        "batch stored",
        events=len(events),
        refused=len(refused),
        ms=round((time.monotonic() - started) * 1000),
    )


def events_consumer() -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=DURABLE,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT,
        max_deliver=-1,  # the server never drops an event; store_batch decides when to give up
        max_ack_pending=10 * BATCH,
    )


class EventConsumer:
    """Pulls the events stream through the durable consumer (replicas share it) and stores it.

    Nothing is acked before it is stored. If anything unexpected escapes, the batch stays
    un-acked and JetStream redelivers it after ACK_WAIT; the loop itself keeps running.
    """

    def __init__(self, js: JetStreamContext, subjects: Subjects, writer: EventWriter) -> None:
        self._js = js
        self._subjects = subjects
        self._writer = writer
        self._running = False
        self._task: asyncio.Task[None] | None = None
        self._sub: JetStreamContext.PullSubscription | None = None

    async def start(self) -> None:
        self._sub = await self._js.pull_subscribe(
            self._subjects.events_all,
            durable=DURABLE,
            stream=self._subjects.events_stream,
            config=events_consumer(),
        )
        self._running = True
        self._task = asyncio.create_task(self._run(self._sub), name="persistence-consumer")

    async def stop(self) -> None:
        """Finish the batch in hand (the pull in flight ends within FETCH_WAIT), then stop.

        A batch that cannot be finished within STOP_GRACE (MongoDB or NATS gone) is left
        un-acked: JetStream delivers it again to whichever replica runs next.
        """
        self._running = False
        if self._task is not None:
            try:
                async with asyncio.timeout(STOP_GRACE):
                    await asyncio.shield(self._task)
            except TimeoutError:
                log.warning("stopped with a batch unfinished; it will be delivered again", grace=STOP_GRACE)
                await cancel_and_wait(self._task)
            self._task = None
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _run(self, sub: JetStreamContext.PullSubscription) -> None:
        while self._running:
            try:
                msgs = await sub.fetch(BATCH, timeout=FETCH_WAIT)
            except TimeoutError:  # nothing new (nats' TimeoutError is a subclass)
                continue
            except Exception as exc:  # e.g. reconnecting to NATS
                log.warning("pulling events failed, retrying", error=repr(exc), retry_in=RETRY_DELAY)
                await asyncio.sleep(RETRY_DELAY)
                continue
            try:
                await store_batch(self._writer, msgs)
            except Exception:
                log.exception(
                    "storing a batch failed; JetStream redelivers it", events=len(msgs), ack_wait=ACK_WAIT
                )
