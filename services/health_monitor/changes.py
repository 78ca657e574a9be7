"""A change counter the dashboard's live streams wait on: the monitor touches it when the
view changes (a status event, a node or an owner), each stream renders again after it."""

from __future__ import annotations

import asyncio

from services.common.tasks import wait_event


class Changes:
    def __init__(self) -> None:
        self.version = 0
        self._event = asyncio.Event()

    def touch(self) -> None:
        self.version += 1
        self._event.set()
        self._event = asyncio.Event()  # the next waiters wait for the next change

    async def after(self, version: int, timeout: float) -> None:
        """Return once something changed since `version`, or after `timeout` seconds."""
        if self.version == version:
            await wait_event(self._event, timeout)
