"""Which events a subscription gets: its filter (sessions, kinds) as the subject filters of
its consumer, so the server selects them. Plain code, no I/O."""

from __future__ import annotations

from contracts.subjects import Subjects


def filter_subjects(subjects: Subjects, sessions: list[str], kinds: list[str]) -> list[str]:
    """Subject filters for the events of `sessions` (empty: all) of `kinds` (empty: all,
    kinds added later included). They never overlap, as JetStream requires."""
    sids = sorted(set(sessions))
    wanted = sorted(set(kinds))
    if not sids and not wanted:
        return [subjects.events_all]
    return [subjects.event(sid, kind) for sid in sids or ["*"] for kind in wanted or [">"]]
