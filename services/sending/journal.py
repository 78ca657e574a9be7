"""The send journal: one record per accepted send in the `<PREFIX>_SENDS` KV bucket.

    accepted  -- intake recorded the id (a second request with it is a duplicate)
    sending   -- the owning actor is about to hand it to WhatsApp (its intent)
    sent      -- WhatsApp took it (message id known)
    failed    -- it will never be sent (code)
    expired   -- its `expires_at` passed before it could be sent

Every transition is a compare-and-set on the record's revision, so exactly one actor can
move a send from `accepted` to `sending`, whatever copies of it the queue delivers. A record
found in `sending` means an earlier attempt may have reached WhatsApp: it is never sent
again blindly. Records expire with the bucket's TTL (`outbound_retention_days`); MongoDB
keeps the lifecycle for history (persistence).

A sent message also gets `<sid>.m.<hash of WhatsApp's message id>` -> send id, written
before its `sent` event, so whichever actor owns the session when a receipt comes (perhaps
long after the sender died) finds the send without waiting for persistence to catch up.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.common.bus import encode

JournalState = Literal["accepted", "sending", "sent", "failed", "expired"]


class SendRecord(msgspec.Struct, omit_defaults=True, kw_only=True):
    id: str
    state: JournalState
    accepted_at: datetime | None = None
    token: str | None = None  # the owner that moved it to `sending`
    node: str | None = None
    message_id: str | None = None
    failed: str | None = None
    attempts: int = 0  # attempts that surely did not reach WhatsApp


_decoder = msgspec.json.Decoder(SendRecord)


def id_token(send_id: str) -> str:
    """Send ids are free text; KV keys and subject tokens are not."""
    return hashlib.sha256(send_id.encode()).hexdigest()[:40]


def send_key(sid: str, send_id: str) -> str:
    return f"{sid}.{id_token(send_id)}"


def message_key(sid: str, message_id: str) -> str:
    return f"{sid}.m.{id_token(message_id)}"


def accepted_record(send_id: str, at: datetime) -> SendRecord:
    """The record intake writes for a new send (and all a claim may assume of it at that
    revision)."""
    return SendRecord(id=send_id, state="accepted", accepted_at=at)


class SendJournal:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def accept(self, sid: str, send_id: str, at: datetime) -> tuple[SendRecord | None, int | None]:
        """Record a new send: (None, its revision); when the id was seen, (that record, its
        revision) instead. The revision lets the first claim skip a read (`claim(known=)`)."""
        try:
            return None, await self._kv.create(send_key(sid, send_id), encode(accepted_record(send_id, at)))
        except KeyWrongLastSequenceError:
            found = await self.get(sid, send_id)
            return found if found else (None, None)

    async def get(self, sid: str, send_id: str) -> tuple[SendRecord, int] | None:
        try:
            entry = await self._kv.get(send_key(sid, send_id))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return _decoder.decode(entry.value), entry.revision

    async def claim(
        self,
        sid: str,
        send_id: str,
        token: str,
        node: str,
        *,
        from_state: JournalState = "accepted",
        known: tuple[SendRecord, int] | None = None,
    ) -> tuple[bool, SendRecord]:
        """Move a send from `from_state` to `sending`; (False, record) when it is elsewhere.

        `from_state="sending"` takes over an ambiguous send, for sessions whose policy says
        to send those again. `known`: the record and revision as the caller last saw them
        (tried first without a read; if the record moved since, it is read as usual).
        """
        return await self.move(sid, send_id, from_state, "sending", known=known, token=token, node=node)

    async def move(
        self,
        sid: str,
        send_id: str,
        from_state: JournalState,
        to_state: JournalState,
        known: tuple[SendRecord, int] | None = None,
        **fields: object,
    ) -> tuple[bool, SendRecord]:
        """Compare-and-set from `from_state` to `to_state`; (False, record) when it is elsewhere."""
        while True:
            found, known = known or await self.get(sid, send_id), None
            try:
                if found is None:  # accepted before the journal kept it (or its record expired)
                    if from_state != "accepted":
                        return False, SendRecord(id=send_id, state="accepted")
                    moved = SendRecord(id=send_id, state=to_state, **fields)  # type: ignore[arg-type]
                    await self._kv.create(send_key(sid, send_id), encode(moved))
                    return True, moved
                record, revision = found
                if record.state != from_state:
                    return False, record
                moved = msgspec.structs.replace(record, state=to_state, **fields)
                await self._kv.update(send_key(sid, send_id), encode(moved), last=revision)
                return True, moved
            except KeyWrongLastSequenceError:
                continue  # someone moved it meanwhile: look again

    async def forget(self, sid: str, send_id: str) -> None:
        """Drop the record of a request that was not accepted after all."""
        await self._kv.delete(send_key(sid, send_id))

    async def note_message(self, sid: str, message_id: str, send_id: str) -> None:
        await self._kv.put(message_key(sid, message_id), send_id.encode())

    async def send_id_of(self, sid: str, message_id: str) -> str | None:
        """The send that became WhatsApp's message `message_id` (for its receipts)."""
        try:
            entry = await self._kv.get(message_key(sid, message_id))
        except KeyNotFoundError:
            return None
        return entry.value.decode() if entry.value else None

    async def settle(self, sid: str, record: SendRecord) -> None:
        """Write the outcome (or hand a send that surely did not go out back to `accepted`)."""
        await self._kv.put(send_key(sid, record.id), encode(record))
