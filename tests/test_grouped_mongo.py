"""Grouped reads and writes (services/common/mongo.py) against the real dev database server."""

from __future__ import annotations

import asyncio

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from services.common.mongo import GroupCommit, GroupRead


async def queries(db: AsyncDatabase) -> int:
    status = await db.client.admin.command("serverStatus")
    return int(status["opcounters"]["query"])


async def test_concurrent_reads_share_queries_and_each_gets_its_own_document(db: AsyncDatabase) -> None:
    docs = db["grouped"]
    await docs.insert_many([{"_id": f"s{i}", "n": i, "deleting": i == 7} for i in range(200)])
    reads = GroupRead(docs, where={"deleting": {"$ne": True}}, max_batch=64)
    wanted = [f"s{i}" for i in range(200)] + ["missing"]

    before = await queries(db)
    found = await asyncio.gather(*(reads.get(sid) for sid in wanted))
    used = await queries(db) - before

    assert [d["n"] if d else None for d in found[:7]] == list(range(7))
    assert found[7] is None  # left out by `where`
    assert [d["n"] for d in found[8:200]] == list(range(8, 200))
    assert found[200] is None
    # The first read goes alone, the other 200 in batches of at most 64.
    assert used <= 1 + 4, used


async def test_a_failed_query_reaches_every_reader_and_the_next_batch_works(db: AsyncDatabase) -> None:
    docs = db["grouped"]
    await docs.insert_one({"_id": "a"})
    broken = GroupRead(docs, where={"$bad": 1})
    results = await asyncio.gather(broken.get("a"), broken.get("b"), return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results), results
    assert await GroupRead(docs).get("a") == {"_id": "a"}


async def test_blind_updates_do_not_recheck_missing_documents(db: AsyncDatabase) -> None:
    docs = db["grouped"]
    await docs.insert_many([{"_id": f"s{i}", "token": ""} for i in range(50)])
    writes = GroupCommit(docs)
    updates_before = (await db.client.admin.command("serverStatus"))["opcounters"]["update"]
    # Half of them name documents that do not exist: a checked update would redo the batch one by one.
    await asyncio.gather(*(writes.apply({"_id": f"s{i}"}, {"$max": {"token": "t1"}}) for i in range(100)))
    updates = (await db.client.admin.command("serverStatus"))["opcounters"]["update"] - updates_before
    assert await docs.count_documents({"token": "t1"}) == 50
    assert await docs.count_documents({}) == 50  # nothing created
    assert updates <= 2, updates  # the first alone, the rest in one bulk write


@pytest.mark.parametrize("exists", [True, False])
async def test_checked_updates_still_say_whether_they_matched(db: AsyncDatabase, exists: bool) -> None:
    docs = db["grouped"]
    await docs.insert_one({"_id": "here"})
    writes = GroupCommit(docs)
    target = "here" if exists else "gone"
    results = await asyncio.gather(
        writes.update({"_id": target}, {"$set": {"x": 1}}), writes.update({"_id": "here"}, {"$set": {"y": 1}})
    )
    assert results == [exists, True]
