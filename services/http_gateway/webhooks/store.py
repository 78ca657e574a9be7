"""Webhook subscriptions in the tenant's MongoDB database (`webhooks` collection):

    {_id: wid, url, secret, sessions, kinds, description, state: active|paused, created_at,
     failing_since?, last_error?, paused_at?, paused_reason?}

`failing_since` is shared by every replica (the next try of an event may land on another
one): set by the first failure of the event at the head, cleared by its success. On the
happy path nothing is written.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

Doc = dict[str, Any]


class SubscriptionStore:
    def __init__(self, db: AsyncDatabase) -> None:
        self.collection = db["webhooks"]

    async def insert(self, doc: Doc) -> None:
        await self.collection.insert_one(doc)

    async def get(self, wid: str) -> Doc | None:
        return await self.collection.find_one({"_id": wid})

    async def all(self) -> list[Doc]:
        return await self.collection.find().sort("created_at", ASCENDING).to_list(None)

    async def delete(self, wid: str) -> bool:
        return (await self.collection.delete_one({"_id": wid})).deleted_count > 0

    async def failed(self, wid: str, now: datetime, error: str) -> Doc | None:
        """Record a failed try; the document after it (`failing_since` kept if set)."""
        return await self.collection.find_one_and_update(
            {"_id": wid},
            {"$min": {"failing_since": now}, "$set": {"last_error": error}},
            return_document=ReturnDocument.AFTER,
        )

    async def recovered(self, wid: str) -> None:
        # Unset, not null: `$min` sets a missing field, but keeps a null (null sorts first).
        await self.collection.update_one(
            {"_id": wid, "failing_since": {"$exists": True}}, {"$unset": {"failing_since": "", "last_error": ""}}
        )

    async def pause(self, wid: str, now: datetime, reason: str) -> Doc | None:
        """Mark an active subscription paused; None when it is not active (already paused,
        or gone): only one caller raises the alert."""
        return await self.collection.find_one_and_update(
            {"_id": wid, "state": "active"},
            {"$set": {"state": "paused", "paused_at": now, "paused_reason": reason}},
            return_document=ReturnDocument.AFTER,
        )

    async def resume(self, wid: str) -> Doc | None:
        """Mark a paused subscription active again, its failure clock reset; None when it
        was not paused."""
        return await self.collection.find_one_and_update(
            {"_id": wid, "state": "paused"},
            {"$set": {"state": "active"}, "$unset": {"paused_at": "", "paused_reason": "", "failing_since": ""}},
            return_document=ReturnDocument.AFTER,
        )
