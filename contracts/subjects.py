"""Every NATS subject, stream and bucket name the system uses, built from one prefix.

The prefix (`wa` by default, setting `WA_PREFIX`) is a single subject token, so two
deployments can share one NATS cluster. Stream and bucket names derive from it too
(`WA_EVENTS` for prefix `wa`), otherwise two deployments would fight over one stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

# Kinds of public events under `<prefix>.evt.<sid>.<kind>`.
EVENT_KINDS = ("status", "message", "outbound", "alert")


@dataclass(frozen=True)
class Subjects:
    prefix: str = "wa"
    sim_prefix: str = "wasim"

    def __post_init__(self) -> None:
        for value in (self.prefix, self.sim_prefix):
            if not PREFIX_PATTERN.match(value):
                raise ValueError(f"subject prefix must match {PREFIX_PATTERN.pattern}, got {value!r}")

    # -- public requests (contract v1) ------------------------------------------------
    @property
    def session_create(self) -> str:
        return f"{self.prefix}.session.create"

    @property
    def session_list(self) -> str:
        return f"{self.prefix}.session.list"

    def session(self, sid: str, op: str) -> str:
        return f"{self.prefix}.session.{sid}.{op}"

    def send(self, sid: str) -> str:
        return f"{self.prefix}.send.{sid}"

    # -- public events (contract v1) --------------------------------------------------
    def event(self, sid: str, kind: str) -> str:
        return f"{self.prefix}.evt.{sid}.{kind}"

    @property
    def events_all(self) -> str:
        return f"{self.prefix}.evt.>"

    @property
    def events_stream(self) -> str:
        return f"{self._upper}_EVENTS"

    @property
    def media_bucket(self) -> str:
        """The object store of inbound files, an object per `media_id` (addition to v1)."""
        return f"{self._upper}_MEDIA"

    # -- webhook subscriptions (additions to v1, answered by the http-gateway) ---------
    @property
    def webhook_create(self) -> str:
        return f"{self.prefix}.webhook.create"

    @property
    def webhook_list(self) -> str:
        return f"{self.prefix}.webhook.list"

    def webhook(self, wid: str, op: str) -> str:
        return f"{self.prefix}.webhook.{wid}.{op}"

    def webhook_alert(self, wid: str) -> str:
        """A subscription paused or resumed: an event on the events stream, not a request."""
        return f"{self.prefix}.webhook.{wid}.alert"

    @property
    def webhook_alerts_all(self) -> str:
        return f"{self.prefix}.webhook.*.alert"

    @staticmethod
    def webhook_consumer(wid: str) -> str:
        """The durable consumer on the events stream that delivers one subscription."""
        return f"webhook-{wid}"

    # -- history and introspection (additions to v1) ---------------------------------
    def history(self, sid: str, kind: str) -> str:
        return f"{self.prefix}.history.{sid}.{kind}"

    def queue(self, sid: str, op: str) -> str:
        return f"{self.prefix}.queue.{sid}.{op}"

    def dlq(self, op: str) -> str:
        return f"{self.prefix}.dlq.{op}"

    # -- internal ---------------------------------------------------------------------
    def actor(self, sid: str, op: str) -> str:
        """Commands for the actor that currently owns `sid`, wherever it runs."""
        return f"{self.prefix}._actor.{sid}.{op}"

    def outbound(self, sid: str) -> str:
        """The per-session durable send queue."""
        return f"{self.prefix}._out.{sid}"

    @property
    def outbound_stream(self) -> str:
        return f"{self._upper}_OUTBOUND"

    def scheduled(self, sid: str, key: str) -> str:
        """A send waiting for its `send_at` (a JetStream message schedule)."""
        return f"{self.prefix}._sched.{sid}.{key}"

    def expiry_timer(self, sid: str, key: str) -> str:
        """A schedule that fires an expiry check at a send's `expires_at`."""
        return f"{self.prefix}._expire.{sid}.{key}"

    def expiry(self, sid: str) -> str:
        """Where expiry checks land when their schedule fires."""
        return f"{self.prefix}._expiry.{sid}"

    def dead_letter(self, sid: str) -> str:
        return f"{self.prefix}._dlq.{sid}"

    @property
    def dead_letter_stream(self) -> str:
        return f"{self._upper}_DLQ"

    @property
    def sends_bucket(self) -> str:
        """Per-send intent and outcome records of the actors (at-most-once sending)."""
        return f"{self._upper}_SENDS"

    @property
    def leases_bucket(self) -> str:
        return f"{self._upper}_LEASES"

    def heartbeat(self, node_id: str) -> str:
        return f"{self.prefix}._hb.{node_id}"

    @property
    def heartbeats_all(self) -> str:
        return f"{self.prefix}._hb.*"

    def node(self, node_id: str, op: str) -> str:
        return f"{self.prefix}._node.{node_id}.{op}"

    # -- simulated WhatsApp -----------------------------------------------------------
    def sim(self, sid: str, op: str) -> str:
        return f"{self.sim_prefix}.{sid}.{op}"

    @property
    def sim_stats(self) -> str:
        return f"{self.sim_prefix}.stats"

    def sim_wire(self, op: str) -> str:
        """Client-to-server frames of the simulated WhatsApp websocket."""
        return f"{self.sim_prefix}._wire.{op}"

    @property
    def sim_media_bucket(self) -> str:
        """The simulated WhatsApp's media servers: files contacts send, by direct path."""
        return f"{self.sim_prefix.upper().replace('-', '_')}_MEDIA"

    def sim_conn(self, conn_id: str) -> str:
        """Server-to-client frames for one simulated connection."""
        return f"{self.sim_prefix}._conn.{conn_id}"

    @property
    def _upper(self) -> str:
        return self.prefix.upper().replace("-", "_")


def token(subject: str, index: int) -> str:
    """The `index`-th token of a subject (negative counts from the end)."""
    return subject.split(".")[index]
