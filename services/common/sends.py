"""The send journal: one record per accepted send in the `<PREFIX>_SENDS` KV bucket.

    accepted  -- intake recorded the id (a second request with it is a duplicate)
    sending   -- the owning actor is about to hand it to WhatsApp (its intent)
    sent      -- WhatsApp took it (message id known)
    failed    -- it will never be sent (code)

Every transition is a compare-and-set on the record's revision, so exactly one actor can
move a send from `accepted` to `sending`, whatever copies of it the queue delivers. A record
found in `sending` means an earlier attempt may have reached WhatsApp: it is never sent
again blindly. Records expire with the bucket's TTL (`outbound_retention_days`); MongoDB
keeps the lifecycle for history (persistence).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.common.bus import encode

JournalState = Literal["accepted", "sending", "sent", "failed"]


class SendRecord(msgspec.Struct, omit_defaults=True, kw_only=True):
    id: str
    state: JournalState
    accepted_at: datetime | None = None
    token: str | None = None  # the owner that moved it to `sending`
    node: str | None = None
    message_id: str | None = None
    failed: str | None = None


_decoder = msgspec.json.Decoder(SendRecord)


def send_key(sid: str, send_id: str) -> str:
    """Send ids are free text; KV keys are not."""
    return f"{sid}.{hashlib.sha256(send_id.encode()).hexdigest()[:40]}"


class SendJournal:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def accept(self, sid: str, send_id: str, at: datetime) -> SendRecord | None:
        """Record a new send; returns the existing record instead when the id was seen."""
        record = SendRecord(id=send_id, state="accepted", accepted_at=at)
        try:
            await self._kv.create(send_key(sid, send_id), encode(record))
        except KeyWrongLastSequenceError:
            found = await self.get(sid, send_id)
            return found[0] if found else None
        return None

    async def get(self, sid: str, send_id: str) -> tuple[SendRecord, int] | None:
        try:
            entry = await self._kv.get(send_key(sid, send_id))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return _decoder.decode(entry.value), entry.revision

    async def claim(self, sid: str, send_id: str, token: str, node: str) -> tuple[bool, SendRecord]:
        """Move an accepted send to `sending`; (False, record) when it is past that already."""
        intent = SendRecord(id=send_id, state="sending", token=token, node=node)
        while True:
            found = await self.get(sid, send_id)
            try:
                if found is None:  # accepted before the journal existed, or expired
                    await self._kv.create(send_key(sid, send_id), encode(intent))
                    return True, intent
                record, revision = found
                if record.state != "accepted":
                    return False, record
                intent.accepted_at = record.accepted_at
                await self._kv.update(send_key(sid, send_id), encode(intent), last=revision)
                return True, intent
            except KeyWrongLastSequenceError:
                continue  # someone moved it meanwhile: look again

    async def settle(self, sid: str, record: SendRecord) -> None:
        """Write the outcome (or hand a send that surely did not go out back to `accepted`)."""
        await self._kv.put(send_key(sid, record.id), encode(record))
