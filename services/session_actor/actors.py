"""The actors a node runs, by session id. Each runs as a task of its own and leaves the
registry when it ends, whatever ended it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from services.common.tasks import TaskSet
from services.session_actor.actor import SessionActor

# (sid, revision of the claim) -> the actor for it
MakeActor = Callable[[str, int], SessionActor]


class ActorRegistry:
    def __init__(self, make: MakeActor, on_finished: Callable[[SessionActor], None]) -> None:
        self._make = make
        self._on_finished = on_finished  # a session may need an actor again: place anew
        self._actors: dict[str, SessionActor] = {}
        self._tasks = TaskSet()

    def start(self, sid: str, revision: int) -> SessionActor:
        actor = self._make(sid, revision)
        self._actors[sid] = actor
        self._tasks.spawn(self._run(actor), name=f"actor-{sid}")
        return actor

    async def _run(self, actor: SessionActor) -> None:
        try:
            await actor.run()
        finally:
            if self._actors.get(actor.sid) is actor:
                del self._actors[actor.sid]
            self._on_finished(actor)

    def get(self, sid: str) -> SessionActor | None:
        return self._actors.get(sid)

    def __contains__(self, sid: object) -> bool:
        return sid in self._actors

    def __len__(self) -> int:
        return len(self._actors)

    def __iter__(self) -> Iterator[SessionActor]:
        return iter(list(self._actors.values()))

    def sids(self) -> list[str]:
        return list(self._actors)

    def pairing(self) -> frozenset[str]:
        """Sessions in the middle of pairing: placement leaves them where they are."""
        return frozenset(sid for sid, actor in self._actors.items() if actor.machine.phase == "pairing")

    def abort_all(self) -> None:
        for actor in self:
            actor.abort()

    async def wait_all(self) -> None:
        """Until every actor running now has finished."""
        await asyncio.gather(*(actor.finished.wait() for actor in self))
