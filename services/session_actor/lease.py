"""Lease rules of a node, decided from local monotonic time only (no clock comparisons).

A node lease is a key in the NATS KV bucket that the *server* expires `ttl` seconds after
the last renewal it stored. The node only knows when it *sent* each renewal; a renewal the
server accepted was stored after it was sent, so the server cannot expire the lease before
`sent_at + ttl` on the node's own clock. The node stops acting as owner at
`sent_at + self_stop`, well before that moment: clock rates may differ slightly, clock
values never matter.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LeaseClock:
    ttl: float
    self_stop: float
    renewed_at: float | None = None  # monotonic send time of the last accepted renewal

    def renewed(self, sent_at: float) -> None:
        if self.renewed_at is None or sent_at > self.renewed_at:
            self.renewed_at = sent_at

    def lost(self) -> None:
        self.renewed_at = None

    def valid(self, now: float) -> bool:
        """May the node act as owner right now?"""
        return self.renewed_at is not None and now - self.renewed_at < self.self_stop

    def remaining(self, now: float) -> float:
        return 0.0 if self.renewed_at is None else max(0.0, self.self_stop - (now - self.renewed_at))

    def surely_expired(self, now: float) -> bool:
        """Has the server certainly dropped the lease (so the node must take a new identity)?"""
        return self.renewed_at is None or now - self.renewed_at >= self.ttl

