"""What wactl prints: tables, one-line events, session details and QR codes.

Only formatting lives here: every function takes decoded contract structs and returns text.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import msgspec
import segno

from contracts.alerts import AlertEvent
from contracts.events import Event, MessageEvent, StatusEvent
from contracts.history import OutboundRecord, StatusRecord
from contracts.messages import MediaInfo
from contracts.queue import DlqEntry, QueueStats, SendPolicy
from contracts.sessions import Session
from contracts.sim import SimStats
from contracts.webhooks import Webhook
from services.common.media import size_text

# -------------------------------------------------------------------------- basics


def when(at: datetime | None) -> str:
    """A time as RFC 3339 UTC with milliseconds: `2025-01-31T12:00:00.123Z`."""
    if at is None:
        return "-"
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def to_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def clean(value: Any) -> str:
    """Text safe for a terminal line: control and format characters (newlines, escape
    sequences a contact could send) are shown escaped, never interpreted."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def short(text: str | None, width: int = 60) -> str | None:
    return text if text is None or len(text) <= width else text[: width - 1] + "\u2026"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces; `None` shows as `-`."""
    cells = [list(headers)] + [["-" if v is None else clean(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def aligned(pairs: Sequence[tuple[str, Any]]) -> str:
    """One `key  value` line per pair, the values in one column."""
    width = max(len(key) for key, _ in pairs)
    return "\n".join(f"{key:<{width}}  {clean(value)}" for key, value in pairs)


def fields(pairs: Iterable[tuple[str, Any]]) -> str:
    """`key=value` pairs, leaving out empty values; values with spaces or quotes are quoted."""
    out = []
    for key, value in pairs:
        if value is None or value == "":
            continue
        text = clean(value)
        if " " in text or '"' in text:
            text = '"' + text.replace('"', '\\"') + '"'
        out.append(f"{key}={text}")
    return " ".join(out)


def error_text(error: Any) -> str | None:
    return None if error is None else f"{error.code}: {error.message}"


# ------------------------------------------------------------------------ sessions


def session_detail(s: Session) -> str:
    rows = [
        ("session", s.session_id),
        ("label", s.label),
        ("state", s.state),
        ("since", when(s.since)),
        ("reason", s.reason),
        ("jid", s.jid),
        ("node", s.node),
        ("created", when(s.created_at)),
    ]
    return aligned([(k, v) for k, v in rows if v])


def session_table(sessions: Sequence[Session]) -> str:
    if not sessions:
        return "no sessions"
    return table(
        ["SESSION", "STATE", "SINCE", "NODE", "JID", "LABEL", "REASON"],
        [(s.session_id, s.state, when(s.since), s.node, s.jid, s.label or None, s.reason) for s in sessions],
    )


# -------------------------------------------------------------------------- events


def event_fields(event: Event) -> str:
    """The key fields of an event (QR codes and pairing codes are secrets: only flagged)."""
    if isinstance(event, AlertEvent):
        return fields(
            [("kind", event.kind), ("severity", event.severity), ("send", event.send_id), ("message", event.message)]
        )
    if isinstance(event, StatusEvent):
        return fields(
            [
                ("state", event.state),
                ("reason", event.reason),
                ("jid", event.jid),
                ("node", event.node),
                ("qr", "yes" if event.qr else None),
                ("pair_code", "yes" if event.pair_code else None),
            ]
        )
    if isinstance(event, MessageEvent):
        return fields(
            [
                ("from", "me" if event.from_me else event.sender),
                ("chat", event.chat),
                ("id", event.message_id),
                ("type", event.type if event.type != "text" else None),
                ("reply_to", event.quoted.message_id if event.quoted else None),
                ("mentions", ",".join(event.mentions)),
                *message_parts(event),
                ("text", event.text),
            ]
        )
    return fields(
        [
            ("id", event.id),
            ("state", event.state),
            ("message_id", event.message_id),
            ("error", error_text(event.error)),
        ]
    )


def message_parts(m: MessageEvent) -> list[tuple[str, Any]]:
    """What a message carries besides its text, as `key=value` pairs: a file as its id, type
    and size (or why it is missing), a reaction, edit or revoke with its target, ..."""
    if m.media is not None:
        return media_parts(m.media)
    if m.reaction is not None:
        return [("target", m.reaction.target_id), ("emoji", m.reaction.emoji or "(removed)")]
    if m.edit is not None:
        return [("target", m.edit.target_id), ("new_text", m.edit.text)]
    if m.revoke is not None:
        return [("target", m.revoke.target_id)]
    if m.location is not None:
        place = m.location
        return [("lat", place.lat), ("lon", place.lon), ("name", place.name), ("address", place.address)]
    if m.contact is not None:
        return [("contact", m.contact.name), ("vcard", f"{len(m.contact.vcard.splitlines())} lines")]
    if m.poll is not None:
        return [("poll", m.poll.name), ("options", " / ".join(m.poll.options))]
    return []


def media_parts(media: MediaInfo) -> list[tuple[str, Any]]:
    size = None if media.size is None else size_text(media.size)
    if media.error is not None:
        return [("media_error", error_text(media.error)), ("mime", media.mime), ("size", size)]
    return [
        ("media_id", media.media_id),
        ("mime", media.mime),
        ("size", size),
        ("filename", media.filename),
        ("seconds", media.seconds),
        ("sha256", media.sha256),
    ]


def message_summary(m: MessageEvent) -> str:
    """A message in a few words, for a table cell: a file as kind, size and id, a reaction
    as its emoji and target, ..., then the text."""
    what = "" if m.type == "text" else f"<{m.type}>"
    if m.media is not None:
        if m.media.error is not None:
            what = f"<{m.type}: {m.media.error.code}>"
        else:
            size = "" if m.media.size is None else f" {size_text(m.media.size)}"
            what = f"<{m.type}{size} {m.media.media_id}>"
    elif m.reaction is not None:
        what = f"<reaction {m.reaction.emoji or 'removed'} on {m.reaction.target_id}>"
    elif m.edit is not None:
        what = f"<edit of {m.edit.target_id}> {m.edit.text}"
    elif m.revoke is not None:
        what = f"<revoke of {m.revoke.target_id}>"
    elif m.location is not None:
        place = m.location
        what = " ".join(x for x in (f"<location {place.lat},{place.lon}>", place.name, place.address) if x)
    elif m.contact is not None:
        what = f"<contact {m.contact.name}>"
    elif m.poll is not None:
        what = f"<poll {m.poll.name}: {' / '.join(m.poll.options)}>"
    quote = f"(reply to {m.quoted.message_id}) " if m.quoted is not None else ""
    return short(quote + " ".join(x for x in (what, m.text) if x), 80) or ""


def event_line(kind: str, event: Event) -> str:
    return f"{when(event.at)}  {event.session_id}  {kind:<8}  {event_fields(event)}"


# ------------------------------------------------------------------------- history


def message_table(messages: Sequence[MessageEvent]) -> str:
    if not messages:
        return "no messages"
    return table(
        ["TIME", "CHAT", "FROM", "MESSAGE ID", "MESSAGE"],
        [(when(m.timestamp), m.chat, "me" if m.from_me else m.sender, m.message_id, message_summary(m)) for m in messages],
    )


def status_table(statuses: Sequence[StatusRecord]) -> str:
    if not statuses:
        return "no status changes"
    return table(
        ["TIME", "STATE", "REASON", "NODE", "JID"],
        [(when(s.at), s.state, s.reason, s.node, s.jid) for s in statuses],
    )


def outbound_table(sends: Sequence[OutboundRecord]) -> str:
    if not sends:
        return "no sends"
    return table(
        ["CREATED", "ID", "TO", "STATE", "MESSAGE ID", "ERROR"],
        [(when(r.created_at), r.id, r.to, r.state, r.message_id, error_text(r.error)) for r in sends],
    )


def outbound_detail(r: OutboundRecord) -> str:
    head = [
        ("id", r.id),
        ("session", r.session_id),
        ("to", r.to),
        ("state", r.state),
        ("message", r.message_id),
        ("error", error_text(r.error)),
        ("created", when(r.created_at)),
        ("send at", when(r.send_at) if r.send_at else None),
        ("expires", when(r.expires_at) if r.expires_at else None),
        ("length", r.text_length),
    ]
    lines = [aligned([(k, v) for k, v in head if v is not None])]
    if r.history:
        lines += [
            "",
            table(
                ["TIME", "STATE", "MESSAGE ID", "ERROR"],
                [(when(s.at), s.state, s.message_id, error_text(s.error)) for s in r.history],
            ),
        ]
    return "\n".join(lines)


def policy_detail(p: SendPolicy) -> str:
    pacing = p.pacing
    ambiguous = ("resend ambiguous", "yes" if p.resend_ambiguous else "no")
    if pacing is None:
        return aligned([("pacing", "deployment defaults"), ambiguous])
    if not pacing.enabled:
        return aligned([("pacing", "off"), ambiguous])
    return aligned(
        [
            ("pacing", f"{pacing.per_minute:g}/min, burst {pacing.burst}"),
            ("gap", f"{pacing.min_gap:g} s ± {pacing.jitter:g} s"),
            ("daily cap", pacing.daily_cap if pacing.daily_cap is not None else "none"),
            ("typing", f"{pacing.typing_seconds:g} s" if pacing.typing_seconds else "off"),
            ambiguous,
        ]
    )


def queue_stats(q: QueueStats) -> str:
    age = "-" if q.oldest_age_s is None else f"{q.oldest_age_s:.1f} s"
    return aligned([("queued", q.depth), ("scheduled", q.scheduled), ("oldest", age)])


def dlq_table(entries: Sequence[DlqEntry]) -> str:
    if not entries:
        return "no dead letters"
    return table(
        ["SEQ", "FAILED", "SESSION", "ID", "TO", "ATTEMPTS", "ERROR"],
        [
            (e.seq, when(e.failed_at), e.session_id, e.id, e.to, e.attempts, error_text(e.error))
            for e in entries
        ],
    )


def dlq_retried(retried: Sequence[dict[str, str]]) -> str:
    if not retried:
        return "nothing to retry"
    return table(["SEQ", "ID", "NEW ID"], [(r["seq"], r["id"], r["new_id"]) for r in retried])


def more(next_cursor: str | None) -> str | None:
    return None if next_cursor is None else f"more: --before {next_cursor}"


# ----------------------------------------------------------------------- simulator


def sim_stats(stats: SimStats) -> str:
    rows: list[Sequence[Any]] = [
        (sid, s.messages, s.duplicates, s.overlaps, s.connects, s.inbound)
        for sid, s in sorted(stats.sessions.items())
    ]
    t = stats.totals
    rows.append((f"total ({t.sessions})", t.messages, t.duplicates, t.overlaps, t.connects, t.inbound))
    return table(["SESSION", "MESSAGES", "DUPLICATES", "OVERLAPS", "CONNECTS", "INBOUND"], rows)


# ---------------------------------------------------------------------------- QR

# Upper half block: its foreground paints the top module, its background the bottom one.
_HALF = "\u2580"
# Pure black and white of the 256-colour cube: unlike the 16 basic colours, terminal themes
# do not remap them, so the code has the same contrast on dark and light terminals.
_ANSI = {True: 16, False: 231}


def qr(code: str, ansi: bool) -> str:
    """A QR code for a terminal, two modules per character cell (square modules).

    `ansi`: explicit black-on-white colours (scans on dark and light terminals alike).
    Otherwise plain half-block text in segno's convention (light modules drawn, dark ones
    blank), which scans on dark terminals, the common case for a copied or logged output.
    """
    symbol = segno.make(code, micro=False)
    if not ansi:
        out = io.StringIO()
        symbol.terminal(out=out, compact=True)
        return out.getvalue().rstrip("\n")
    rows = [[bool(bit) for bit in row] for row in symbol.matrix_iter(scale=1, border=4)]
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    lines = []
    for top, bottom in zip(rows[::2], rows[1::2], strict=True):
        parts, colours = [], None
        for dark_top, dark_bottom in zip(top, bottom, strict=True):
            if (dark_top, dark_bottom) != colours:
                colours = (dark_top, dark_bottom)
                parts.append(f"\x1b[38;5;{_ANSI[dark_top]};48;5;{_ANSI[dark_bottom]}m")
            parts.append(_HALF)
        lines.append("".join(parts) + "\x1b[0m")
    return "\n".join(lines)


class Screen:
    """Prints lines; on a terminal, a QR code and what follows it can be replaced in place."""

    def __init__(self, out: TextIO | None = None, interactive: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.interactive = self.out.isatty() if interactive is None else interactive
        self._below_qr: int | None = None  # lines printed since the QR code started

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()
        if self._below_qr is not None:
            self._below_qr += text.count("\n") + 1

    def clear_qr(self) -> None:
        """Erase the QR code shown last and everything printed after it (terminals only)."""
        if self.interactive and self._below_qr:
            self.out.write(f"\x1b[{self._below_qr}F\x1b[J")
            self.out.flush()
        self._below_qr = None

    def show_qr(self, code: str, caption: str) -> None:
        self.clear_qr()
        self._below_qr = 0
        self.line(qr(code, ansi=self.interactive))
        self.line(caption)


# ------------------------------------------------------------------------ webhooks


def webhook_detail(w: Webhook) -> str:
    rows = [
        ("webhook", w.webhook_id),
        ("url", w.url),
        ("state", w.state),
        ("sessions", ", ".join(w.sessions) or "all"),
        ("kinds", ", ".join(w.kinds) or "all"),
        ("description", w.description),
        ("backlog", w.backlog),
        ("failing since", when(w.failing_since) if w.failing_since else None),
        ("last error", w.last_error),
        ("paused", f"{when(w.paused_at)}: {w.paused_reason}" if w.paused_at else None),
        ("created", when(w.created_at)),
        ("secret", w.secret),  # only when just made: shown once
    ]
    return aligned([(k, v) for k, v in rows if v is not None and v != ""])


def webhook_table(webhooks: Sequence[Webhook]) -> str:
    if not webhooks:
        return "no webhook subscriptions"
    return table(
        ["WEBHOOK", "STATE", "BACKLOG", "FAILING SINCE", "URL", "SESSIONS", "KINDS"],
        [
            (w.webhook_id, w.state, w.backlog, when(w.failing_since) if w.failing_since else None, w.url,
             ", ".join(w.sessions) or "all", ", ".join(w.kinds) or "all")
            for w in webhooks
        ],
    )  # fmt: skip
