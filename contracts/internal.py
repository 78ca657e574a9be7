"""Messages between our own services. Not part of the public promise; may change freely."""

from __future__ import annotations

from datetime import datetime

import msgspec

from contracts.messages import SendableParts
from contracts.sending import Media
from contracts.types import SessionState


class NodeLease(msgspec.Struct, omit_defaults=True):
    """Value of `node.<node_id>` in the leases bucket; expires on the server unless renewed."""

    node_id: str
    host: str
    pid: int
    capacity: int
    started_at: datetime
    # Set when the node starts a graceful stop: it still owns what it has not released yet,
    # but takes no share, so the others claim each session the moment it is released.
    leaving: bool = False
    # Why the node takes no sessions at all (its vault keys cannot open the stored
    # credentials); the others count it out of the fair share, like a leaving node.
    unfit: str | None = None


class Ownership(msgspec.Struct, omit_defaults=True):
    """Value of `own.<sid>`: which node's actor owns the session (None: nobody, claimable).

    The entry exists exactly while the session exists. Its KV revision at the moment a node
    claimed it is that owner's fencing token.
    """

    node: str | None = None
    # Why the previous owner let go (`released`, `handoff`, `shutdown`), for the record.
    released: str | None = None


class SessionBeat(msgspec.Struct, omit_defaults=True):
    session_id: str
    state: SessionState
    since: datetime
    reason: str | None = None
    queue_depth: int | None = None


class NodeHeartbeat(msgspec.Struct, omit_defaults=True):
    node_id: str
    at: datetime
    capacity: int
    lease_ok: bool
    loop_lag_ms: float
    # Per-session entries, from nodes before `running`: a list of every session outgrew NATS'
    # 1 MiB message limit at about 9,000 sessions on one node.
    sessions: list[SessionBeat] = []
    running: int | None = None  # actors the node runs


def sessions_running(beat: NodeHeartbeat) -> int:
    return beat.running if beat.running is not None else len(beat.sessions)


class QueuedSend(SendableParts, omit_defaults=True, kw_only=True):
    """One accepted send waiting in the per-session outbound stream (with its parts: a
    reaction, edit, revoke, location or contact). Actors older than the parts would send an
    empty text instead: roll actors out before the outbound-queue."""

    id: str
    session_id: str
    to: str
    # The text; with `media`, its caption (None: no caption).
    text: str | None = None
    accepted_at: datetime
    send_at: datetime | None = None
    expires_at: datetime | None = None
    # A media send (inline base64 travels here: intake keeps the whole message within NATS'
    # max payload). Actors older than this field would send only the caption: roll actors
    # out before the outbound-queue.
    media: Media | None = None
    # The message a text or a file quotes.
    reply_to: str | None = None
    # The send journal's revision of its `accepted` record when queued: the actor's claim
    # tries it first and saves a read (a moved record is simply read).
    journal_revision: int | None = None


class ExpiryCheck(msgspec.Struct):
    """Fired by a JetStream message schedule at a send's `expires_at`."""

    session_id: str
    id: str
