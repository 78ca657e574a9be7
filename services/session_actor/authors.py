"""Who wrote the messages a session's actor saw lately: what a reply, a reaction, an edit or
a revoke must say of the message it points at (WhatsApp keys a message by chat, id,
whether it is our own, and in a group its author)."""

from __future__ import annotations

from collections import OrderedDict

from services.session_actor.adapters.base import MessageRef

REMEMBERED = 10_000


class RecentAuthors:
    def __init__(self, limit: int = REMEMBERED) -> None:
        self._limit = limit
        self._refs: OrderedDict[str, MessageRef] = OrderedDict()

    def note(self, message_id: str, from_me: bool, sender: str | None = None) -> None:
        self._refs[message_id] = MessageRef(message_id, from_me, sender)
        self._refs.move_to_end(message_id)
        while len(self._refs) > self._limit:
            self._refs.popitem(last=False)

    def get(self, message_id: str) -> MessageRef | None:
        return self._refs.get(message_id)
