"""Metrics of a session-actor node: its sessions, its lease and claims, and what its actors
do (connections, pacing, inbound messages, credentials). Sends are counted by the shared
ledger (services/sending/metrics.py)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import get_args

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from contracts.types import SessionState

_STATES = get_args(SessionState)
_QUICK = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

STATE_CHANGES = Counter(
    "wa_session_state_changes", "Status changes reported by this node's actors, by new state and kind of reason",
    ["state", "reason"],
)  # fmt: skip
RECONNECTS = Counter("wa_reconnects", "Connection attempts after a drop or a ban")
LEASE_RENEWALS = Counter("wa_lease_renewals", "Renewals of this node's lease: ok, failed, or lost", ["outcome"])
LEASE_RENEWAL_SECONDS = Histogram("wa_lease_renewal_seconds", "Round trip of one lease renewal", buckets=_QUICK)
LOOP_LAG = Gauge("wa_event_loop_lag_seconds", "How late the lease renewal loop last woke up")
CLAIMS = Counter("wa_claims", "Claims of sessions by this node: won, or lost to another node", ["outcome"])
TAKEOVERS = Counter("wa_takeovers", "Sessions claimed from a node that died without handing them over")
RELEASES = Counter("wa_releases", "Sessions this node handed over: shutdown or rebalancing", ["reason"])
PACING_DELAY = Histogram(
    "wa_pacing_delay_seconds",
    "Waits imposed by pacing before a send (the daily cap waits until midnight)",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 86400),
)
INBOUND = Counter("wa_inbound_messages", "Inbound messages, by type", ["type"])
VAULT_SAVES = Counter("wa_vault_saves", "Credential saves: saved, or refused (a newer owner)", ["outcome"])
VAULT_SAVE_SECONDS = Histogram(
    "wa_vault_save_seconds", "Snapshot, seal and fenced write of a session's credentials", buckets=_QUICK
)
VAULT_RESTORES = Counter(
    "wa_vault_restores",
    "Credential restores: restored, fallback (an older version), empty (never paired), unusable",
    ["outcome"],
)
VAULT_RESTORE_SECONDS = Histogram("wa_vault_restore_seconds", "Read and unseal of a session's credentials", buckets=_QUICK)
# Outcomes start at 0, so alert rules see their first increase.
for _outcome in ("restored", "fallback", "empty", "unusable"):
    VAULT_RESTORES.labels(_outcome)
STORE_BYTES = Histogram(
    "wa_vault_store_bytes",
    "Size of the credential stores saved (before compression)",
    buckets=(64e3, 128e3, 256e3, 512e3, 1e6, 4e6, 16e6, 64e6),
)


class SessionStates(Collector):
    """`wa_node_sessions{state}`: the sessions this node's actors run, by state, read at
    scrape time (from the metrics thread: `states` must only read)."""

    def __init__(self, states: Callable[[], Iterable[str]]) -> None:
        self._states = states

    def collect(self) -> Iterator[GaugeMetricFamily]:
        tally = Tally(self._states())
        family = GaugeMetricFamily("wa_node_sessions", "Sessions this node runs, by state", labels=["state"])
        for state in _STATES:
            family.add_metric([state], tally[state])
        yield family
