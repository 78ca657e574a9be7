"""What a tenant's client may do on NATS: exactly the public contract, as NATS permissions.

A tenant is a NATS account (its own subjects, its own JetStream) holding the gateway's
service users, which may do everything in it, and the tenant's client users, which get
these permissions: the public requests, the events (live, and replayed from the events
stream through consumers of their own), and reading files from the media bucket. Nothing
internal (`<prefix>._*`), no publishing of events, no KV bucket, no stream or consumer
deletion, no stream creation.

The NATS server enforces them (the dev stack writes them into its config, the production
recipe shows them); derived here, as plain data, from the Subjects of a prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.subjects import Subjects

# Request subjects of the public contract, by their second token: `<prefix>.<kind>.>`.
PUBLIC_REQUEST_KINDS = ("session", "send", "history", "queue", "dlq")
# Webhook subscriptions (answered by the http-gateway): named one by one, since
# `<prefix>.webhook.<wid>.alert` is an event that only the services publish.
WEBHOOK_REQUESTS = ("get", "pause", "resume", "delete")
# The simulated WhatsApp's control subjects (dev stack only): what the phone and the
# WhatsApp servers would do.
SIM_CONTROLS = ("scan", "inbound", "read", "unlink", "drop", "ban", "faults")


@dataclass(frozen=True)
class Permissions:
    """Allow-lists of subjects: anything not listed is refused by the server."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def tenant_client(subjects: Subjects, simulator: bool = False) -> Permissions:
    """A tenant client's permissions; with `simulator`, also the simulator's controls."""
    s = subjects
    publish = [f"{s.prefix}.{kind}.>" for kind in PUBLIC_REQUEST_KINDS]
    publish += [s.webhook_create, s.webhook_list, *(s.webhook("*", op) for op in WEBHOOK_REQUESTS)]
    # Account info, and stream names (nats-py's object store looks its stream up by subject).
    publish += ["$JS.API.INFO", "$JS.API.STREAM.NAMES", *_read_stream(s.events_stream)]
    # The media bucket's stream, read-only: its info, an object's metadata (last message
    # of a subject), and its chunks through an ordered consumer of the client's own.
    publish += _read_stream(f"OBJ_{s.media_bucket}")
    if simulator:
        publish += [s.sim("*", op) for op in SIM_CONTROLS] + [s.sim_stats]
    # Replies (requests, consumer deliveries) come to the client's inboxes; events live.
    subscribe = ["_INBOX.>", s.events_all, s.webhook_alerts_all]
    return Permissions(publish=tuple(publish), subscribe=tuple(subscribe))


def _read_stream(stream: str) -> list[str]:
    """JetStream API calls that read one stream: its info, single messages, and consumers
    the client creates, reads and acknowledges (none it could delete)."""
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.*",
        f"$JS.API.CONSUMER.INFO.{stream}.*",
        f"$JS.API.CONSUMER.NAMES.{stream}",
        f"$JS.API.CONSUMER.LIST.{stream}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]
