"""The Go map guard: keeps goneonize's process-wide client maps free of races.

goneonize keeps its clients in plain Go maps without a lock: concurrent writers (or a reader
during a write) abort the whole process ("fatal error: concurrent map writes", reproduced
here with 200 parallel Stop calls). Every export that touches those maps is called through
this guard.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Every export but Neonize() and Stop() reads the client map as its first statement.
MAP_READ_GRACE = 0.05


class GoMapGuard:
    """Keeps goneonize's global client maps (plain Go maps, no lock) free of races.

    Writers: Neonize()'s prologue (registers the client) and Stop() (removes it) run one at
    a time with nothing else. Readers (every other export, which looks its client up first
    thing) share, and count as done once their call returned or ran for MAP_READ_GRACE.
    Waiters are served in arrival order, so a connect storm cannot starve sends, nor sends
    a stop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._readers = 0
        self._writer = False
        self._queue: deque[tuple[bool, asyncio.Future[None]]] = deque()

    async def read(self, call: Callable[..., T], *args: Any) -> T:
        await self._enter(exclusive=False)
        release = self._releaser(exclusive=False)
        started: asyncio.Future[None] = self.loop.create_future()

        def run() -> T:
            self.loop.call_soon_threadsafe(started.set_result, None)
            return call(*args)

        try:
            future = self.loop.run_in_executor(None, run)
        except BaseException:
            release()
            raise
        started.add_done_callback(lambda _: self.loop.call_later(MAP_READ_GRACE, release))
        future.add_done_callback(lambda _: release())
        # Shielded: a cancelled caller must not end the hold while Go is still reading.
        return await asyncio.shield(future)

    async def write(self, call: Callable[..., T], *args: Any) -> T:
        release = await self.hold()
        try:
            future = self.loop.run_in_executor(None, call, *args)
        except BaseException:
            release()
            raise
        future.add_done_callback(lambda _: release())
        return await asyncio.shield(future)

    async def hold(self) -> Callable[[], None]:
        """Exclusive access until the returned function is called (idempotent)."""
        await self._enter(exclusive=True)
        return self._releaser(exclusive=True)

    async def _enter(self, exclusive: bool) -> None:
        if not self._queue and self._admits(exclusive):
            self._admit(exclusive)
            return
        turn: asyncio.Future[None] = self.loop.create_future()
        self._queue.append((exclusive, turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # admitted, then cancelled: give it back
                self._releaser(exclusive)()
            raise

    def _admits(self, exclusive: bool) -> bool:
        return not self._writer and not (exclusive and self._readers)

    def _admit(self, exclusive: bool) -> None:
        if exclusive:
            self._writer = True
        else:
            self._readers += 1

    def _releaser(self, exclusive: bool) -> Callable[[], None]:
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            if exclusive:
                self._writer = False
            else:
                self._readers -= 1
            self._serve_queue()

        return release

    def _serve_queue(self) -> None:
        while self._queue:
            exclusive, turn = self._queue[0]
            if turn.cancelled():
                self._queue.popleft()
                continue
            if not self._admits(exclusive):
                return
            self._queue.popleft()
            self._admit(exclusive)
            turn.set_result(None)


_guard: GoMapGuard | None = None


def process_guard(loop: asyncio.AbstractEventLoop) -> GoMapGuard:
    """The one guard of this process: the Go maps are process-wide, so must be the guard."""
    global _guard
    if _guard is None:
        _guard = GoMapGuard(loop)
    elif _guard.loop is not loop:
        raise RuntimeError("neonize is already in use on another event loop")
    return _guard
