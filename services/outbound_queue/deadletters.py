"""Queue introspection and the dead-letter queue, for operators (`wactl queue`, `wactl dlq`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from contracts.envelope import not_found
from contracts.messages import parts
from contracts.queue import (
    DeadLetter,
    DlqEntry,
    DlqList,
    DlqListRequest,
    DlqPurged,
    DlqRetried,
    DlqSelect,
    QueueStats,
)
from contracts.sending import SendText
from contracts.subjects import Subjects
from contracts.types import MAX_SEND_ID
from services.outbound_queue.intake import Intake
from services.sending.queue_reads import oldest_age

_letter = msgspec.json.Decoder(DeadLetter)


class Operations:
    def __init__(self, js: JetStreamContext, subjects: Subjects, intake: Intake) -> None:
        self._js = js
        self._subjects = subjects
        self._intake = intake

    async def stats(self, sid: str) -> QueueStats:
        self._intake.check_known(sid)
        stream = self._subjects.outbound_stream
        queued = self._subjects.outbound(sid)
        info = await self._js.stream_info(stream, subjects_filter=queued)
        scheduled = await self._js.stream_info(stream, subjects_filter=self._subjects.scheduled(sid, "*"))
        return QueueStats(
            session_id=sid,
            depth=(info.state.subjects or {}).get(queued, 0),
            scheduled=sum((scheduled.state.subjects or {}).values()),
            oldest_age_s=await oldest_age(self._js, stream, queued),
        )

    async def list(self, req: DlqListRequest) -> DlqList:
        entries = []
        async for seq, letter in self._letters(req.session_id):
            entries.append(
                DlqEntry(
                    seq=seq,
                    session_id=letter.item.session_id,
                    id=letter.item.id,
                    to=letter.item.to,
                    error=letter.error,
                    attempts=letter.attempts,
                    failed_at=letter.failed_at,
                )
            )
            if len(entries) >= req.limit:
                break
        return DlqList(entries=entries)

    async def retry(self, select: DlqSelect) -> DlqRetried:
        """Send again under a new id (`<id>~r<seq>`): the original keeps its terminal state."""
        retried = []
        async for seq, letter in self._selected(select):
            item = letter.item
            new_id = f"{item.id}~r{seq}"[-MAX_SEND_ID:]
            retry = SendText(
                id=new_id, to=item.to, text=item.text, media=item.media, reply_to=item.reply_to, **parts(item)
            )
            await self._intake.accept(item.session_id, retry)
            await self._js.delete_msg(self._subjects.dead_letter_stream, seq)
            retried.append({"seq": str(seq), "id": item.id, "new_id": new_id})
        return DlqRetried(retried=retried)

    async def purge(self, select: DlqSelect) -> DlqPurged:
        purged = 0
        async for seq, _ in self._selected(select):
            await self._js.delete_msg(self._subjects.dead_letter_stream, seq)
            purged += 1
        return DlqPurged(purged=purged)

    async def _selected(self, select: DlqSelect) -> AsyncIterator[tuple[int, DeadLetter]]:
        if select.seq is not None:
            try:
                msg = await self._js.get_msg(self._subjects.dead_letter_stream, seq=select.seq)
            except NotFoundError:
                raise not_found(f"no dead letter {select.seq}") from None
            yield select.seq, _letter.decode(msg.data)
            return
        async for found in self._letters(select.session_id):
            yield found

    async def _letters(self, sid: str | None) -> AsyncIterator[tuple[int, DeadLetter]]:
        subject = self._subjects.dead_letter(sid or "*")
        seq = 0
        while True:
            try:
                msg = await self._js.get_msg(self._subjects.dead_letter_stream, seq=seq + 1, subject=subject, next=True)
            except NotFoundError:
                return
            seq = msg.seq
            yield seq, _letter.decode(msg.data)
