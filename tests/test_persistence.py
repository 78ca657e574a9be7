"""persistence: events into MongoDB (idempotent, batched, never lost) and the history queries.

The service runs in-process (its parts, wired as serve() wires them) against the real servers, except in
`test_service_process`, which runs it as `python -m services.persistence`.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import msgspec
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from contracts.envelope import ContractError, ErrorBody
from contracts.events import Event, MessageEvent, OutboundEvent, StatusEvent
from contracts.types import TERMINAL_OUTBOUND_STATES, OutboundState
from services.common.bus import EventPublisher, encode, new_id
from services.common.config import Settings
from services.devstack.probes import call, call_ok, wait_until
from services.devstack.processes import Stack
from services.devstack.servers import free_port, start_mongo
from services.persistence.main import build_broker
from services.persistence.queries import decode_cursor, encode_cursor
from services.persistence.writer import (
    DURABLE,
    OUTBOUND_ORDER,
    EventConsumer,
    EventWriter,
    PoisonEvent,
    decode_event,
    outbound_rank,
    status_document,
)

# Recent, so that the outbound TTL index (retention: days) never removes a test's sends while
# it runs: a fixed date in the past made the database's TTL pass delete them at random.
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
COLLECTIONS = ("status_history", "messages", "outbound")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def status(sid: str, state: str, t: float, **fields: Any) -> StatusEvent:
    return StatusEvent(event_id=new_id(), session_id=sid, at=at(t), state=state, **fields)  # type: ignore[arg-type]


def message(sid: str, n: int, t: float, chat: str = "15550001111@s.whatsapp.net") -> MessageEvent:
    return MessageEvent(
        event_id=new_id(),
        session_id=sid,
        at=at(t),
        message_id=f"M{n:04d}",
        chat=chat,
        sender=chat,
        from_me=False,
        type="text",
        text=f"hello {n}",
        timestamp=at(t),
    )


def outbound(sid: str, send_id: str, state: str, t: float, **fields: Any) -> OutboundEvent:
    # Event ids as the session actor makes them: one per (send, state).
    return OutboundEvent(
        event_id=f"{sid}:out:{send_id}:{state}",
        session_id=sid,
        at=at(t),
        id=send_id,
        state=state,
        **fields,  # type: ignore[arg-type]
    )


# -- the decisions, without servers --------------------------------------------------------
def test_the_lifecycle_rank() -> None:
    """A send's state is its highest-ranked event (order-independence: see the pipeline test)."""
    assert set(OUTBOUND_ORDER) == set(get_args(OutboundState))  # every contract state is ranked
    rank = {state: outbound_rank(state) for state in OUTBOUND_ORDER}
    assert rank["queued"] < rank["sent"] < rank["delivered"]  # the normal path only moves forward
    ongoing = set(OUTBOUND_ORDER) - TERMINAL_OUTBOUND_STATES
    # a terminal state outranks every other one, so it is never lost ...
    assert min(rank[s] for s in TERMINAL_OUTBOUND_STATES) > max(rank[s] for s in ongoing)
    # ... and failed or expired never override read
    assert rank["read"] == max(rank.values())


def test_cursor_round_trip_and_rejections() -> None:
    when = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
    cursor = encode_cursor("messages", when, "alice/M1")
    assert decode_cursor("messages", cursor) == (when, "alice/M1")
    assert cursor.isascii() and "=" not in cursor
    for bad in ("nope", "!!!", encode_cursor("status", when, "x")):
        with pytest.raises(ContractError) as exc:
            decode_cursor("messages", bad)
        assert exc.value.code == "invalid_request" and exc.value.message.startswith("before:")


def test_decode_event_refuses_what_cannot_be_stored() -> None:
    good = message("alice", 1, 0)
    assert decode_event("wa.evt.alice.message", encode(good)) == good
    for subject, body in [
        ("wa.evt.alice.message", b"{not json"),
        ("wa.evt.alice.message", encode({"event_id": "x"})),
        ("wa.evt.alice.message", b"\xff\xfe"),
        ("wa.evt.alice.unknown", encode(good)),
        ("wa.evt.bob.message", encode(good)),  # body of another session
    ]:
        with pytest.raises(PoisonEvent):
            decode_event(subject, body)


