"""Stopping loops for sure, though a cancellation can be lost.

Regression: nodes sometimes never exited on SIGTERM (about 1 stop in 13, `python -m bench
stops`). On Python 3.11 `asyncio.wait_for` swallows a cancellation that arrives just as what
it awaits completes: first seen in the placement loop's own wait for its wake-up event,
then, once that was fixed, inside nats-py's request (the lease renewal loop carried on,
"cancelling" but alive, and the shutdown waited for it forever).
"""

from __future__ import annotations

import asyncio

from services.common.tasks import cancel_and_wait, wait_event


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


async def test_a_loop_whose_cancellation_is_lost_once_is_still_stopped() -> None:
    lost = 0

    async def loop() -> None:
        nonlocal lost
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost += 1  # as a library's wait_for does when its reply arrives at that moment

    plain = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    plain.cancel()
    done, _ = await asyncio.wait({plain}, timeout=0.5)
    assert plain not in done  # a single cancellation is not enough

    await asyncio.wait_for(cancel_and_wait(plain), 5)
    assert plain.cancelled()
