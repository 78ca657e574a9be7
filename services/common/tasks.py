"""Background tasks that are kept alive until done and whose failures are logged."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger(__name__)


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set, at most `timeout` seconds; True if it is set.

    Not `asyncio.wait_for`: on Python 3.11 it loses a cancellation that arrives just as the
    event is set, and a loop waiting this way then never stops (nodes hung on SIGTERM).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()


class TaskSet:
    def __init__(self) -> None:
        # The loop keeps only weak references to tasks: without these a task may vanish.
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", task=task.get_name(), error=repr(task.exception()))

    async def join(self) -> None:
        """Wait for every task (a failure is logged, not raised)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.join()
