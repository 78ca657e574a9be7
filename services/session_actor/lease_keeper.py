"""This node's lease `node.<id>` in the leases bucket: registered, renewed every
`lease_renew_interval`, and taken again under a new identity once lost.

When it cannot renew for `lease_self_stop` the node must stop acting at once, before the
server can expire the lease and let another node take its sessions over (lease.py has the
rule; the holder is told). Once the lease is surely gone, the old identity may already be
dead to the cluster: every actor stops, and the node rejoins as a new node.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
from typing import Protocol

import structlog
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import APIError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from contracts.internal import NodeLease
from contracts.types import utcnow
from services.common.bus import encode
from services.common.cluster import NODE
from services.common.config import Settings
from services.session_actor import metrics
from services.session_actor.lease import LeaseClock

log = structlog.get_logger(__name__)


def node_id_for(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", name)[:40] or "node"
    return f"{safe}-{secrets.token_hex(3)}"


class LeaseHolder(Protocol):
    """The node, as its lease keeper tells it what happened."""

    def lease_invalid(self) -> None:
        """Not renewed in time: stop every actor now."""

    async def lease_lost(self) -> None:
        """The lease is gone for good: return once every actor has stopped."""

    def rejoined(self, previous: str) -> None:
        """Registered again under a new identity (`node_id`)."""


class LeaseKeeper:
    def __init__(self, settings: Settings, kv: KeyValue, js: JetStreamContext) -> None:
        self._settings = settings
        self._kv = kv
        self._js = js
        self._subject_prefix = f"$KV.{settings.subjects.leases_bucket}.{NODE}"
        self.clock = LeaseClock(settings.lease_ttl, settings.lease_self_stop)
        self.node_id = node_id_for(settings.node_name)
        self.leaving = False  # announced in the lease: the others stop counting this node
        self.unfit: str | None = None  # announced too: why this node takes no sessions
        self.loop_lag_ms = 0.0  # how late the last renewal round woke up
        self._revision = 0
        self._renewing = asyncio.Lock()

    def may_act(self) -> bool:
        return self.clock.valid(time.monotonic())

    def _value(self) -> bytes:
        return encode(
            NodeLease(
                node_id=self.node_id,
                host=self._settings.node_name,
                pid=os.getpid(),
                capacity=self._settings.node_capacity,
                started_at=utcnow(),
                leaving=self.leaving,
                unfit=self.unfit,
            )
        )

    async def register(self) -> None:
        sent = time.monotonic()
        self._revision = await self._kv.create(NODE + self.node_id, self._value(), msg_ttl=self._settings.lease_ttl)
        self.clock.renewed(sent)

    async def renew(self) -> None:
        async with self._renewing:  # the loop and a graceful stop must not race (CAS)
            sent = time.monotonic()
            ack = await self._js.publish(
                self._subject_prefix + self.node_id,
                self._value(),
                headers={Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(self._revision)},
                msg_ttl=self._settings.lease_ttl,
                timeout=self._settings.lease_self_stop,
            )
            self._revision = ack.seq
            self.clock.renewed(sent)
            metrics.LEASE_RENEWAL_SECONDS.observe(time.monotonic() - sent)

    async def drop(self) -> None:
        """The node has stopped: its lease goes now rather than when it expires."""
        await self._kv.delete(NODE + self.node_id)

    async def keep(self, holder: LeaseHolder) -> None:
        """Renew until cancelled, telling `holder` when the lease is no longer valid or lost."""
        interval = self._settings.lease_renew_interval
        while True:
            tick = time.monotonic()
            await asyncio.sleep(interval)
            self.loop_lag_ms = max(0.0, (time.monotonic() - tick - interval) * 1000)
            metrics.LOOP_LAG.set(self.loop_lag_ms / 1000)
            try:
                await self.renew()
                metrics.LEASE_RENEWALS.labels("ok").inc()
            except (KeyWrongLastSequenceError, APIError) as exc:
                # The server no longer has our lease: another node may own our sessions now.
                metrics.LEASE_RENEWALS.labels("lost").inc()
                log.error("lease lost", node=self.node_id, error=str(exc))
                await self._rejoin(holder)
                continue
            except Exception as exc:
                metrics.LEASE_RENEWALS.labels("failed").inc()
                log.warning("lease renewal failed", node=self.node_id, error=str(exc))
            if not self.clock.valid(time.monotonic()):
                holder.lease_invalid()
            if self.clock.surely_expired(time.monotonic()):
                await self._rejoin(holder)

    async def _rejoin(self, holder: LeaseHolder) -> None:
        """Start over under a new identity: the old one may already be dead to the cluster."""
        await holder.lease_lost()
        self.clock.lost()
        previous = self.node_id
        self.node_id = node_id_for(self._settings.node_name)
        while True:
            try:
                await self.register()
                break
            except Exception as exc:
                log.warning("cannot register yet", node=self.node_id, error=str(exc))
                await asyncio.sleep(self._settings.lease_renew_interval)
        log.warning("rejoined under a new identity", node=self.node_id, previous=previous)
        holder.rejoined(previous)
