"""The send journal: duplicate detection and exactly one claim per send, on real NATS KV."""

from __future__ import annotations

import asyncio

from contracts.types import utcnow
from services.sending.journal import SendJournal, SendRecord


async def journal(nc, settings) -> SendJournal:
    return SendJournal(await nc.jetstream().key_value(settings.subjects.sends_bucket))


async def test_a_second_accept_of_an_id_returns_the_first_record(nc, settings) -> None:
    sends = await journal(nc, settings)
    first, revision = await sends.accept("alice", "m1", utcnow())
    assert first is None and revision
    again, same = await sends.accept("alice", "m1", utcnow())
    assert again is not None and again.state == "accepted" and again.id == "m1" and same == revision
    assert (await sends.accept("bob", "m1", utcnow()))[0] is None  # ids are per session


async def test_only_one_of_many_concurrent_claims_wins(nc, settings) -> None:
    sends = await journal(nc, settings)
    await sends.accept("alice", "m2", utcnow())
    results = await asyncio.gather(*(sends.claim("alice", "m2", f"t{i}", f"n{i}") for i in range(10)))
    winners = [record for won, record in results if won]
    assert len(winners) == 1 and winners[0].state == "sending"
    assert all(record.state == "sending" for won, record in results if not won)


async def test_a_claim_with_the_revision_from_intake_skips_the_read_unless_the_record_moved(nc, settings) -> None:
    sends = await journal(nc, settings)
    at = utcnow()
    _, revision = await sends.accept("alice", "m5", at)
    as_accepted = SendRecord(id="m5", state="accepted", accepted_at=at)
    won, record = await sends.claim("alice", "m5", "t1", "n1", known=(as_accepted, revision))
    assert won and record.token == "t1"
    # Handed back after a failed attempt: the revision from intake is stale; the claim reads
    # the record and keeps what the attempt taught (the attempt count).
    await sends.settle("alice", SendRecord(id="m5", state="accepted", accepted_at=at, attempts=1))
    won, record = await sends.claim("alice", "m5", "t2", "n2", known=(as_accepted, revision))
    assert won and record.token == "t2" and record.attempts == 1
    # A stale guess never wins over a state that moved on.
    await sends.settle("alice", SendRecord(id="m5", state="sent", message_id="X"))
    won, record = await sends.claim("alice", "m5", "t3", "n3", known=(as_accepted, revision))
    assert not won and record.state == "sent"


async def test_settled_sends_are_never_claimed_again(nc, settings) -> None:
    sends = await journal(nc, settings)
    await sends.accept("alice", "m3", utcnow())
    won, _ = await sends.claim("alice", "m3", "t1", "n1")
    assert won
    await sends.settle("alice", SendRecord(id="m3", state="sent", message_id="3EB0X"))
    won, record = await sends.claim("alice", "m3", "t2", "n2")
    assert not won and record.message_id == "3EB0X"


async def test_a_send_handed_back_can_be_claimed_again(nc, settings) -> None:
    sends = await journal(nc, settings)
    await sends.accept("alice", "m4", utcnow())
    await sends.claim("alice", "m4", "t1", "n1")
    await sends.settle("alice", SendRecord(id="m4", state="accepted"))
    won, intent = await sends.claim("alice", "m4", "t2", "n2")
    assert won and intent.token == "t2"


async def test_ids_are_free_text(nc, settings) -> None:
    sends = await journal(nc, settings)
    for weird in ("a b/c*>", "ü" * 128, "$KV.x"):
        assert (await sends.accept("alice", weird, utcnow()))[0] is None
        assert (await sends.get("alice", weird))[0].id == weird


async def test_whatsapp_message_ids_lead_back_to_their_send(nc, settings) -> None:
    sends = await journal(nc, settings)
    await sends.note_message("alice", "3EB0ABC", "order 7/b")
    assert await sends.send_id_of("alice", "3EB0ABC") == "order 7/b"
    assert await sends.send_id_of("bob", "3EB0ABC") is None  # per session
    assert await sends.send_id_of("alice", "3EB0XYZ") is None
