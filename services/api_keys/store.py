"""API keys in the tenant's MongoDB database (`api_keys` collection), one document a key:
`{_id: key id, digest, tenant, label, created_at, revoked_at?}` (services/api_keys/tokens.py
says what a key is). A key is bound to the tenant it was made for: a gateway serving
another tenant refuses it even if the document were there."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from services.api_keys import tokens


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    tenant: str
    label: str
    created_at: datetime
    revoked_at: datetime | None = None

    @classmethod
    def of(cls, doc: dict[str, Any]) -> ApiKey:
        return cls(doc["_id"], doc["tenant"], doc.get("label", ""), doc["created_at"], doc.get("revoked_at"))


class ApiKeyStore:
    def __init__(self, db: AsyncDatabase) -> None:
        self.collection = db["api_keys"]

    async def create(self, tenant: str, label: str, now: datetime) -> tuple[ApiKey, str]:
        """A new key for `tenant`: its record, and the key itself (shown once, never stored)."""
        key_id, token = tokens.new_token()
        parsed = tokens.parse(token)
        assert parsed is not None  # new_token makes well-formed keys
        doc = {"_id": key_id, "digest": tokens.digest(parsed[1]), "tenant": tenant, "label": label, "created_at": now}
        await self.collection.insert_one(doc)
        return ApiKey.of(doc), token

    async def list(self) -> list[ApiKey]:
        return [ApiKey.of(doc) async for doc in self.collection.find().sort("created_at", ASCENDING)]

    async def revoke(self, key_id: str, now: datetime) -> bool:
        """False when there is no such key (revoking twice keeps the first time)."""
        found = await self.collection.update_one({"_id": key_id, "revoked_at": None}, {"$set": {"revoked_at": now}})
        return found.matched_count > 0 or await self.collection.count_documents({"_id": key_id}) > 0

    async def verify(self, token: str, tenant: str) -> ApiKey | None:
        """The key's record when `token` is a live key of `tenant`, else None."""
        parsed = tokens.parse(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        doc = await self.collection.find_one({"_id": key_id})
        if doc is None or doc.get("revoked_at") is not None or doc["tenant"] != tenant:
            return None
        return ApiKey.of(doc) if tokens.matches(secret, doc["digest"]) else None
