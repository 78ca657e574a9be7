"""Webhook subscriptions over HTTP: each route is the `<prefix>.webhook.*` request of the
contract (answered by the http-gateway replicas, this one or another)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from contracts.subjects import Subjects
from contracts.types import PATTERN_HINTS, WEBHOOK_ID_PATTERN
from contracts.webhooks import Webhook, WebhookCreate, WebhookDeleted, WebhookList
from services.http_gateway.bridge import Bridge, json_object
from services.http_gateway.openapi import Schemas

Wid = Annotated[str, Path(pattern=WEBHOOK_ID_PATTERN, description=PATTERN_HINTS[WEBHOOK_ID_PATTERN])]


def router(bridge: Bridge, subjects: Subjects, schemas: Schemas) -> APIRouter:
    api = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

    @api.post(
        "", status_code=201, openapi_extra=schemas.body(WebhookCreate),
        responses=schemas.answers(201, Webhook, 400, 422),
    )  # fmt: skip
    async def create_webhook(request: Request) -> Response:
        """Subscribe a URL to events (optionally of some sessions, some kinds). The answer
        carries the signing `secret` (`whsec_...`) once: keep it to verify signatures."""
        return await bridge.call(subjects.webhook_create, json_object(await request.body()), 201)

    @api.get("", responses=schemas.answers(200, WebhookList))
    async def list_webhooks() -> Response:
        """Every subscription, with its state and backlog."""
        return await bridge.call(subjects.webhook_list, {})

    @api.get("/{wid}", responses=schemas.answers(200, Webhook, 404, 422))
    async def get_webhook(wid: Wid) -> Response:
        """One subscription: `active` or `paused` (and why), failing since when, backlog."""
        return await bridge.call(subjects.webhook(wid, "get"), {})

    @api.post("/{wid}/pause", responses=schemas.answers(200, Webhook, 404, 422))
    async def pause_webhook(wid: Wid) -> Response:
        """Stop deliveries; events keep waiting in the stream."""
        return await bridge.call(subjects.webhook(wid, "pause"), {})

    @api.post("/{wid}/resume", responses=schemas.answers(200, Webhook, 404, 422))
    async def resume_webhook(wid: Wid) -> Response:
        """Deliver again, from the first event not delivered."""
        return await bridge.call(subjects.webhook(wid, "resume"), {})

    @api.delete("/{wid}", responses=schemas.answers(200, WebhookDeleted, 404, 422))
    async def delete_webhook(wid: Wid) -> Response:
        """Delete the subscription and its backlog."""
        return await bridge.call(subjects.webhook(wid, "delete"), {})

    return api
