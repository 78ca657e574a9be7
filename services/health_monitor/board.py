"""What the dashboard shows, as plain code: the session rows with their queue depth, the
filter an operator typed, counts by state, which actions a row offers, and how ages and
QR codes are drawn. The pages (dashboard.py) only fetch and render."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import get_args

import segno

from contracts.types import SessionState
from services.health_monitor.view import SessionHealth

STATES: tuple[str, ...] = tuple(state for state in get_args(SessionState) if state != "deleted")
# Rows rendered at most; the rest are counted ("narrow the filter").
MAX_ROWS = 500

# The actions of a session in each state, through the public contract (wa.session.<sid>.*).
# The session actor decides; a refused action (e.g. reconnecting a banned session) comes back
# as the contract's error and is shown as such.
_PAIRABLE = frozenset({"created", "logged_out", "stopped"})
_UNLINKED = frozenset({"created", "logged_out"})


@dataclass(frozen=True)
class Filters:
    state: str = ""
    node: str = ""
    text: str = ""

    @classmethod
    def of(cls, state: str | None, node: str | None, text: str | None) -> Filters:
        """From the page's query; a state that does not exist filters nothing."""
        return cls(
            state=state if state in STATES else "",
            node=(node or "").strip(),
            text=(text or "").strip().lower(),
        )

    def matches(self, row: Row) -> bool:
        s = row.session
        return (
            (not self.state or s.state == self.state)
            and (not self.node or s.node == self.node)
            and (not self.text or self.text in s.session_id.lower() or self.text in s.label.lower())
        )

    def query(self) -> dict[str, str]:
        """The filter as query parameters (empty ones left out)."""
        return {k: v for k, v in (("state", self.state), ("node", self.node), ("q", self.text)) if v}


@dataclass(frozen=True)
class Row:
    session: SessionHealth
    queue_depth: int
    actions: tuple[str, ...]


def actions_for(state: str) -> tuple[str, ...]:
    actions = ["pair"] if state in _PAIRABLE else []
    if state not in _UNLINKED and state != "pairing":
        actions.append("reconnect")
    if state not in _UNLINKED:
        actions.append("logout")
    return (*actions, "delete")


def rows(sessions: Iterable[SessionHealth], depths: Mapping[str, int]) -> list[Row]:
    return [Row(s, depths.get(s.session_id, 0), actions_for(s.state)) for s in sessions]


@dataclass(frozen=True)
class Selection:
    shown: list[Row]
    matching: int  # rows the filter matches (shown are the first MAX_ROWS of them)
    by_state: dict[str, int]  # every session, by state (the filter does not apply)
    nodes: list[str]  # nodes named by any row, for the node filter


def select(all_rows: list[Row], filters: Filters, limit: int = MAX_ROWS) -> Selection:
    matching = [r for r in sorted(all_rows, key=lambda r: r.session.session_id) if filters.matches(r)]
    tally = Counter(r.session.state for r in all_rows)
    return Selection(
        shown=matching[:limit],
        matching=len(matching),
        by_state={state: tally[state] for state in STATES},
        nodes=sorted({r.session.node for r in all_rows if r.session.node}),
    )


def age(seconds: float | None) -> str:
    """A duration as people read it on a dashboard: 4 s, 12 min, 3 h, 2 d."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def qr_svg(code: str) -> str:
    """The pairing QR code as inline SVG (drawn here: the code never leaves this server)."""
    return segno.make_qr(code).svg_inline(scale=4, border=2, dark="#111", light="#fff")