def test_status_documents_keep_no_pairing_secrets() -> None:
    doc = status_document(status("alice", "pairing", 0, qr="2@secret", node="n1"))
    assert "qr" not in doc and "pair_code" not in doc and "reason" not in doc
    assert doc["had_qr"] is True and doc["had_pair_code"] is False and doc["node"] == "n1"


# -- against the servers --------------------------------------------------------------------
class Service:
    """The service's parts as serve() assembles them, in-process: queries and the consumer."""

    def __init__(self, settings: Settings, db: AsyncDatabase, nc: NatsClient) -> None:
        self.writer = EventWriter(db, settings.outbound_retention_days)
        self.broker = build_broker(settings, db)
        self.consumer = EventConsumer(nc.jetstream(), settings.subjects, self.writer)

    async def start(self) -> Service:
        await self.writer.ensure_indexes()
        await self.broker.start()
        await self.consumer.start()
        return self

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.broker.stop()


@pytest.fixture
async def queries(settings: Settings, db: AsyncDatabase) -> AsyncIterator[None]:
    """Only the query side, for tests that store nothing."""
    broker = build_broker(settings, db)
    await broker.start()
    yield
    await broker.stop()


@pytest.fixture
async def service(settings: Settings, nc: NatsClient, db: AsyncDatabase) -> AsyncIterator[Service]:
    running = await Service(settings, db, nc).start()
    yield running
    await running.stop()


async def publish_all(nc: NatsClient, settings: Settings, events: list[Event]) -> None:
    publisher = EventPublisher(nc.jetstream(), settings.subjects)
    for event in events:
        await publisher.publish(event)


async def settled(nc: NatsClient, settings: Settings) -> bool:
    """Every event of the stream was delivered to the consumer and settled."""
    info = await nc.jetstream().consumer_info(settings.subjects.events_stream, DURABLE)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def snapshot(db: AsyncDatabase) -> dict[str, list[dict[str, Any]]]:
    return {name: await db[name].find().sort("_id").to_list(None) for name in COLLECTIONS}


async def test_events_become_documents(
    service: Service, nc: NatsClient, settings: Settings, db: AsyncDatabase
) -> None:
    events: list[Event] = [
        status("alice", "pairing", 0, qr="2@secret-qr", node="n1", token="t1"),
        status("alice", "connected", 1, jid="15551234567@s.whatsapp.net", node="n1", token="t1"),
        message("alice", 1, 2),
        outbound("alice", "s1", "queued", 3),
        outbound("alice", "s1", "sent", 4, message_id="WAID1"),
    ]
    await publish_all(nc, settings, events)
    await wait_until(lambda: settled(nc, settings), what="events settled")

    first = await db["status_history"].find_one({"_id": events[0].event_id})
    assert first is not None
    assert {k: first[k] for k in ("session_id", "at", "state", "node", "token", "had_qr")} == {
        "session_id": "alice", "at": at(0), "state": "pairing", "node": "n1", "token": "t1", "had_qr": True,
    }  # fmt: skip
    assert "qr" not in first
    msg = await db["messages"].find_one({"_id": "alice/M0001"})
    assert (
        msg is not None and msg["text"] == "hello 1" and msg["timestamp"] == at(2) and msg["from_me"] is False
    )
    send = await db["outbound"].find_one({"_id": "alice/s1"})
    assert send is not None
    assert (send["state"], send["message_id"], send["created_at"], send["updated_at"]) == (
        "sent",
        "WAID1",
        at(3),
        at(4),
    )
    assert [h["state"] for h in send["history"]] == ["queued", "sent"]

    indexes = {name: await db[name].index_information() for name in COLLECTIONS}
    assert indexes["outbound"]["created_at_1"]["expireAfterSeconds"] == int(
        settings.outbound_retention_days * 86400
    )
    assert any(ix["key"] == [("session_id", 1), ("message_id", 1)] for ix in indexes["outbound"].values())
    assert any(
        ix["key"][:3] == [("session_id", 1), ("chat", 1), ("timestamp", -1)]
        for ix in indexes["messages"].values()
    )
    assert any(ix["key"][:2] == [("session_id", 1), ("at", -1)] for ix in indexes["status_history"].values())


