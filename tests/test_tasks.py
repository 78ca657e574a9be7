"""Waiting for an event with a timeout, without losing a cancellation.

Regression: nodes sometimes never exited on SIGTERM (1 in 13 in a loop of graceful stops).
Their placement loop waited with `asyncio.wait_for(event.wait(), t)`; on Python 3.11 a
cancellation that arrives as the event is set is swallowed there, so the loop went on and
the shutdown waited for it forever.
"""

from __future__ import annotations

import asyncio

from services.common.tasks import wait_event


async def test_a_cancellation_that_arrives_as_the_event_is_set_stops_the_waiting_loop() -> None:
    event = asyncio.Event()

    async def loop() -> None:
        while True:
            await wait_event(event, 10)
            event.clear()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)  # the loop is waiting
    event.set()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert task in done and task.cancelled()


async def test_it_tells_whether_the_event_was_set_or_the_time_ran_out() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_event(event, 5) is True
