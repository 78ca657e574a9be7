"""The cluster as the health monitor sees it, as metrics: sessions by state (all of them,
owner_lost included), nodes alive and silent, and owner_lost reports.

Read at scrape time from the view, on the event loop (the /metrics endpoint is async).
They describe the whole cluster, so replicas of the monitor report the same numbers:
aggregate them with `max`, not `sum`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import get_args

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from contracts.types import SessionState
from services.health_monitor.view import HealthView

OWNER_LOST = Counter("wa_owner_lost", "Sessions this monitor reported owner_lost (their node died)")

_STATES = [state for state in get_args(SessionState) if state != "deleted"]


class ClusterMetrics(Collector):
    def __init__(self, view: HealthView) -> None:
        self._view = view

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.monotonic()
        tally = self._view.states()
        sessions = GaugeMetricFamily("wa_sessions", "Sessions by state, cluster-wide", labels=["state"])
        for state in _STATES:
            sessions.add_metric([state], tally[state])
        yield sessions
        nodes = self._view.nodes(now)
        yield GaugeMetricFamily("wa_nodes_alive", "Session-actor nodes holding a live lease", value=len(nodes))
        yield GaugeMetricFamily(
            "wa_nodes_silent", "Nodes with a live lease but no recent heartbeat", value=sum(n.silent for n in nodes)
        )
        owned = GaugeMetricFamily("wa_node_owned_sessions", "Sessions each live node owns", labels=["node"])
        for node in nodes:
            owned.add_metric([node.node_id], node.sessions_owned)
        yield owned