async def test_replaying_the_stream_changes_nothing(
    service: Service, nc: NatsClient, settings: Settings, db: AsyncDatabase
) -> None:
    events: list[Event] = [status("bob", "connected", 0), message("bob", 1, 1), message("bob", 2, 2)]
    events += [
        outbound("bob", "s1", s, 3 + i, message_id="W1") for i, s in enumerate(["queued", "sent", "read"])
    ]
    await publish_all(nc, settings, events)
    await wait_until(lambda: settled(nc, settings), what="events settled")
    before = await snapshot(db)

    # The same events again, past JetStream's de-duplication (new Nats-Msg-Id) ...
    js = nc.jetstream()
    for event in events:
        kind = {StatusEvent: "status", MessageEvent: "message", OutboundEvent: "outbound"}[type(event)]
        await js.publish(
            settings.subjects.event("bob", kind), encode(event), headers={"Nats-Msg-Id": new_id()}
        )
    await wait_until(lambda: settled(nc, settings), what="copies settled")
    assert await snapshot(db) == before

    # ... and the whole stream from the start, through a new consumer.
    await service.stop()
    await js.delete_consumer(settings.subjects.events_stream, DURABLE)
    again = await Service(settings, db, nc).start()
    try:
        await wait_until(lambda: settled(nc, settings), what="replay settled")
        info = await js.consumer_info(settings.subjects.events_stream, DURABLE)
        assert info.delivered.stream_seq == 2 * len(events)
        assert await snapshot(db) == before
    finally:
        await again.stop()


async def test_lifecycle_never_moves_backwards(
    service: Service, nc: NatsClient, settings: Settings, db: AsyncDatabase
) -> None:
    # Intake's own document exists for s1 (outbound-queue writes it first); not for the others.
    await db["outbound"].insert_one(
        {"_id": "carol/s1", "session_id": "carol", "id": "s1", "to": "15550001111", "state": "queued",
         "created_at": at(0), "send_at": None, "expires_at": None, "text_length": 5}
    )  # fmt: skip
    error = ErrorBody(code="not_connected", message="the session is not connected")
    events: list[Event] = [
        # s1: receipts overtake the send report, read first
        outbound("carol", "s1", "read", 4, message_id="W1"),
        outbound("carol", "s1", "delivered", 3, message_id="W1"),
        outbound("carol", "s1", "sent", 2, message_id="W1"),
        outbound("carol", "s1", "queued", 1),
        # s2: failed; a late delivered must not revive it
        outbound("carol", "s2", "queued", 1),
        outbound("carol", "s2", "failed", 2, error=error),
        outbound("carol", "s2", "delivered", 3, message_id="W2"),
        # s3: expired, then read wins (the recipient did read it); the error goes with `expired`
        outbound("carol", "s3", "expired", 2, error=ErrorBody(code="expired", message="too late")),
        outbound("carol", "s3", "read", 3, message_id="W3"),
        # s4: a $-prefixed id and error text are stored as text, not read as field paths
        outbound("carol", "$s4", "failed", 1, error=ErrorBody(code="x", message="$state")),
    ]
    await publish_all(nc, settings, events)
    await wait_until(lambda: settled(nc, settings), what="events settled")
    docs = {d["id"]: d for d in await db["outbound"].find({"session_id": "carol"}).to_list(None)}

    s1 = docs["s1"]
    assert (s1["state"], s1["message_id"], s1["to"], s1["created_at"], s1["updated_at"]) == (
        "read", "W1", "15550001111", at(0), at(4),
    )  # fmt: skip
    assert [h["state"] for h in s1["history"]] == ["queued", "sent", "delivered", "read"]  # by time
    assert (docs["s2"]["state"], docs["s2"]["error"]) == (
        "failed",
        {"code": "not_connected", "message": error.message},
    )
    assert docs["s2"]["message_id"] == "W2" and len(docs["s2"]["history"]) == 3
    assert docs["s3"]["state"] == "read" and "error" not in docs["s3"]
    assert docs["$s4"]["error"]["message"] == "$state" and docs["$s4"]["created_at"] == at(1)
    # The session actor's receipt lookup
    found = await db["outbound"].find_one({"session_id": "carol", "message_id": "W2"}, {"id": 1})
    assert found is not None and found["id"] == "s2"


