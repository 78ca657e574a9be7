"""The session catalog in MongoDB (`sessions` collection) and the truth about a session's state.

A session document holds what users see (`Session` in contract v1) plus `owner_token`, the
fencing token of the newest owner that touched it. Owners write their state only through
`report`, which is refused once a newer owner has claimed the session: a paused or
partitioned ex-owner cannot overwrite the truth.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from contracts.envelope import conflict
from contracts.sessions import Session
from contracts.types import LIVE_STATES
from services.common.cluster import ClusterView
from services.common.mongo import GroupCommit, GroupRead

OWNER_LOST = "owner_lost: the node running this session stopped; another node takes over"
JETSTREAM_UNAVAILABLE = (
    "jetstream_unavailable: NATS JetStream does not answer, so no node can hold a session; "
    "sessions reconnect by themselves once it is back"
)


class SessionStore:
    def __init__(self, db: AsyncDatabase) -> None:
        self.collection = db["sessions"]
        self._writes = GroupCommit(self.collection)
        self._reads = GroupRead(self.collection, where={"deleting": {"$ne": True}})

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("deleting", ASCENDING)])

    async def create(self, sid: str, label: str, now: datetime) -> dict[str, Any]:
        doc = {
            "_id": sid,
            "label": label,
            "state": "created",
            "since": now,
            "created_at": now,
            "owner_token": "",  # sorts before every real token
        }
        try:
            await self.collection.insert_one(doc)
        except DuplicateKeyError:
            raise conflict(f"session {sid!r} already exists") from None
        return doc

    async def get(self, sid: str) -> dict[str, Any] | None:
        return await self._reads.get(sid)

    async def list(self, after: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Sessions in id order: all of them, or up to `limit` of those whose id sorts after `after`."""
        query: dict[str, Any] = {"deleting": {"$ne": True}}
        if after is not None:
            query["_id"] = {"$gt": after}
        found = self.collection.find(query).sort("_id", ASCENDING)
        return await (found.limit(limit) if limit else found).to_list(None)

    async def fence(self, sid: str, token: str) -> None:
        """A new owner raises the token first, so older owners' writes are refused from now on."""
        await self._writes.apply({"_id": sid}, {"$max": {"owner_token": token}})

    async def report(
        self,
        sid: str,
        token: str,
        *,
        state: str,
        since: datetime,
        reason: str | None,
        jid: str | None,
        node: str | None,
        pairing_phone: str | None = None,
    ) -> bool:
        """Write the owner's state; False when a newer owner holds the session (or it is gone).

        `pairing_phone` (a pair code's phone, while pairing) lets a next owner resume pairing.
        """
        fields = {
            "state": state, "since": since, "reason": reason, "node": node, "owner_token": token,
            "pairing_phone": pairing_phone if state == "pairing" else None,
        }  # fmt: skip
        if jid is not None or state in ("logged_out", "created"):
            fields["jid"] = jid
        return await self._writes.update(
            {"_id": sid, "owner_token": {"$lte": token}, "deleting": {"$ne": True}}, {"$set": fields}
        )

    async def set_policy(self, sid: str, policy: dict[str, Any]) -> bool:
        """Configuration, not state: any node may write it (the owner applies it)."""
        result = await self.collection.update_one({"_id": sid, "deleting": {"$ne": True}}, {"$set": {"policy": policy}})
        return result.matched_count > 0

    async def mark_deleting(self, sid: str) -> bool:
        result = await self.collection.update_one({"_id": sid}, {"$set": {"deleting": True}})
        return result.matched_count > 0

    async def remove(self, sid: str) -> None:
        await self.collection.delete_one({"_id": sid})

    async def ids(self, deleting: bool = False) -> list[str]:
        query = {"deleting": True} if deleting else {"deleting": {"$ne": True}}
        return [doc["_id"] async for doc in self.collection.find(query, {"_id": 1})]


def session_view(doc: dict[str, Any], cluster: ClusterView, current: bool = True) -> Session:
    """The session as users must see it: a live state claimed by an owner that is gone is
    reported as `disconnected (owner_lost)`, never as a stale `connected`; so is every live
    state while the view of the cluster is not `current` (JetStream unavailable: no lease can
    be renewed, so no owner may act)."""
    state, reason, node = doc["state"], doc.get("reason"), doc.get("node")
    if state in LIVE_STATES and not current:
        state, reason, node = "disconnected", JETSTREAM_UNAVAILABLE, None
    elif state in LIVE_STATES and (node is None or cluster.owner_of(doc["_id"]) != node):
        state, reason, node = "disconnected", OWNER_LOST, None
    return Session(
        session_id=doc["_id"],
        label=doc.get("label", ""),
        state=state,
        since=doc["since"],
        created_at=doc["created_at"],
        reason=reason,
        jid=doc.get("jid"),
        node=node,
    )
