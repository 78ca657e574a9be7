"""The health monitor's live view of the cluster, as plain code: no I/O, no clock of its own.

The monitor feeds it the leases bucket (a ClusterView: node leases and session owners), node
heartbeats and status events, with monotonic times. From them it computes the facts the
endpoints render (and later metrics and alerts): per-node health, nodes silent for longer
than a few heartbeats, sessions whose owner is gone, and each session's health row.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from contracts.events import StatusEvent
from contracts.internal import NodeHeartbeat, sessions_running
from contracts.types import LIVE_STATES
from services.common.cluster import ClusterView
from services.common.sessions import session_view

# A node is silent once this many heartbeat intervals pass without one of its heartbeats.
SILENT_AFTER_BEATS = 3


class NodeHealth(msgspec.Struct, kw_only=True):
    node_id: str
    host: str
    capacity: int
    started_at: datetime
    # Sessions whose `own.<sid>` entry names the node, and actors its last heartbeat listed.
    sessions_owned: int
    sessions_running: int | None
    last_heartbeat_age_s: float | None
    loop_lag_ms: float | None
    # The node's own verdict on its lease (may it act as owner?), from its last heartbeat.
    lease_ok: bool | None
    silent: bool
    # Why the node takes no sessions (its vault keys cannot open the stored credentials).
    unfit: str | None = None


class LastStatus(msgspec.Struct, kw_only=True):
    """The latest status event seen for a session."""

    event_id: str
    at: datetime
    state: str
    reason: str | None
    node: str | None


class SessionHealth(msgspec.Struct, kw_only=True):
    session_id: str
    label: str
    # As users see it (services.common.sessions.session_view): a live state claimed by an
    # owner that is gone reads as `disconnected` (owner_lost) even before it is written.
    state: str
    reason: str | None
    node: str | None
    since: datetime
    # The node `own.<sid>` names, and whether that node holds a live lease.
    owner: str | None
    owner_alive: bool
    last_status: LastStatus | None


class Orphan(NamedTuple):
    """A session whose `own.<sid>` entry names a node without a live lease."""

    session_id: str
    node: str
    revision: int  # of the entry: the dead owner's claim, hence its fencing token


@dataclass
class _Heard:
    beat: NodeHeartbeat
    received: float  # monotonic; the node's own `at` is on its clock, not ours


class HealthView:
    def __init__(self, cluster: ClusterView, heartbeat_interval: float) -> None:
        self.cluster = cluster
        self.silent_after = SILENT_AFTER_BEATS * heartbeat_interval
        self.last_status: dict[str, StatusEvent] = {}
        self._heard: dict[str, _Heard] = {}
        self._up_since: dict[str, float] = {}
        # False while JetStream does not answer: the cluster view is stale, and no session
        # can be connected (no node can renew its lease).
        self.jetstream_current = True

    # -- inputs ---------------------------------------------------------------------------
    def cluster_changed(self, kind: str, key: str, now: float) -> None:
        """A ClusterWatcher listener event (called after the ClusterView changed)."""
        if kind == "node_up":
            self._up_since[key] = now
        elif kind == "node_down":
            self._up_since.pop(key, None)
            self._heard.pop(key, None)
        elif kind == "session_gone":
            self.last_status.pop(key, None)

    def heartbeat(self, beat: NodeHeartbeat, now: float) -> None:
        self._heard[beat.node_id] = _Heard(beat, now)

    def status(self, event: StatusEvent) -> None:
        """Events arrive in stream order, so the latest one per session wins."""
        if event.state == "deleted":
            self.last_status.pop(event.session_id, None)
        else:
            self.last_status[event.session_id] = event

    def prune(self, now: float) -> None:
        """Forget heartbeats of nodes without a lease (late beats of a node already gone)."""
        gone = [
            node_id
            for node_id, heard in self._heard.items()
            if node_id not in self.cluster.nodes and now - heard.received > self.silent_after
        ]
        for node_id in gone:
            del self._heard[node_id]

    # -- facts ----------------------------------------------------------------------------
    def nodes(self, now: float) -> list[NodeHealth]:
        """Every node holding a live lease."""
        owned = Counter(entry.owner.node for entry in self.cluster.sessions.values())
        rows = []
        for node_id, lease in sorted(self.cluster.nodes.items()):
            heard = self._heard.get(node_id)
            rows.append(
                NodeHealth(
                    node_id=node_id,
                    host=lease.host,
                    capacity=lease.capacity,
                    started_at=lease.started_at,
                    sessions_owned=owned[node_id],
                    sessions_running=sessions_running(heard.beat) if heard else None,
                    last_heartbeat_age_s=round(now - heard.received, 3) if heard else None,
                    loop_lag_ms=heard.beat.loop_lag_ms if heard else None,
                    lease_ok=heard.beat.lease_ok if heard else None,
                    silent=self._is_silent(node_id, now),
                    unfit=lease.unfit,
                )
            )
        return rows

    def silent_nodes(self, now: float) -> list[str]:
        """Nodes with a live lease but no heartbeat for SILENT_AFTER_BEATS intervals."""
        return sorted(n for n in self.cluster.nodes if self._is_silent(n, now))

    def _is_silent(self, node_id: str, now: float) -> bool:
        heard = self._heard.get(node_id)
        # A node never heard from is measured from when its lease appeared.
        last = heard.received if heard else self._up_since.get(node_id, now)
        return now - last > self.silent_after

    def orphaned_sessions(self) -> list[Orphan]:
        """Sessions whose owner is gone: their entry names a node without a live lease."""
        return [
            Orphan(sid, entry.owner.node, entry.revision)
            for sid, entry in self.cluster.sessions.items()
            if entry.owner.node is not None and entry.owner.node not in self.cluster.nodes
        ]

    def states(self) -> Counter[str]:
        """Every session by state, from the status events (cheap: no database read).

        A session without a status event never left `created`; a live state whose owner
        is gone counts as `disconnected`, as `session` reports it.
        """
        tally: Counter[str] = Counter()
        for sid in self.cluster.sessions:
            event = self.last_status.get(sid)
            state = event.state if event is not None else "created"
            if state in LIVE_STATES and (event is None or self.cluster.owner_of(sid) != event.node):
                state = "disconnected"
            tally[state] += 1
        return tally

    def session(self, doc: dict[str, Any]) -> SessionHealth:
        """The health row of a session document from MongoDB (`sessions`)."""
        seen = session_view(doc, self.cluster, self.jetstream_current)
        entry = self.cluster.sessions.get(seen.session_id)
        owner = entry.owner.node if entry else None
        event = self.last_status.get(seen.session_id)
        return SessionHealth(
            session_id=seen.session_id,
            label=seen.label,
            state=seen.state,
            reason=seen.reason,
            node=seen.node,
            since=seen.since,
            owner=owner,
            owner_alive=owner is not None and owner in self.cluster.nodes,
            last_status=None
            if event is None
            else LastStatus(
                event_id=event.event_id, at=event.at, state=event.state, reason=event.reason, node=event.node
            ),
        )

    def sessions(
        self, docs: list[dict[str, Any]], state: str | None = None, node: str | None = None
    ) -> list[SessionHealth]:
        rows = (self.session(doc) for doc in docs)
        return [r for r in rows if (state is None or r.state == state) and (node is None or r.node == node)]
