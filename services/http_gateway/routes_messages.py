"""Sends and what the gateway keeps over HTTP: send (every kind of the contract, the same
body and idempotency `id`), a send's status, history pages, queue stats, and the files of
inbound messages from the media bucket."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError

from contracts.history import MessagePage, OutboundPage, OutboundRecord, StatusPage
from contracts.messages import SESSION_HEADER
from contracts.queue import QueueStats
from contracts.sending import SendAccepted, SendText
from contracts.subjects import Subjects
from services.http_gateway.bridge import ApiError, Bridge, json_object
from services.http_gateway.openapi import Schemas
from services.http_gateway.parameters import page_query
from services.http_gateway.routes_sessions import Sid

Before = Annotated[str | None, Query(description="the `next` of the page before: older items")]
Limit = Annotated[int | None, Query(description="items per page (1-200, default 50)")]


def router(bridge: Bridge, nc: NatsClient | None, subjects: Subjects, schemas: Schemas) -> APIRouter:
    api = APIRouter(prefix="/v1/sessions/{sid}", tags=["messages"])

    @api.post(
        "/messages", status_code=202, openapi_extra=schemas.body(SendText),
        responses=schemas.answers(202, SendAccepted, 400, 404, 409, 413, 422, 429),
    )  # fmt: skip
    async def send(sid: Sid, request: Request) -> Response:
        """Queue a send (`wa.send.<sid>`): a text, a file (`media`), a reaction, an edit, a
        revoke, a location or a contact. The same `id` again answers the first answer with
        `"duplicate": true` and never sends twice: retry freely."""
        return await bridge.call(subjects.send(sid), json_object(await request.body()), 202)

    @api.get("/messages/{send_id:path}", responses=schemas.answers(200, OutboundRecord, 404, 422))
    async def send_status(sid: Sid, send_id: str) -> Response:
        """A send by its `id`: how far it got, and each step (`wa.history.<sid>.outbound`)."""
        return await bridge.call(subjects.history(sid, "outbound"), {"id": send_id})

    @api.get("/history/messages", responses=schemas.answers(200, MessagePage, 404, 422))
    async def inbound_history(
        sid: Sid, chat: Annotated[str | None, Query(description="only this chat")] = None,
        before: Before = None, limit: Limit = None,
    ) -> Response:  # fmt: skip
        """Inbound messages, newest first (`wa.history.<sid>.messages`)."""
        return await bridge.call(subjects.history(sid, "messages"), page_query(chat=chat, before=before, limit=limit))

    @api.get("/history/status", responses=schemas.answers(200, StatusPage, 404, 422))
    async def status_history(sid: Sid, before: Before = None, limit: Limit = None) -> Response:
        """The session's status changes, newest first (`wa.history.<sid>.status`)."""
        return await bridge.call(subjects.history(sid, "status"), page_query(before=before, limit=limit))

    @api.get("/history/outbound", responses=schemas.answers(200, OutboundPage, 404, 422))
    async def outbound_history(sid: Sid, before: Before = None, limit: Limit = None) -> Response:
        """Sends, newest first (`wa.history.<sid>.outbound`)."""
        return await bridge.call(subjects.history(sid, "outbound"), page_query(before=before, limit=limit))

    @api.get("/queue", responses=schemas.answers(200, QueueStats, 404, 422))
    async def queue_stats(sid: Sid) -> Response:
        """Sends waiting, scheduled, and the age of the oldest (`wa.queue.<sid>.stats`)."""
        return await bridge.call(subjects.queue(sid, "stats"), {})

    @api.get("/media/{media_id:path}", responses=schemas.answers(200, None, 404, 422, media_type="application/octet-stream"))
    async def media(sid: Sid, media_id: str) -> Response:
        """The file of an inbound message: its event's `media.media_id`, from the media
        bucket (with its Content-Type). Files stay `WA_MEDIA_RETENTION_DAYS`."""
        assert nc is not None
        try:
            bucket = await nc.jetstream().object_store(subjects.media_bucket)
            info = await bucket.get_info(media_id)
        except NotFoundError:
            raise ApiError(404, "not_found", f"no file {media_id!r} (not stored, or past its retention)") from None
        headers = info.headers or {}
        if headers.get(SESSION_HEADER, [None])[0] != sid:
            raise ApiError(404, "not_found", f"no file {media_id!r} of session {sid!r}")
        found = await bucket.get(media_id)  # the object store checks its SHA-256 as it reads
        mime = headers.get("Content-Type", ["application/octet-stream"])[0]
        return Response(found.data or b"", media_type=mime)

    return api
