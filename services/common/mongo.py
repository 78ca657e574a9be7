"""MongoDB access (PyMongo's native asyncio client) and group-committed writes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient, InsertOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from services.common.config import Settings

DUPLICATE_KEY = 11000


def connect(settings: Settings, app_name: str) -> tuple[AsyncMongoClient, AsyncDatabase]:
    # Acknowledged must mean durable: replies and acks follow writes. Without journaling a
    # killed server can lose acknowledged writes (seen with the dev server: 200 of 5,000).
    client: AsyncMongoClient = AsyncMongoClient(
        settings.mongo_url,
        appname=app_name,
        tz_aware=True,
        serverSelectionTimeoutMS=10_000,
        w="majority",
        journal=True,
    )
    return client, client[settings.mongo_db]


@dataclass
class _Write:
    document: dict[str, Any]  # the document to insert, or the update
    filter: dict[str, Any] | None = None  # None: an insert
    upsert: bool = False
    future: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def operation(self) -> InsertOne | UpdateOne:
        if self.filter is None:
            return InsertOne(self.document)
        return UpdateOne(self.filter, self.document, upsert=self.upsert)


class GroupCommit:
    """Batches concurrent single-document writes to one collection into one bulk_write.

    Callers await `insert`/`update` as if they were single writes. While one bulk write is in
    flight, new writes queue up and go out together in the next one: no added delay at low
    load, far fewer round trips at high load.
    """

    def __init__(self, collection: AsyncCollection, max_batch: int = 1000) -> None:
        self._collection = collection
        self._max_batch = max_batch
        self._pending: list[_Write] = []
        self._flusher: asyncio.Task[None] | None = None

    async def insert(self, document: dict[str, Any]) -> bool:
        """Insert; False when a document with the same `_id` already exists."""
        return await self._submit(_Write(document))

    async def update(self, filter_: dict[str, Any], update: Any, upsert: bool = False) -> bool:
        """Update one document; True when the filter matched (or the upsert inserted).

        The update must be idempotent (`$set`, `$max`, ...): when a batch matched fewer
        documents than it had updates, its updates run again one by one to learn which.
        """
        return await self._submit(_Write(update, filter_, upsert))

    async def _submit(self, write: _Write) -> bool:
        self._pending.append(write)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await write.future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            await self._write(batch)

    async def _write(self, batch: list[_Write]) -> None:
        failed: dict[int, dict[str, Any]] = {}
        updates = sum(w.filter is not None for w in batch)
        all_matched = True
        try:
            result = await self._collection.bulk_write([w.operation() for w in batch], ordered=False)
            all_matched = result.matched_count + result.upserted_count >= updates
        except BulkWriteError as exc:
            failed = {error["index"]: error for error in exc.details.get("writeErrors", [])}
            all_matched = False
        except Exception as exc:  # the whole batch failed: every caller sees the error
            for write in batch:
                if not write.future.done():
                    write.future.set_exception(exc)
            return
        for index, write in enumerate(batch):
            if write.future.done():
                continue
            error = failed.get(index)
            try:
                if error is not None:
                    if error.get("code") != DUPLICATE_KEY:
                        raise RuntimeError(f"write failed: {error.get('errmsg')}")
                    write.future.set_result(False)
                elif write.filter is not None and not all_matched:
                    again = await self._collection.update_one(write.filter, write.document, upsert=write.upsert)
                    write.future.set_result(again.matched_count > 0 or again.upserted_id is not None)
                else:
                    write.future.set_result(True)
            except Exception as exc:
                write.future.set_exception(exc)
