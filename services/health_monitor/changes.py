"""A change counter the dashboard's live streams wait on: the monitor touches it when the
view changes (a status event, a node or an owner), each stream renders again after it, and
ends once it is closed (the server is stopping)."""

from __future__ import annotations

import asyncio

from services.common.tasks import wait_event


class Changes:
    def __init__(self) -> None:
        self.version = 0
        self.closed = False
        self._event = asyncio.Event()

    def touch(self) -> None:
        self.version += 1
        self._event.set()
        self._event = asyncio.Event()  # the next waiters wait for the next change

    def close(self) -> None:
        self.closed = True
        self._event.set()

    async def after(self, version: int, timeout: float) -> None:
        """Return once something changed since `version`, after `timeout` seconds, or at once
        when closed."""
        if self.version == version and not self.closed:
            await wait_event(self._event, timeout)
