"""Session requests and replies (contract v1, `<prefix>.session.*`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from contracts.types import Label, MessageId, Phone, Recipient, SessionId, SessionState

MAX_READ_IDS = 1000
MAX_LIST_PAGE = 5000


class SessionCreate(msgspec.Struct):
    session_id: SessionId
    label: Label = ""


class Empty(msgspec.Struct):
    """Requests without parameters (`{}`); unknown fields are tolerated for forward compatibility."""


class PairByQr(msgspec.Struct, tag_field="method", tag="qr"):
    pass


class PairByCode(msgspec.Struct, tag_field="method", tag="code"):
    phone: Phone


PairRequest = PairByQr | PairByCode


class Session(msgspec.Struct, omit_defaults=True):
    session_id: str
    label: str
    state: SessionState
    since: datetime
    created_at: datetime
    reason: str | None = None
    jid: str | None = None
    node: str | None = None


class SessionListRequest(msgspec.Struct, omit_defaults=True):
    """`<prefix>.session.list`, in pages (addition to v1; `{}` asks for the first page).

    Sessions come in id order. A reply holds at most `limit` sessions and never more than
    fit in one NATS message (the server's `max_payload`, 1 MB by default: about 5,000
    sessions); ask again with `after` set to the reply's `next` for the rest."""

    after: SessionId | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIST_PAGE)] | None = None


class SessionList(msgspec.Struct, omit_defaults=True):
    sessions: list[Session]
    next: str | None = None  # the `after` of the next page; absent on the last one


class PairStarted(msgspec.Struct, omit_defaults=True):
    state: SessionState
    pair_code: str | None = None


class SessionDeleted(msgspec.Struct):
    session_id: str


class MarkRead(msgspec.Struct, omit_defaults=True):
    """`<prefix>.session.<sid>.read` (addition to v1): read receipts for messages of `chat`,
    sent at once by the owning actor (not queued behind the session's pacing). `sender` is
    the author of the messages in a group."""

    chat: Recipient
    message_ids: Annotated[list[MessageId], msgspec.Meta(min_length=1, max_length=MAX_READ_IDS)]
    sender: Recipient | None = None


class MarkedRead(msgspec.Struct):
    chat: str
    message_ids: list[str]
