"""Delivering one subscription from one replica: pull an event from its durable consumer,
POST it signed, ack it on a 2xx answer, else NAK it with a delay from the policy.

Why every event arrives, in order per session, however many replicas run:

- Every replica pulls from the subscription's one durable consumer (consumers.py), whose
  `max_ack_pending` is 1: the server hands out the next event only once the one before is
  acknowledged. So one event of a subscription is in flight at a time, cluster-wide, and
  events go out in the stream's order, which is each session's order. Replicas add no
  parallelism within a subscription; they share the subscriptions and take over each
  other's (a stopped replica's work is pulled by the others at once).
- A failed POST is NAKed with a delay: the event stays at the head and nothing behind it
  overtakes it. A receiver that is down gets one request per retry delay (capped, jittered
  exponential), not a storm, and nothing is lost: events wait in the stream.
- A replica that dies holding an event does not ack it; after the ack wait (past the POST
  timeout) the server hands the same event to whichever replica pulls next, still before
  anything behind it. The receiver may then see that event twice, with the same
  `webhook-id`: delivery is at least once, deduplicable by event id, never reordered.
  A replica that stops gracefully lets its POST finish (or NAKs it at once).
- Subscriptions are independent: each has its own task and its own HTTP connection (one),
  so a slow receiver holds up only its own subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import httpx
import msgspec
import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from contracts.subjects import Subjects, token
from contracts.types import utcnow
from services.common.tasks import cancel_and_wait, wait_event
from services.common.urls import shown
from services.http_gateway.webhooks.lifecycle import Subscriptions
from services.http_gateway.webhooks.metrics import DELIVERIES, POST_SECONDS
from services.http_gateway.webhooks.policy import DeliveryPolicy
from services.http_gateway.webhooks.signing import Signer, envelope
from services.http_gateway.webhooks.store import Doc
from services.http_gateway.webhooks.targets import refusal

log = structlog.get_logger(__name__)

USER_AGENT = "wa-gateway webhooks"
# A pull waits this long for an event before asking again.
FETCH_WAIT = 5.0
# After an error from NATS (a server away, the consumer gone), wait before pulling again.
ERROR_PAUSE = 1.0
# Where a subscription's URL points is checked again at most this often.
TARGET_RECHECK = 60.0
# On stop, a POST under way gets this long to answer before its event is handed back.
STOP_GRACE = 2.0


class Deliverer:
    def __init__(
        self,
        doc: Doc,
        *,
        js: JetStreamContext,
        subjects: Subjects,
        subscriptions: Subscriptions,
        policy: DeliveryPolicy,
        rng: random.Random | None = None,
    ) -> None:
        self.wid: str = doc["_id"]
        self._url: str = doc["url"]
        self._signer = Signer(doc["secret"])
        self._js = js
        self._subjects = subjects
        self._subscriptions = subscriptions
        self._policy = policy
        self._rng = rng or random.Random()
        self._client = httpx.AsyncClient(
            timeout=policy.timeout,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            headers={"user-agent": USER_AGENT},
        )
        self._pull: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._holding: Msg | None = None  # the event being delivered, until acked or NAKed
        self._failing = False
        self._target_checked = -TARGET_RECHECK

    async def start(self) -> None:
        self._pull = await self._js.pull_subscribe_bind(
            durable=self._subjects.webhook_consumer(self.wid), stream=self._subjects.events_stream
        )
        self._task = asyncio.create_task(self._run(), name=f"webhook-{self.wid}")

    async def stop(self) -> None:
        await wait_event(self._idle, STOP_GRACE)
        await cancel_and_wait(self._task)
        if self._holding is not None:  # cut mid-POST: back to the stream for the next puller
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._holding.nak()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self._client.aclose()
        if self._pull is not None:
            with contextlib.suppress(Exception):
                await self._pull.unsubscribe()

    async def _run(self) -> None:
        assert self._pull is not None
        while True:
            try:
                msgs = await self._pull.fetch(1, timeout=FETCH_WAIT)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            except Exception as exc:
                log.warning("webhook pull failed", webhook=self.wid, error=repr(exc))
                await asyncio.sleep(ERROR_PAUSE)
                continue
            for msg in msgs:
                self._idle.clear()
                self._holding = msg
                try:
                    await self._deliver(msg)
                except Exception as exc:  # NATS or MongoDB away mid-way: the event comes back
                    log.warning("webhook delivery interrupted", webhook=self.wid, error=repr(exc))
                    await asyncio.sleep(ERROR_PAUSE)
                finally:
                    self._holding = None
                    self._idle.set()

    async def _deliver(self, msg: Msg) -> None:
        try:
            event_id, body = envelope(token(msg.subject, -1), msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.error("not an event: skipped", webhook=self.wid, subject=msg.subject, seq=msg.metadata.sequence.stream)
            await msg.ack()
            return
        failure = await self._post(event_id, body)
        if failure is None:
            await msg.ack()
            DELIVERIES.labels("delivered").inc()
            if self._failing or msg.metadata.num_delivered > 1:
                await self._subscriptions.store.recovered(self.wid)
                self._failing = False
            return
        DELIVERIES.labels("failed").inc()
        self._failing = True
        now = utcnow()
        doc = await self._subscriptions.store.failed(self.wid, now, failure)
        if doc is not None and doc["state"] == "active" and self._policy.should_pause(doc["failing_since"], now):
            since = doc["failing_since"].isoformat(timespec="seconds")
            await self._subscriptions.pause(self.wid, f"the receiver has failed since {since} ({failure})", now)
            await msg.nak()  # first in line again once resumed
            return
        await msg.nak(delay=self._policy.retry_delay(msg.metadata.num_delivered, self._rng))

    async def _post(self, event_id: str, body: bytes) -> str | None:
        """None once the receiver took the event, else what went wrong."""
        if time.monotonic() - self._target_checked >= TARGET_RECHECK:
            why = await refusal(self._url, self._subscriptions.allow_private)
            if why is not None:
                return why
            self._target_checked = time.monotonic()
        started = time.perf_counter()
        try:
            response = await self._client.post(
                self._url, content=body, headers=self._signer.headers(event_id, body, utcnow())
            )
        except httpx.TimeoutException:
            return f"POST {shown(self._url)}: no answer within {self._policy.timeout:g} s"
        except httpx.HTTPError as exc:
            return f"POST {shown(self._url)} failed: {exc or type(exc).__name__}"
        finally:
            POST_SECONDS.observe(time.perf_counter() - started)
        if self._policy.delivered(response.status_code):
            return None
        return f"POST {shown(self._url)} answered {response.status_code} {response.reason_phrase}".rstrip()
