"""The request API of webhook subscriptions (contracts/webhooks.py, `<prefix>.webhook.*`),
answered by any http-gateway replica with the v1 envelope; the HTTP routes call it too."""

from __future__ import annotations

from faststream import Path
from faststream.nats import NatsRouter

from contracts.envelope import Ok
from contracts.sessions import Empty
from contracts.subjects import Subjects
from contracts.webhooks import Webhook, WebhookCreate, WebhookDeleted, WebhookList
from services.common.api import request_router, strict
from services.http_gateway.webhooks.lifecycle import Subscriptions

QUEUE = "http-gateway"


def build_router(subscriptions: Subscriptions, subjects: Subjects) -> NatsRouter:
    router = request_router()

    @router.subscriber(subjects.webhook_create, queue=QUEUE, decoder=strict(WebhookCreate))
    async def create_webhook(req: WebhookCreate) -> Ok[Webhook]:
        return Ok(data=await subscriptions.create(req))

    @router.subscriber(subjects.webhook_list, queue=QUEUE, decoder=strict(Empty))
    async def list_webhooks(req: Empty) -> Ok[WebhookList]:
        return Ok(data=await subscriptions.list())

    @router.subscriber(subjects.webhook("{wid}", "get"), queue=QUEUE, decoder=strict(Empty))
    async def get_webhook(req: Empty, wid: str = Path()) -> Ok[Webhook]:
        return Ok(data=await subscriptions.get(wid))

    @router.subscriber(subjects.webhook("{wid}", "pause"), queue=QUEUE, decoder=strict(Empty))
    async def pause_webhook(req: Empty, wid: str = Path()) -> Ok[Webhook]:
        return Ok(data=await subscriptions.pause(wid))

    @router.subscriber(subjects.webhook("{wid}", "resume"), queue=QUEUE, decoder=strict(Empty))
    async def resume_webhook(req: Empty, wid: str = Path()) -> Ok[Webhook]:
        return Ok(data=await subscriptions.resume(wid))

    @router.subscriber(subjects.webhook("{wid}", "delete"), queue=QUEUE, decoder=strict(Empty))
    async def delete_webhook(req: Empty, wid: str = Path()) -> Ok[WebhookDeleted]:
        return Ok(data=await subscriptions.delete(wid))

    return router
