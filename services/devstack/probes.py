"""Talking to a running system over NATS: requests (`call`, `call_ok`), polling
(`wait_until`) and every event it publishes (`EventTap`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.aio.client import Client as NatsClient
from nats.js.api import DeliverPolicy

from contracts.envelope import Reply
from services.common.bus import encode
from services.common.config import Settings


async def wait_until(
    predicate: Callable[[], Awaitable[Any] | Any], timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll until `predicate()` is truthy; return its value or fail with `what`.

    A predicate that raises (a service not answering yet) counts as not yet.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if asyncio.iscoroutine(last):
                last = await last
        except Exception as exc:
            last = exc
        else:
            if last:
                return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate!r} (last: {last!r})")


async def call(nc: NatsClient, subject: str, body: Any = None, timeout: float = 10.0) -> Reply:
    """A v1 request; returns the decoded envelope whatever it says."""
    payload = body if isinstance(body, bytes) else encode({} if body is None else body)
    msg = await nc.request(subject, payload, timeout=timeout)
    return msgspec.json.decode(msg.data, type=Reply)


async def call_ok(nc: NatsClient, subject: str, body: Any = None, timeout: float = 10.0) -> Any:
    reply = await call(nc, subject, body, timeout)
    assert reply.ok, f"{subject} answered {reply.error}"
    return reply.data


async def all_sessions(nc: NatsClient, subject: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every session of `<prefix>.session.list` (`subject`), page after page."""
    sessions: list[dict[str, Any]] = []
    page: dict[str, Any] = {}
    while True:
        page = await call_ok(nc, subject, {"after": page["next"]} if "next" in page else {}, timeout)
        sessions += page["sessions"]
        if "next" not in page:
            return sessions


class EventTap:
    """Collects every event of a deployment from the start of its events stream."""

    def __init__(self, nc: NatsClient, settings: Settings) -> None:
        self._nc = nc
        self._settings = settings
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._sub: Any = None

    async def start(self) -> EventTap:
        js = self._nc.jetstream()

        async def on_msg(msg: Any) -> None:
            self.events.append((msg.subject, msgspec.json.decode(msg.data)))

        self._sub = await js.subscribe(
            self._settings.subjects.events_all,
            cb=on_msg,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        return self

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    def of(self, sid: str, kind: str) -> list[dict[str, Any]]:
        subject = self._settings.subjects.event(sid, kind)
        return [body for subj, body in self.events if subj == subject]

    def states(self, sid: str) -> list[str]:
        return [e["state"] for e in self.of(sid, "status")]

    async def wait_for(
        self, sid: str, kind: str, match: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((e for e in self.of(sid, kind) if match(e)), None)

        return await wait_until(found, timeout, what=f"{kind} event of {sid}")

    async def wait_state(self, sid: str, state: str, timeout: float = 15.0, after: int = 0) -> dict[str, Any]:
        """The first `state` status event of `sid` after the first `after` status events."""

        def found() -> dict[str, Any] | None:
            events = self.of(sid, "status")[after:]
            return next((e for e in events if e["state"] == state), None)

        return await wait_until(found, timeout, what=f"{sid} reaching {state}")
