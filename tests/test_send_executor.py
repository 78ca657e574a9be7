"""The send executor of one session, driven with fakes for its narrow inputs: a queue that
hands out one message at a time, the send journal on an in-memory KV, and a WhatsApp client
that answers at once. What is checked is what the guarantees rest on: order, the recorded
intent before each send, pacing, retries, and one terminal state per send."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest

from contracts.messages import Contact, Edit, Location, Reaction, Revoke, SendableParts
from contracts.types import utcnow
from services.common.bus import EventPublisher
from services.devstack.probes import wait_until
from services.sending.journal import SendJournal
from services.session_actor import outbound
from services.session_actor.adapters.base import MessageRef, Outgoing, Receipt, SendError
from services.session_actor.authors import RecentAuthors
from services.session_actor.outbound import SendExecutor
from tests.fakes import (
    SUBJECTS,
    FakeClient,
    FakeJetStream,
    FakeKV,
    FakeQueue,
    queued,
    sending_kit,
)

SID, TOKEN = "s1", "00000000000001.0000000000000001"


class Rig:
    def __init__(self, tmp_path: object, **settings: object) -> None:
        self.kv, self.js, self.queue = FakeKV(), FakeJetStream(), FakeQueue()
        self.kit = sending_kit(self.kv, self.js, self.queue, **settings)
        self.journal = SendJournal(self.kv)  # type: ignore[arg-type]
        self.client = FakeClient(SID, tmp_path / "s1.db", lambda _: None, lambda: 0.0)  # type: ignore[operator]
        self.connected = asyncio.Event()
        self.connected.set()
        self.lease_valid = True
        self.authors = RecentAuthors()
        self.executor = SendExecutor(
            self.kit,
            sid=SID,
            token=TOKEN,
            node_id="node-a",
            client=lambda: self.client,
            connected=self.connected,
            may_act=lambda: self.lease_valid,
            authors=self.authors,
            alert=EventPublisher(self.js, SUBJECTS).publish,  # type: ignore[arg-type]
        )

    async def accept(self, send_id: str, **fields: object) -> None:
        """As intake does: the journal record first, then the queued message."""
        _, revision = await self.journal.accept(SID, send_id, utcnow())
        self.queue.add(queued(send_id, SID, text=f"text of {send_id}", journal_revision=revision, **fields))

    async def state(self, send_id: str) -> str | None:
        found = await self.journal.get(SID, send_id)
        return None if found is None else found[0].state

    async def settled(self, *ids: str) -> None:
        async def all_settled() -> bool:
            states = [await self.state(i) for i in ids]
            return all(state in ("sent", "failed", "expired") for state in states)

        await wait_until(all_settled, timeout=10, what=f"{ids} settled")


@pytest.fixture
async def rig(tmp_path: object) -> AsyncIterator[Rig]:
    made: list[Rig] = []

    def make(**settings: object) -> Rig:
        made.append(Rig(tmp_path, **settings))
        return made[-1]

    yield make  # type: ignore[misc]
    for r in made:
        await r.executor.stop()


RigFactory = Callable[..., Rig]


async def test_sends_leave_in_acceptance_order_each_with_its_intent_recorded_first(rig: RigFactory) -> None:
    r = rig()

    async def journal_state(ref: str) -> str | None:
        return await r.state(ref)

    r.client.on_send = journal_state
    for i in range(5):
        await r.accept(f"id{i}")
    r.executor.start()
    await r.settled(*(f"id{i}" for i in range(5)))
    assert [s.ref for s in r.client.sent] == [f"id{i}" for i in range(5)]
    assert {s.journal_state for s in r.client.sent} == {"sending"}  # the intent, recorded before
    assert all(msg.outcome == "ack" for msg in r.queue.delivered)
    assert r.js.outbound_states("id3") == ["sent"]


async def test_pacing_holds_each_send_until_the_gap_has_passed(rig: RigFactory) -> None:
    r = rig(pacing_enabled=True, pacing_per_minute=6000, pacing_burst=10, pacing_min_gap=0.3, pacing_jitter=0.0)
    for i in range(3):
        await r.accept(f"p{i}")
    r.executor.start()
    await r.settled("p0", "p1", "p2")
    gaps = [b.at - a.at for a, b in zip(r.client.sent, r.client.sent[1:], strict=False)]
    assert all(gap >= 0.29 for gap in gaps), gaps  # never faster than the policy allows


async def test_a_transient_failure_is_handed_back_with_a_delay_and_sent_on_the_next_delivery(
    rig: RigFactory,
) -> None:
    r = rig()
    r.client.failures = [SendError("server_error", "try later")]
    await r.accept("t1")
    await r.accept("t2")
    r.executor.start()
    await r.settled("t1", "t2")
    first = r.queue.delivered[0]
    assert first.outcome == "nak" and first.nak_delay is not None and first.nak_delay > 0
    assert [s.ref for s in r.client.sent] == ["t1", "t2"]  # the retried send kept its place
    found = await r.journal.get(SID, "t1")
    assert found is not None and found[0].state == "sent"


async def test_a_send_that_keeps_failing_is_dead_lettered_after_the_last_attempt(rig: RigFactory) -> None:
    r = rig(send_max_attempts=2)
    r.client.failures = [SendError("server_error", "down")] * 2
    await r.accept("d1")
    r.executor.start()
    await r.settled("d1")
    assert r.client.sent == []
    assert r.js.outbound_states("d1") == ["failed"]
    assert [letter["item"]["id"] for letter in r.js.dead_letters()] == ["d1"]


async def test_a_permanent_failure_fails_at_once_without_a_retry(rig: RigFactory) -> None:
    r = rig()
    r.client.failures = [SendError("not_on_whatsapp", "no such number", permanent=True)]
    await r.accept("x1")
    r.executor.start()
    await r.settled("x1")
    assert [msg.outcome for msg in r.queue.delivered] == ["ack"]
    assert r.js.outbound_states("x1") == ["failed"]


async def test_an_ambiguous_failure_is_never_sent_again(rig: RigFactory) -> None:
    r = rig()
    r.client.failures = [SendError("timeout", "no answer from WhatsApp", ambiguous=True)]
    await r.accept("a1")
    r.executor.start()
    await r.settled("a1")
    assert len(r.queue.delivered) == 1 and r.client.sent == []
    event = next(p.body for p in r.js.published if p.body.get("id") == "a1")
    assert event["error"]["code"] == "ambiguous"


async def test_a_send_a_dead_owner_had_begun_is_failed_ambiguous_not_sent(rig: RigFactory) -> None:
    r = rig()
    await r.accept("half")
    # The previous owner recorded its intent, then died before recording the outcome.
    assert (await r.journal.claim(SID, "half", "00000000000001.0000000000000000", "node-dead"))[0]
    r.executor.start()
    await r.settled("half")
    assert r.client.sent == []
    assert r.js.outbound_states("half") == ["failed"]
    assert r.js.dead_letters()[0]["error"]["code"] == "ambiguous"


async def test_an_expired_send_is_reported_expired_and_never_sent(rig: RigFactory) -> None:
    r = rig()
    await r.accept("late", expires_at=utcnow() - timedelta(seconds=1))
    await r.accept("fresh")
    r.executor.start()
    await r.settled("late", "fresh")
    assert [s.ref for s in r.client.sent] == ["fresh"]
    assert r.js.outbound_states("late") == ["expired"]


async def test_nothing_is_sent_while_the_connection_is_down(rig: RigFactory) -> None:
    r = rig()
    r.connected.clear()
    await r.accept("w1")
    r.executor.start()
    await asyncio.sleep(0.2)
    assert r.client.sent == [] and await r.state("w1") == "accepted"
    r.connected.set()
    await r.settled("w1")
    assert [s.ref for s in r.client.sent] == ["w1"]


async def test_receipts_become_delivered_and_read_events_of_the_send(rig: RigFactory) -> None:
    r = rig()
    await r.accept("r1")
    r.executor.start()
    await r.settled("r1")
    await r.executor.receipt(Receipt("read", ("wa-r1",), "15550001111@s.whatsapp.net"))
    assert r.js.outbound_states("r1") == ["sent", "delivered", "read"]


async def test_stopping_hands_the_message_in_hand_back_at_once(rig: RigFactory) -> None:
    r = rig(pacing_enabled=True, pacing_per_minute=1, pacing_burst=1, pacing_min_gap=60, pacing_jitter=0.0)
    await r.accept("first")
    await r.accept("held")
    r.executor.start()
    await wait_until(lambda: len(r.queue.delivered) == 2, what="the second send held by pacing")
    await r.executor.stop()
    assert r.queue.delivered[1].outcome == "nak"  # back in the queue, ahead of later sends
    assert await r.state("held") == "accepted"  # never claimed: nothing ambiguous left behind


async def test_forgetting_a_deleted_session_drops_its_queue(rig: RigFactory) -> None:
    r = rig()
    r.executor.start()
    await r.executor.forget()
    assert r.queue.forgotten


async def test_every_body_reaches_the_client_with_whose_its_target_is(rig: RigFactory) -> None:
    r = rig()
    await r.journal.note_message(SID, "wa-earlier", "earlier")  # sent by a previous owner of the session
    r.authors.note("IN-1", from_me=False, sender="15550004444:2@s.whatsapp.net")  # received lately
    bodies: list[tuple[str, dict[str, object]]] = [
        ("first", {}),
        ("reply", {"reply_to": "IN-1"}),
        ("react", {"text": None, "reaction": Reaction("wa-first", "👍")}),
        ("edit", {"text": None, "edit": Edit("wa-first", "fixed")}),
        ("revoke", {"text": None, "revoke": Revoke("wa-earlier")}),
        ("react-unknown", {"text": None, "reaction": Reaction("IN-9", "")}),
        ("place", {"text": None, "location": Location(52.52, 13.405, "Office")}),
        ("card", {"text": None, "contact": Contact("Ada", "BEGIN:VCARD\nFN:Ada\nEND:VCARD")}),
    ]
    for send_id, fields in bodies:
        _, revision = await r.journal.accept(SID, send_id, utcnow())
        r.queue.add(queued(send_id, SID, **{"text": f"text of {send_id}", "journal_revision": revision, **fields}))
    r.executor.start()
    await r.settled(*(send_id for send_id, _ in bodies))
    sent = {s.ref: s.message for s in r.client.sent}
    assert sent["first"] == Outgoing(text="text of first")
    assert sent["reply"] == Outgoing(text="text of reply", reply_to=MessageRef("IN-1", False, "15550004444:2@s.whatsapp.net"))
    assert sent["react"] == Outgoing(parts=SendableParts(reaction=Reaction("wa-first", "👍")), target=MessageRef("wa-first", from_me=True))
    assert sent["edit"].target == MessageRef("wa-first", from_me=True) and sent["edit"].parts.edit == Edit("wa-first", "fixed")
    assert sent["revoke"].target == MessageRef("wa-earlier", from_me=True)  # known from the journal's index
    assert sent["react-unknown"].target == MessageRef("IN-9", from_me=False)  # a contact's, author unknown
    assert sent["place"] == Outgoing(parts=SendableParts(location=Location(52.52, 13.405, "Office")))
    assert sent["card"].parts.contact == Contact("Ada", "BEGIN:VCARD\nFN:Ada\nEND:VCARD")


async def test_an_idle_queue_is_polled_seldom_and_again_at_once_when_the_connection_comes_back(
    rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle session costs one pull request per IDLE_FETCH_WAIT, not per FETCH_WAIT; a
    reconnection (the server forgot the request) makes the executor ask again at once."""
    monkeypatch.setattr(outbound, "FETCH_WAIT", 0.05)
    r = rig()
    r.executor.start()
    await wait_until(lambda: outbound.IDLE_FETCH_WAIT in r.queue.fetches, what="the long poll of an idle queue")
    await r.accept("while-idle")
    await r.settled("while-idle")  # a long poll still gets a new send at once
    await wait_until(lambda: r.queue.fetches[-1] == outbound.IDLE_FETCH_WAIT, what="idle again")
    r.queue.requests_lost = True  # the connection dropped: the server forgot the long poll
    await r.accept("after-reconnect")
    polls = len(r.queue.fetches)
    r.queue.requests_lost = False
    await r.kit.reconnections.happened()
    await r.settled("after-reconnect")
    assert len(r.queue.fetches) > polls  # asked again at once, not after IDLE_FETCH_WAIT


async def test_a_send_step_that_fails_on_our_side_is_tried_again_and_the_queue_goes_on(
    rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (`python -m bench cluster` and its test): a `sent` event that could not be
    published during a leader election killed the session's executor; the send stayed without
    a terminal state and every later send of the session waited until its actor restarted."""
    monkeypatch.setattr(outbound, "STEP_RETRY", 0.05)
    r = rig()
    await r.accept("e1")
    r.js.failing = 1  # the first publish from here: e1's `sent` event
    await r.accept("e2")
    r.executor.start()
    await r.settled("e1", "e2")
    await wait_until(lambda: r.js.outbound_states("e1") == ["sent"], what="e1's sent event, told again")
    assert [s.ref for s in r.client.sent] == ["e1", "e2"]  # sent once each, in order
    assert r.js.outbound_states("e2") == ["sent"]
