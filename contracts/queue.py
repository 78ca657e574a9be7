"""Outbound queue: per-session send policy, queue introspection and dead letters.

Additions to contract v1 (new subjects only):

    <prefix>.session.<sid>.policy   PolicyRequest         -> SendPolicy (the one in force)
    <prefix>.queue.<sid>.stats      {}                    -> QueueStats
    <prefix>.dlq.list               DlqListRequest        -> DlqList
    <prefix>.dlq.retry              DlqSelect             -> DlqRetried
    <prefix>.dlq.purge              DlqSelect             -> DlqPurged
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from contracts.envelope import ErrorBody
from contracts.internal import QueuedSend
from contracts.types import SessionId


class PacingPolicy(msgspec.Struct, forbid_unknown_fields=True):
    """How fast one session may send (see services/sending/policy.py)."""

    enabled: bool = True
    per_minute: Annotated[float, msgspec.Meta(gt=0, le=6000)] = 10.0
    burst: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    min_gap: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 2.0
    jitter: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 1.0
    daily_cap: Annotated[int, msgspec.Meta(ge=1)] | None = None
    typing_seconds: Annotated[float, msgspec.Meta(ge=0, le=30)] = 0.0

    def __post_init__(self) -> None:
        if self.jitter > self.min_gap:
            raise ValueError("jitter must not exceed min_gap")


class SendPolicy(msgspec.Struct, forbid_unknown_fields=True):
    """A session's send policy; parts left out keep the deployment's defaults."""

    pacing: PacingPolicy | None = None
    # An earlier attempt may have reached WhatsApp: send again (risking a duplicate) instead
    # of reporting `failed` with code `ambiguous`.
    resend_ambiguous: bool = False


class PolicyRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Without `policy`: read the session's policy; with it: replace it (`{}` = defaults)."""

    policy: SendPolicy | None = None


class QueueStats(msgspec.Struct, omit_defaults=True):
    session_id: str
    depth: int  # accepted sends waiting to be sent, in order
    scheduled: int  # sends waiting for their `send_at`
    oldest_age_s: float | None = None  # how long the next send has been waiting


class DeadLetter(msgspec.Struct, kw_only=True):
    """A send that failed for good, kept (stream `<PREFIX>_DLQ`) for an operator to look at."""

    item: QueuedSend
    error: ErrorBody
    attempts: int
    failed_at: datetime
    node: str | None = None


class DlqListRequest(msgspec.Struct):
    session_id: SessionId | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class DlqEntry(msgspec.Struct, kw_only=True):
    seq: int
    session_id: str
    id: str
    to: str
    error: ErrorBody
    attempts: int
    failed_at: datetime


class DlqList(msgspec.Struct):
    entries: list[DlqEntry]


MAX_SEQ = 2**63 - 1


class DlqSelect(msgspec.Struct, forbid_unknown_fields=True):
    """Which dead letters: one by `seq`, every one of a session, or `all`."""

    # A stream sequence is an unsigned 64-bit number; JetStream refuses (and nats-py fails
    # on) anything above the signed range.
    seq: Annotated[int, msgspec.Meta(ge=1, le=MAX_SEQ)] | None = None
    session_id: SessionId | None = None
    all: bool = False

    def __post_init__(self) -> None:
        if (self.seq is not None) + (self.session_id is not None) + self.all != 1:
            raise ValueError("give exactly one of seq, session_id or all")


class DlqRetried(msgspec.Struct):
    # A retried send goes out under a new id (`<id>~r<seq>`): the original keeps its one
    # terminal state, the retry gets its own lifecycle.
    retried: list[dict[str, str]]


class DlqPurged(msgspec.Struct):
    purged: int