async def test_a_send_document_does_not_depend_on_event_order(settings: Settings, db: AsyncDatabase) -> None:
    """The update pipeline against the rank rule: every arrival order, same document."""
    states = ["queued", "sent", "delivered", "failed", "read"]
    extra = {"sent": {"message_id": "W"}, "failed": {"error": ErrorBody(code="x", message="no")}}
    orders = list(itertools.permutations(states))
    event_writer = EventWriter(db, settings.outbound_retention_days)
    started = time.monotonic()
    for step in range(len(states)):  # one bulk write per step keeps each send's order exact
        await event_writer.write(
            [
                outbound("kim", f"p{n}", order[step], states.index(order[step]), **extra.get(order[step], {}))
                for n, order in enumerate(orders)
            ]
        )
    took = time.monotonic() - started
    print(f"\noutbound upserts: {len(orders) * len(states)} in {took:.2f} s")
    docs = await db["outbound"].find({"session_id": "kim"}, {"_id": 0, "id": 0}).to_list(None)
    for doc in docs:  # event ids name the send; everything else must be equal
        doc["history"] = [{k: v for k, v in h.items() if k != "event_id"} for h in doc["history"]]
    assert len(docs) == len(orders)
    assert all(doc == docs[0] for doc in docs)
    assert docs[0]["state"] == max(states, key=outbound_rank) == "read"
    assert "error" not in docs[0] and docs[0]["message_id"] == "W" and docs[0]["created_at"] == at(0)
    assert [h["state"] for h in docs[0]["history"]] == states


async def test_the_events_of_a_send_in_one_batch_are_one_write_with_the_same_result(
    settings: Settings, db: AsyncDatabase
) -> None:
    """Under load a send's `queued`, `sent` and `delivered` arrive in one batch: one write of
    the three gives the document their writes one by one give, a repeat included."""
    event_writer = EventWriter(db, settings.outbound_retention_days)
    lifecycle = [
        outbound("lee", "one-by-one", "queued", 0),
        outbound("lee", "one-by-one", "sent", 1, message_id="W9"),
        outbound("lee", "one-by-one", "delivered", 2),
    ]
    for event in lifecycle:
        await event_writer.write([event])
    together = [msgspec.structs.replace(e, id="together", event_id=e.event_id.replace("one-by-one", "together")) for e in lifecycle]
    writes = []
    real_bulk = event_writer.outbound.bulk_write

    async def counting(ops: Any, **kw: Any) -> Any:
        writes.append(len(ops))
        return await real_bulk(ops, **kw)

    event_writer.outbound.bulk_write = counting  # type: ignore[method-assign]
    await event_writer.write([together[1], together[0], together[2], together[1]])  # a redelivery too
    assert writes == [1]
    docs = {d.pop("_id"): d for d in await db["outbound"].find({"session_id": "lee"}, {"id": 0}).to_list(None)}
    for doc in docs.values():
        doc["history"] = [{k: v for k, v in h.items() if k != "event_id"} for h in doc["history"]]
    assert docs["lee/together"] == docs["lee/one-by-one"]
    assert [h["state"] for h in docs["lee/together"]["history"]] == ["queued", "sent", "delivered"]


async def test_poison_is_terminated_and_the_stream_moves_on(
    service: Service, nc: NatsClient, settings: Settings, db: AsyncDatabase
) -> None:
    js = nc.jetstream()
    await js.publish(settings.subjects.event("dave", "message"), b"\x00 not an event")
    await js.publish(
        settings.subjects.event("dave", "status"), encode({"event_id": "e1", "session_id": "dave"})
    )
    await publish_all(nc, settings, [message("dave", 1, 1), status("dave", "connected", 2)])
    await wait_until(lambda: settled(nc, settings), what="stream settled")
    assert await db["messages"].count_documents({"session_id": "dave"}) == 1
    assert await db["status_history"].count_documents({"session_id": "dave"}) == 1
    info = await js.consumer_info(settings.subjects.events_stream, DURABLE)
    assert info.num_redelivered == 0  # terminated, not retried


