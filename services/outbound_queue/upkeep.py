"""Upkeep of the queues: sends expire on time, and sends that can never go out are failed.

- Expiry: a send with `expires_at` has a JetStream schedule that drops an ExpiryCheck on
  `<prefix>._expiry.<sid>` at that moment; if the send is still waiting it becomes
  `expired` (compare-and-set: an actor sending it at the same instant wins or loses cleanly).
- Clean-up: when a session is logged out or deleted, every send it had waiting (queued or
  scheduled) fails at once with `session_logged_out` / `session_deleted`, instead of waiting
  forever for a device that is gone. Only sends accepted before that moment: a session that
  pairs again starts with a clean queue and keeps what was accepted since.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Any

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from contracts.envelope import ErrorBody
from contracts.internal import ExpiryCheck, QueuedSend
from contracts.subjects import Subjects
from services.common.tasks import cancel_and_wait
from services.sending.ledger import Ledger

log = structlog.get_logger(__name__)

EXPIRY_CONSUMER = "expiry"
FAILED_FOR = {
    "logged_out": ErrorBody(code="session_logged_out", message="the session was logged out before sending"),
    "deleted": ErrorBody(code="session_deleted", message="the session was deleted before sending"),
}

_check = msgspec.json.Decoder(ExpiryCheck)
_queued = msgspec.json.Decoder(QueuedSend)


class Upkeep:
    def __init__(self, js: JetStreamContext, subjects: Subjects, ledger: Ledger) -> None:
        self._js = js
        self._subjects = subjects
        self._ledger = ledger
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._expire_loop(), name="expiry")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _expire_loop(self) -> None:
        psub = await self._js.pull_subscribe(
            self._subjects.expiry("*"),
            durable=EXPIRY_CONSUMER,
            stream=self._subjects.outbound_stream,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_deliver=-1, ack_wait=30),
        )
        while True:
            try:
                msgs = await psub.fetch(100, timeout=5)
            except TimeoutError:
                continue
            for msg in msgs:
                try:
                    check = _check.decode(msg.data)
                except msgspec.DecodeError:
                    log.error("undecodable expiry check; dropped", subject=msg.subject)
                    await msg.term()
                    continue
                try:
                    await self._ledger.expire(check.session_id, check.id)
                except Exception:
                    log.exception("expiry check failed; retrying", session=check.session_id)
                    await msg.nak(delay=2)
                    continue
                await msg.ack()

    async def clear_session(self, sid: str, state: str, before: datetime) -> int:
        """Fail every send of `sid` accepted before `before`; returns how many failed now."""
        error = FAILED_FOR[state]
        failed = 0
        for subject in (self._subjects.outbound(sid), self._subjects.scheduled(sid, "*")):
            async for seq, item in self._waiting(subject):
                if item.accepted_at > before:
                    continue
                if await self._ledger.fail_waiting(sid, item.id, error):
                    failed += 1
                found = await self._ledger.journal.get(sid, item.id)
                if found is None or found[0].state != "sending":  # an actor holds it: let it finish
                    with contextlib.suppress(NotFoundError):
                        await self._js.delete_msg(self._subjects.outbound_stream, seq)
        if failed:
            log.info("failed the waiting sends of a session", session=sid, state=state, failed=failed)
        return failed

    async def _waiting(self, subject: str) -> Any:
        seq = 0
        while True:
            try:
                msg = await self._js.get_msg(self._subjects.outbound_stream, seq=seq + 1, subject=subject, next=True)
            except NotFoundError:
                return
            seq = msg.seq
            yield seq, _queued.decode(msg.data)
