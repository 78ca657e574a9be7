"""What can happen to a subscription, for the request API (admin.py) and the deliverers:
made (its consumer first, then its document), listed, paused (by request, or by a
deliverer once its receiver has failed for `pause_after`), resumed, deleted. A pause or a
resume publishes its alert (alerts.py) on the events stream."""

from __future__ import annotations

import base64
import secrets
from datetime import datetime
from typing import Any

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from contracts.envelope import invalid, not_found
from contracts.subjects import Subjects
from contracts.types import utcnow
from contracts.webhooks import Webhook, WebhookAlert, WebhookCreate, WebhookDeleted, WebhookList
from services.common.bus import encode
from services.http_gateway.webhooks.alerts import paused_alert, resumed_alert
from services.http_gateway.webhooks.consumers import Consumers
from services.http_gateway.webhooks.store import Doc, SubscriptionStore
from services.http_gateway.webhooks.targets import refusal

log = structlog.get_logger(__name__)

PAUSED_BY_REQUEST = "paused by request"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Subscriptions:
    def __init__(
        self, store: SubscriptionStore, consumers: Consumers, js: JetStreamContext, subjects: Subjects, allow_private: bool
    ) -> None:
        self.store = store
        self.consumers = consumers
        self._js = js
        self._subjects = subjects
        self.allow_private = allow_private

    async def create(self, req: WebhookCreate) -> Webhook:
        why = await refusal(req.url, self.allow_private)
        if why is not None:
            raise invalid(f"url: {why}")
        wid = "wh_" + secrets.token_hex(6)
        doc: Doc = {
            "_id": wid, "url": req.url, "secret": req.secret or new_secret(),
            "sessions": sorted(set(req.sessions)), "kinds": sorted(set(req.kinds)),
            "description": req.description, "state": "active", "created_at": utcnow(),
        }  # fmt: skip
        # The consumer first: events from now on are kept for the subscription even before
        # a replica starts delivering them.
        await self.consumers.create(wid, doc["sessions"], doc["kinds"])
        try:
            await self.store.insert(doc)
        except Exception:
            await self.consumers.delete(wid)
            raise
        log.info("webhook subscription created", webhook=wid, sessions=doc["sessions"], kinds=doc["kinds"])
        return msgspec.structs.replace(await self.view(doc), secret=doc["secret"])

    async def list(self) -> WebhookList:
        return WebhookList(webhooks=[await self.view(doc) for doc in await self.store.all()])

    async def get(self, wid: str) -> Webhook:
        return await self.view(await self._doc(wid))

    async def delete(self, wid: str) -> WebhookDeleted:
        await self._doc(wid)
        await self.store.delete(wid)
        try:
            await self.consumers.delete(wid)
        except NotFoundError:
            pass  # deleted concurrently
        log.info("webhook subscription deleted", webhook=wid)
        return WebhookDeleted(webhook_id=wid)

    async def pause(self, wid: str, reason: str = PAUSED_BY_REQUEST, now: datetime | None = None) -> Webhook:
        doc = await self._doc(wid)
        # The server stops delivering first (every replica at once); then the state, whose
        # first writer raises the alert.
        await self.consumers.pause(wid)
        paused = await self.store.pause(wid, now or utcnow(), reason)
        if paused is not None:
            await self._publish(paused_alert(paused, paused["paused_at"], reason))
            log.warning("webhook subscription paused", webhook=wid, reason=reason, last_error=paused.get("last_error"))
            doc = paused
        return await self.view(doc)

    async def resume(self, wid: str) -> Webhook:
        doc = await self._doc(wid)
        await self.consumers.resume(wid)
        resumed = await self.store.resume(wid)
        if resumed is not None:
            await self._publish(resumed_alert(resumed, utcnow()))
            log.info("webhook subscription resumed", webhook=wid)
            doc = resumed
        return await self.view(doc)

    async def view(self, doc: Doc) -> Webhook:
        try:
            backlog: int | None = await self.consumers.backlog(doc["_id"])
        except Exception:  # NATS away, or the consumer gone: the rest still shows
            backlog = None
        return Webhook(
            webhook_id=doc["_id"], url=doc["url"], sessions=doc["sessions"], kinds=doc["kinds"],
            description=doc.get("description", ""), state=doc["state"], created_at=doc["created_at"],
            backlog=backlog, failing_since=doc.get("failing_since"), last_error=doc.get("last_error"),
            paused_at=doc.get("paused_at"), paused_reason=doc.get("paused_reason"),
        )  # fmt: skip

    async def _doc(self, wid: str) -> dict[str, Any]:
        doc = await self.store.get(wid)
        if doc is None:
            raise not_found(f"webhook subscription {wid!r} not found")
        return doc

    async def _publish(self, alert: WebhookAlert) -> None:
        await self._js.publish(
            self._subjects.webhook_alert(alert.webhook_id), encode(alert), headers={"Nats-Msg-Id": alert.event_id}
        )
