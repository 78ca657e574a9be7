"""The deliverers of one replica: one per subscription, kept in step with the stored
subscriptions (read every `webhook_sync_interval`), and the gauges of all of them."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import structlog
from nats.js import JetStreamContext

from contracts.subjects import Subjects
from services.common.tasks import cancel_and_wait
from services.http_gateway.webhooks.deliverer import Deliverer
from services.http_gateway.webhooks.lifecycle import Subscriptions
from services.http_gateway.webhooks.metrics import BACKLOG, SUBSCRIPTIONS
from services.http_gateway.webhooks.policy import DeliveryPolicy

log = structlog.get_logger(__name__)


class Fleet:
    def __init__(
        self,
        subscriptions: Subscriptions,
        js: JetStreamContext,
        subjects: Subjects,
        policy: DeliveryPolicy,
        sync_interval: float,
    ) -> None:
        self._subscriptions = subscriptions
        self._js = js
        self._subjects = subjects
        self._policy = policy
        self._sync_interval = sync_interval
        self._rng = random.Random()
        self.running: dict[str, Deliverer] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep_in_step(), name="webhook-fleet")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await asyncio.gather(*(deliverer.stop() for deliverer in self.running.values()))
        self.running.clear()

    async def _keep_in_step(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception as exc:  # MongoDB away: the running deliverers go on
                log.warning("webhook subscriptions not read", error=repr(exc))
            await asyncio.sleep(self._sync_interval)

    async def sync(self) -> None:
        docs = {doc["_id"]: doc for doc in await self._subscriptions.store.all()}
        for wid in [wid for wid in self.running if wid not in docs]:
            await self.running.pop(wid).stop()
        for wid, doc in docs.items():
            if wid in self.running:
                continue
            deliverer = Deliverer(
                doc, js=self._js, subjects=self._subjects, subscriptions=self._subscriptions,
                policy=self._policy, rng=self._rng,
            )  # fmt: skip
            try:
                await deliverer.start()
            except Exception as exc:  # its consumer is missing (deleted meanwhile): next round
                log.warning("webhook delivery not started", webhook=wid, error=repr(exc))
                await deliverer.stop()
                continue
            self.running[wid] = deliverer
        states = Counter(doc["state"] for doc in docs.values())
        for state in ("active", "paused"):
            SUBSCRIPTIONS.labels(state).set(states[state])

    async def sample_backlog(self) -> None:
        BACKLOG.set(sum([await self._subscriptions.consumers.backlog(wid) for wid in list(self.running)]))
