"""History queries (additions to contract v1, `<prefix>.history.<sid>.<kind>`).

Pages are newest first. A reply carries `next` when older items may follow; pass it back as
`before` to get them. Cursors are opaque strings: their content may change at any time.
Unknown request fields are tolerated, like every v1 request.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from contracts.envelope import ErrorBody
from contracts.events import MessageEvent
from contracts.types import OutboundState, SendId, SessionState

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

Limit = Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
Chat = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


# -- requests ---------------------------------------------------------------------------
class MessagesQuery(msgspec.Struct, omit_defaults=True, kw_only=True):
    """`<prefix>.history.<sid>.messages`: inbound messages, optionally of one chat."""

    chat: Chat | None = None
    before: Cursor | None = None
    limit: Limit = DEFAULT_LIMIT


class StatusQuery(msgspec.Struct, omit_defaults=True, kw_only=True):
    """`<prefix>.history.<sid>.status`: the session's status changes."""

    before: Cursor | None = None
    limit: Limit = DEFAULT_LIMIT


class OutboundQuery(msgspec.Struct, omit_defaults=True, kw_only=True):
    """`<prefix>.history.<sid>.outbound`: one send by `id` (an OutboundRecord), or a page of
    sends (an OutboundPage). `id` cannot be combined with `before` or `limit`."""

    id: SendId | None = None
    before: Cursor | None = None
    limit: Limit | None = None


# -- replies ----------------------------------------------------------------------------
class MessagePage(msgspec.Struct, omit_defaults=True):
    messages: list[MessageEvent]
    next: str | None = None


class StatusRecord(msgspec.Struct, omit_defaults=True, kw_only=True):
    """A status event as stored: QR codes and pairing codes are short-lived pairing secrets
    and are not kept, only whether the event carried one."""

    event_id: str
    session_id: str
    at: datetime
    state: SessionState
    reason: str | None = None
    node: str | None = None
    jid: str | None = None
    token: str | None = None
    had_qr: bool = False
    had_pair_code: bool = False


class StatusPage(msgspec.Struct, omit_defaults=True):
    statuses: list[StatusRecord]
    next: str | None = None


class OutboundStep(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One outbound event of a send, in the order the events happened."""

    event_id: str
    state: OutboundState
    at: datetime
    message_id: str | None = None
    error: ErrorBody | None = None


class OutboundRecord(msgspec.Struct, omit_defaults=True, kw_only=True):
    """A send: what intake accepted (when it was recorded) and how far it got.

    `state` is the most advanced state any event reported (see services/persistence/writer.py).
    """

    id: str
    session_id: str
    state: OutboundState
    created_at: datetime
    updated_at: datetime | None = None
    to: str | None = None
    send_at: datetime | None = None
    expires_at: datetime | None = None
    text_length: int | None = None
    message_id: str | None = None
    error: ErrorBody | None = None
    history: list[OutboundStep] = []


class OutboundPage(msgspec.Struct, omit_defaults=True):
    sends: list[OutboundRecord]
    next: str | None = None
