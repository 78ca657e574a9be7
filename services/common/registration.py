"""Creating a session: its document, a claimable ownership entry, and the `created` event.

Shared by the session API (`wa.session.create`) and the importer of existing stores.
"""

from __future__ import annotations

from typing import Any

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from contracts.events import StatusEvent
from contracts.internal import Ownership
from contracts.types import utcnow
from services.common.bus import EventPublisher, encode, new_id
from services.common.cluster import OWN
from services.common.sessions import SessionStore


async def register(sessions: SessionStore, kv: KeyValue, events: EventPublisher, sid: str, label: str) -> dict[str, Any]:
    """Create `sid`; raises ContractError(conflict) when it exists."""
    doc = await sessions.create(sid, label, utcnow())
    try:
        try:
            await kv.create(OWN + sid, encode(Ownership()))
        except KeyWrongLastSequenceError:  # a leftover entry of an earlier session of that id
            await kv.put(OWN + sid, encode(Ownership()))
    except Exception:
        await sessions.remove(sid)
        raise
    await announce(events, sid, doc)
    return doc


async def announce(events: EventPublisher, sid: str, doc: dict[str, Any]) -> None:
    await events.publish(StatusEvent(event_id=new_id(), session_id=sid, at=doc["created_at"], state="created"))
