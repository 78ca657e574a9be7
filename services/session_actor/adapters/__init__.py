"""WhatsApp client adapters; `make_factory` picks the one a node is configured for."""

from __future__ import annotations

from nats.aio.client import Client as NatsClient

from services.common.config import Settings
from services.session_actor.adapters.base import ClientFactory


def make_factory(settings: Settings, nc: NatsClient) -> ClientFactory:
    # Imported on demand: neonize must not be imported before logging is configured, and a
    # simulator node should not load an 18 MB Go library at all.
    if settings.adapter == "neonize":
        from services.session_actor.adapters.neonize.factory import NeonizeClientFactory

        return NeonizeClientFactory(settings)
    from services.session_actor.adapters.sim import SimClientFactory

    return SimClientFactory(nc, settings)
