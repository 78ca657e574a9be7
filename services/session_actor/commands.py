"""Requests for one session's actor (`<prefix>._actor.<sid>.<op>`), answered with the v1
envelope. The session API forwards pair, logout, reconnect, read, policy and delete here; only
the node that runs the session's actor subscribes, so NATS routes each to its owner."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from contracts.subjects import Subjects
from services.common.api import answer
from services.common.tasks import TaskSet

# Internal error code (actor subjects only): the command reached an actor that is handing its
# session over, so the API asks the next owner instead of failing the user's request.
MOVING = "session_moving"

# (operation, request body) -> the reply's data
CommandHandler = Callable[[str, bytes], Awaitable[Any]]
Unlisten = Callable[[], Awaitable[None]]


class CommandListener:
    def __init__(self, nc: NatsClient, subjects: Subjects, replies: TaskSet) -> None:
        self._nc = nc
        self._subjects = subjects
        self._replies = replies

    async def listen(self, sid: str, handle: CommandHandler) -> Unlisten:
        async def on_request(msg: Msg) -> None:
            # Answered from a task of its own: the reply must outlive this subscription, which
            # the actor drops when a command (delete) ends it.
            op = msg.subject.rsplit(".", 1)[-1]
            self._replies.spawn(answer(msg, lambda: handle(op, msg.data)))

        subscription = await self._nc.subscribe(self._subjects.actor(sid, "*"), cb=on_request)
        return subscription.unsubscribe
