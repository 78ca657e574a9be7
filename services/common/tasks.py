"""Background tasks: kept alive until done, failures logged, and stopped for sure.

Python 3.11's `asyncio.wait_for` swallows a cancellation that arrives just as what it
awaits completes; nats-py uses it for every request. A loop cancelled at that moment
carries on, and whoever awaits its end waits forever (nodes hung on SIGTERM, about 1 stop
in 13). Hence `wait_event` for our own waits and `cancel_and_wait`, which repeats the
cancellation until the task has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger(__name__)

CANCEL_REPEAT = 0.5  # seconds between cancellations of a task that has not ended yet


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set, at most `timeout` seconds; True if it is set (not
    `asyncio.wait_for`, which can lose a cancellation: see above)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel the tasks and wait until every one has ended, cancelling again while any has
    not (its cancellation may have been lost). Their failures are not raised."""
    pending = {task for task in tasks if task is not None and not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_REPEAT)
    for task in tasks:
        if task is not None and not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at exit


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
        await cancel_and_wait(*self._tasks)
