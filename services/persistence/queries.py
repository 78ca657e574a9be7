"""History queries (`<prefix>.history.<sid>.{messages,status,outbound}`, additions to v1).

Pages are newest first over (time, _id) — `_id` breaks ties between equal times, so a page
boundary never skips or repeats an item even when many share a timestamp. The cursor names
the last item of a page: the query kind, its time in epoch milliseconds (MongoDB keeps
milliseconds, so the value is exact) and its `_id`, as base64url JSON. Only the history
collections are read: an unknown (or deleted) session simply has an empty history.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import msgspec
from faststream.nats import NatsRouter
from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from contracts.envelope import Ok, invalid, not_found
from contracts.events import MessageEvent
from contracts.history import (
    DEFAULT_LIMIT,
    MessagePage,
    MessagesQuery,
    OutboundPage,
    OutboundQuery,
    OutboundRecord,
    StatusPage,
    StatusQuery,
    StatusRecord,
)
from contracts.messages import MessageType
from contracts.subjects import Subjects
from contracts.types import PATTERN_HINTS, SESSION_ID_PATTERN
from services.common.api import Path, request_router, strict

QUEUE = "persistence"
WORKERS = 16

_SID = re.compile(SESSION_ID_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_cursor_decoder = msgspec.json.Decoder(tuple[str, int, str])
MESSAGE_TYPES = frozenset(get_args(MessageType))


def check_session_id(sid: str) -> None:
    if not _SID.match(sid):
        raise invalid(f"session id: expected {PATTERN_HINTS[SESSION_ID_PATTERN]}, got {sid!r}")


def encode_cursor(kind: str, at: datetime, key: str) -> str:
    raw = msgspec.json.encode((kind, (at - _EPOCH) // _MS, key))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(kind: str, cursor: str) -> tuple[datetime, str]:
    """The (time, _id) a cursor of query `kind` points at; invalid_request otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        tag, ms, key = _cursor_decoder.decode(raw)
        at = _EPOCH + ms * _MS
    except (ValueError, OverflowError, msgspec.DecodeError):  # binascii.Error is a ValueError
        raise invalid("before: not a cursor returned by this API") from None
    if tag != kind:
        raise invalid(f"before: this cursor belongs to another history query, not {kind!r}")
    return at, key


def older_than(field: str, at: datetime, key: str) -> dict[str, Any]:
    """Filter for the items after (at, key) in (field desc, _id desc) order."""
    return {"$or": [{field: {"$lt": at}}, {field: at, "_id": {"$lt": key}}]}


async def read_page(
    collection: AsyncCollection,
    filter_: dict[str, Any],
    field: str,
    kind: str,
    before: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    if before is not None:
        filter_ = {**filter_, **older_than(field, *decode_cursor(kind, before))}
    cursor = collection.find(filter_).sort([(field, DESCENDING), ("_id", DESCENDING)]).limit(limit + 1)
    docs = await cursor.to_list(None)
    if len(docs) <= limit:
        return docs, None
    last = docs[limit - 1]
    return docs[:limit], encode_cursor(kind, last[field], last["_id"])


def message_of(doc: dict[str, Any]) -> MessageEvent:
    # Before the kinds of message were fixed, the neonize adapter stored "other" and
    # "poll_vote": such a message reads as what it is now, `unknown`.
    if doc.get("type") not in MESSAGE_TYPES:
        doc = {**doc, "type": "unknown"}
    return msgspec.convert(doc, MessageEvent)


class HistoryQueries:
    def __init__(self, db: AsyncDatabase) -> None:
        self._status = db["status_history"]
        self._messages = db["messages"]
        self._outbound = db["outbound"]

    async def messages(self, sid: str, req: MessagesQuery) -> MessagePage:
        check_session_id(sid)
        filter_: dict[str, Any] = {"session_id": sid}
        if req.chat is not None:
            filter_["chat"] = req.chat
        docs, next_ = await read_page(self._messages, filter_, "timestamp", "messages", req.before, req.limit)
        return MessagePage(messages=[message_of(d) for d in docs], next=next_)

    async def status(self, sid: str, req: StatusQuery) -> StatusPage:
        check_session_id(sid)
        docs, next_ = await read_page(
            self._status, {"session_id": sid}, "at", "status", req.before, req.limit
        )
        return StatusPage(
            statuses=[msgspec.convert({**d, "event_id": d["_id"]}, StatusRecord) for d in docs], next=next_
        )

    async def outbound(self, sid: str, req: OutboundQuery) -> OutboundRecord | OutboundPage:
        check_session_id(sid)
        if req.id is not None:
            if req.before is not None or req.limit is not None:
                raise invalid("id: cannot be combined with before or limit")
            doc = await self._outbound.find_one({"_id": f"{sid}/{req.id}"})
            if doc is None:
                raise not_found(f"no send {req.id!r} in session {sid!r}")
            return msgspec.convert(doc, OutboundRecord)
        limit = req.limit or DEFAULT_LIMIT
        docs, next_ = await read_page(
            self._outbound, {"session_id": sid}, "created_at", "outbound", req.before, limit
        )
        return OutboundPage(sends=[msgspec.convert(d, OutboundRecord) for d in docs], next=next_)


def build_router(queries: HistoryQueries, subjects: Subjects) -> NatsRouter:
    router = request_router()

    @router.subscriber(
        subjects.history("{sid}", "messages"), queue=QUEUE, decoder=strict(MessagesQuery), max_workers=WORKERS
    )
    async def messages(req: MessagesQuery, sid: str = Path()) -> Ok[MessagePage]:
        return Ok(data=await queries.messages(sid, req))

    @router.subscriber(
        subjects.history("{sid}", "status"), queue=QUEUE, decoder=strict(StatusQuery), max_workers=WORKERS
    )
    async def status(req: StatusQuery, sid: str = Path()) -> Ok[StatusPage]:
        return Ok(data=await queries.status(sid, req))

    # Replies with one send or a page: msgspec cannot type an untagged union of two Structs.
    @router.subscriber(
        subjects.history("{sid}", "outbound"), queue=QUEUE, decoder=strict(OutboundQuery), max_workers=WORKERS
    )
    async def outbound(req: OutboundQuery, sid: str = Path()) -> Ok[Any]:
        return Ok(data=await queries.outbound(sid, req))

    return router
