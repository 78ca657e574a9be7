"""Sessions over HTTP: create, list, get, pair (and the QR code as text, PNG or SVG),
reconnect, logout, read marks, delete. Each is the `<prefix>.session.*` request of the
contract; the QR code is the latest status event of the session on the events stream."""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, Path, Query, Request, Response
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError

from contracts.events import StatusEvent
from contracts.sessions import (
    MAX_LIST_PAGE,
    MarkedRead,
    MarkRead,
    PairRequest,
    PairStarted,
    Session,
    SessionCreate,
    SessionDeleted,
    SessionList,
)
from contracts.subjects import Subjects
from contracts.types import PATTERN_HINTS, SESSION_ID_PATTERN
from services.http_gateway import qr
from services.http_gateway.bridge import ApiError, Bridge, json_object
from services.http_gateway.openapi import Schemas
from services.http_gateway.parameters import page_query

Sid = Annotated[str, Path(pattern=SESSION_ID_PATTERN, description=PATTERN_HINTS[SESSION_ID_PATTERN])]
_status = msgspec.json.Decoder(StatusEvent)


def router(bridge: Bridge, nc: NatsClient | None, subjects: Subjects, schemas: Schemas) -> APIRouter:
    api = APIRouter(prefix="/v1/sessions", tags=["sessions"])

    async def latest_status(sid: str) -> StatusEvent:
        assert nc is not None
        try:
            msg = await nc.jetstream().get_last_msg(subjects.events_stream, subjects.event(sid, "status"))
        except NotFoundError:
            raise ApiError(404, "not_found", f"session {sid!r} not found") from None
        status = _status.decode(msg.data or b"")
        if status.state == "deleted":
            raise ApiError(404, "not_found", f"session {sid!r} not found (deleted)")
        return status

    async def qr_code(sid: str) -> str:
        status = await latest_status(sid)
        if status.state != "pairing" or not status.qr:
            raise ApiError(404, "not_found", f"no QR code to show: session {sid!r} is {status.state}")
        return status.qr

    @api.post("", status_code=201, openapi_extra=schemas.body(SessionCreate), responses=schemas.answers(201, Session, 400, 409, 422))
    async def create_session(request: Request) -> Response:
        """Create a session (`wa.session.create`); pair it next."""
        return await bridge.call(subjects.session_create, json_object(await request.body()), 201)

    @api.get("", responses=schemas.answers(200, SessionList, 422))
    async def list_sessions(
        after: Annotated[str | None, Query(description="the `next` of the page before")] = None,
        limit: Annotated[int | None, Query(description=f"sessions per page (1-{MAX_LIST_PAGE})")] = None,
    ) -> Response:
        """Sessions in id order, a page at a time (`wa.session.list`): follow `next`."""
        return await bridge.call(subjects.session_list, page_query(after=after, limit=limit))

    @api.get("/{sid}", responses=schemas.answers(200, Session, 404, 422))
    async def get_session(sid: Sid) -> Response:
        """One session (`wa.session.<sid>.get`)."""
        return await bridge.call(subjects.session(sid, "get"), {})

    @api.post(
        "/{sid}/pair", openapi_extra=schemas.body(PairRequest, required=False),
        responses=schemas.answers(200, PairStarted, 400, 404, 409, 422),
    )  # fmt: skip
    async def pair(sid: Sid, request: Request) -> Response:
        """Start pairing (`wa.session.<sid>.pair`): by QR code (the default; then poll `GET
        .../qr`, or show `.../qr.png`), or `{"method": "code", "phone": ...}` for a code to
        type on the phone."""
        body = await request.body()
        return await bridge.call(subjects.session(sid, "pair"), json_object(body) if body.strip() else {"method": "qr"})

    @api.get("/{sid}/qr", responses=schemas.answers(200, qr.Pairing, 404, 422))
    async def pairing(sid: Sid) -> Response:
        """The session's state, with the QR code (or pair code) while it pairs: poll it until
        `state` is `connected` (the QR code rotates)."""
        return Response(msgspec.json.encode(qr.pairing(await latest_status(sid))), media_type="application/json")

    @api.get("/{sid}/qr.png", responses=schemas.answers(200, None, 404, 422, media_type="image/png"))
    async def qr_png(sid: Sid) -> Response:
        """The current QR code as a PNG image (404 when the session is not showing one)."""
        return Response(qr.png(await qr_code(sid)), media_type="image/png", headers={"cache-control": "no-store"})

    @api.get("/{sid}/qr.svg", responses=schemas.answers(200, None, 404, 422, media_type="image/svg+xml"))
    async def qr_svg(sid: Sid) -> Response:
        """The current QR code as an SVG image (404 when the session is not showing one)."""
        return Response(qr.svg(await qr_code(sid)), media_type="image/svg+xml", headers={"cache-control": "no-store"})

    @api.post("/{sid}/reconnect", responses=schemas.answers(200, Session, 404, 409, 422))
    async def reconnect(sid: Sid) -> Response:
        """Drop and re-establish the connection (`wa.session.<sid>.reconnect`)."""
        return await bridge.call(subjects.session(sid, "reconnect"), {})

    @api.post("/{sid}/logout", responses=schemas.answers(200, Session, 404, 409, 422))
    async def logout(sid: Sid) -> Response:
        """Unlink the device and destroy its credentials; the session stays, to pair again."""
        return await bridge.call(subjects.session(sid, "logout"), {})

    @api.post(
        "/{sid}/read", openapi_extra=schemas.body(MarkRead), responses=schemas.answers(200, MarkedRead, 400, 404, 409, 422)
    )
    async def mark_read(sid: Sid, request: Request) -> Response:
        """Read receipts for messages of a chat, sent at once (`wa.session.<sid>.read`)."""
        return await bridge.call(subjects.session(sid, "read"), json_object(await request.body()))

    @api.delete("/{sid}", responses=schemas.answers(200, SessionDeleted, 404, 409, 422))
    async def delete_session(sid: Sid) -> Response:
        """Log out if linked, destroy the credentials and the session (`wa.session.<sid>.delete`)."""
        return await bridge.call(subjects.session(sid, "delete"), {})

    return api