async def test_history_pages(service: Service, nc: NatsClient, settings: Settings, db: AsyncDatabase) -> None:
    chat_a, chat_b = "111111@s.whatsapp.net", "222222@g.us"
    # Ties on purpose: pairs of messages share a timestamp.
    msgs = [message("erin", n, n // 2, chat=chat_a if n % 3 else chat_b) for n in range(11)]
    statuses = [status("erin", s, i) for i, s in enumerate(["created", "pairing", "connecting", "connected"])]
    sends = [outbound("erin", f"s{n}", "queued", n) for n in range(5)]
    await publish_all(nc, settings, [*msgs, *statuses, *sends])
    await wait_until(lambda: settled(nc, settings), what="events settled")
    subject = settings.subjects.history

    async def all_pages(kind: str, key: str, body: dict[str, Any]) -> list[list[dict[str, Any]]]:
        pages, cursor = [], None
        while True:
            data = await call_ok(
                nc, subject("erin", kind), {**body, **({"before": cursor} if cursor else {})}
            )
            pages.append(data[key])
            cursor = data.get("next")
            if cursor is None:
                return pages

    pages = await all_pages("messages", "messages", {"limit": 3})
    assert [len(p) for p in pages] == [3, 3, 3, 2]
    newest_first = sorted(msgs, key=lambda m: (m.timestamp, f"erin/{m.message_id}"), reverse=True)
    assert [m["message_id"] for p in pages for m in p] == [m.message_id for m in newest_first]
    assert pages[0][0]["text"] == "hello 10" and pages[0][0]["timestamp"] == f"{at(5):%Y-%m-%dT%H:%M:%S}Z"

    in_b = await all_pages("messages", "messages", {"chat": chat_b, "limit": 2})
    assert [m["message_id"] for p in in_b for m in p] == ["M0009", "M0006", "M0003", "M0000"]

    exact = await call_ok(nc, subject("erin", "messages"), {"limit": 11})
    assert len(exact["messages"]) == 11 and "next" not in exact

    status_pages = await all_pages("status", "statuses", {"limit": 3})
    assert [s["state"] for p in status_pages for s in p] == ["connected", "connecting", "pairing", "created"]
    assert status_pages[0][0]["event_id"] == statuses[-1].event_id

    send_pages = await all_pages("outbound", "sends", {"limit": 2})
    assert [s["id"] for p in send_pages for s in p] == ["s4", "s3", "s2", "s1", "s0"]
    one = await call_ok(nc, subject("erin", "outbound"), {"id": "s2"})
    assert one["state"] == "queued" and [h["event_id"] for h in one["history"]] == ["erin:out:s2:queued"]

    # A session without history (unknown or deleted) has empty pages.
    assert await call_ok(nc, subject("nobody", "messages"), {}) == {"messages": []}
    assert await call_ok(nc, subject("nobody", "outbound"), {}) == {"sends": []}


@pytest.mark.parametrize(
    ("kind", "body", "code", "message"),
    [
        ("messages", b"{not json", "invalid_request", "malformed JSON"),
        ("messages", b"", "invalid_request", "empty body"),
        ("messages", {"limit": 0}, "invalid_request", "limit: expected `int` >= 1"),
        ("messages", {"limit": 201}, "invalid_request", "limit: expected `int` <= 200"),
        ("messages", {"limit": "5"}, "invalid_request", "limit: expected int, got str"),
        ("messages", {"chat": 5}, "invalid_request", "chat: expected str"),
        ("messages", {"before": "garbage"}, "invalid_request", "before: not a cursor"),
        ("status", {"before": encode_cursor("messages", T0, "x")}, "invalid_request", "before: this cursor"),
        ("outbound", {"id": "s1", "limit": 5}, "invalid_request", "id: cannot be combined"),
        ("outbound", {"id": ""}, "invalid_request", "id: too short"),
        ("outbound", {"id": "nope"}, "not_found", "no send 'nope'"),
    ],
)
async def test_bad_queries_are_answered_clearly(
    queries: None, nc: NatsClient, settings: Settings, kind: str, body: Any, code: str, message: str
) -> None:
    reply = await call(nc, settings.subjects.history("frank", kind), body)
    assert not reply.ok and reply.error is not None
    assert (reply.error.code, reply.error.message[: len(message)]) == (code, message), reply.error


async def test_invalid_session_id_in_subject(queries: None, nc: NatsClient, settings: Settings) -> None:
    reply = await call(nc, settings.subjects.history("bad~id", "status"), {})
    assert reply.error is not None and reply.error.code == "invalid_request"
    assert (
        reply.error.message
        == "session id: expected a session id of 1-64 characters A-Z a-z 0-9 _ -, got 'bad~id'"
    )


async def test_nothing_is_lost_while_mongodb_is_down(
    nc: NatsClient, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("services.persistence.writer.RETRY_DELAY", 0.5)
    server = start_mongo(tmp_path / "own-mongo", free_port())
    # The same durable write concern as services.common.mongo.connect, with a short timeout.
    client: AsyncMongoClient = AsyncMongoClient(
        server.url, tz_aware=True, serverSelectionTimeoutMS=300, w="majority", journal=True
    )
    db = client[settings.mongo_db]
    service = await Service(settings, db, nc).start()
    try:
        await publish_all(nc, settings, [message("gina", 1, 1)])
        await wait_until(lambda: settled(nc, settings), what="first event settled")
        server.kill()  # not a clean stop: what was acked before must survive it too
        await publish_all(nc, settings, [message("gina", n, n) for n in range(2, 6)])

        async def redelivered() -> bool:
            info = await nc.jetstream().consumer_info(settings.subjects.events_stream, DURABLE)
            return info.num_redelivered > 0

        await wait_until(redelivered, what="the batch handed back and redelivered, not acked")
        assert not await settled(nc, settings)

        server = start_mongo(tmp_path / "own-mongo", server.port)  # same storage, same port
        await wait_until(lambda: settled(nc, settings), timeout=20, what="redelivered events stored")
        assert await db["messages"].count_documents({"session_id": "gina"}) == 5
    finally:
        await service.stop()
        await client.drop_database(settings.mongo_db)
        await client.close()
        server.stop()


async def test_throughput(service: Service, nc: NatsClient, settings: Settings, db: AsyncDatabase) -> None:
    """Measured, not asserted: the dev MongoDB-compatible server limits updates per second."""
    n = 1500
    events: list[Event] = []
    for i in range(n // 3):
        events += [
            message("hana", i, i),
            status("hana", "connected", i),
            outbound("hana", f"s{i}", "sent", i),
        ]
    started = time.monotonic()
    await publish_all(nc, settings, events)
    published = time.monotonic()
    await wait_until(lambda: settled(nc, settings), timeout=60, interval=0.1, what="all stored")
    took = time.monotonic() - started
    print(
        f"\npersistence throughput: {n} events (1/3 each status/message/outbound) stored in {took:.2f} s "
        f"= {n / took:.0f} events/s (publishing took {published - started:.2f} s)"
    )
    assert await db["outbound"].count_documents({"session_id": "hana"}) == n // 3


async def test_service_process(stack: Stack, nc: NatsClient, settings: Settings) -> None:
    """`python -m services.persistence`: starts, stores, answers, and stops on SIGTERM."""
    proc = stack.start("persistence")
    await publish_all(nc, settings, [status("ivan", "created", 0), message("ivan", 1, 1)])

    async def stored() -> Any:
        try:
            reply = await call(nc, settings.subjects.history("ivan", "messages"), {}, timeout=1)
        except nats.errors.NoRespondersError:
            return False  # still starting
        return reply.ok and reply.data["messages"]

    await wait_until(stored, timeout=20, what="message stored by the service process")
    page = await call_ok(nc, settings.subjects.history("ivan", "status"), {})
    assert [s["state"] for s in page["statuses"]] == ["created"]
    proc.signal(signal.SIGTERM)
    assert proc.wait(15) == 0
