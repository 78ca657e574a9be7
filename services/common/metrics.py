"""Prometheus plumbing every service shares: the registry served over HTTP, and gauges
refreshed from NATS on a timer.

Metrics are the official client's (`prometheus_client`), in its default registry, which
also carries the process collector (`process_cpu_seconds_total`,
`process_resident_memory_bytes`, `process_open_fds`, ...) and Python's GC counters. Each
service defines its own metrics next to the code it measures; names follow Prometheus
conventions (`wa_..._total` counters, `_seconds` and `_bytes` units).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import Counter, start_http_server

from contracts.alerts import ALERT_KINDS
from services.common.config import Settings

log = structlog.get_logger(__name__)

# Counted where alert events are published (services/common/bus.py), in every service.
# Every kind starts at 0, so an alert rule's `increase()` sees the first one too.
ALERTS = Counter("wa_alerts", "Alert events published, by kind", ["kind"])
for _kind in ALERT_KINDS:
    ALERTS.labels(_kind)


def serve_metrics(settings: Settings, service: str) -> None:
    """Serve /metrics on `metrics_port` from a thread of its own (the client's own server).

    A port that cannot be bound is logged, not fatal: a session node without metrics is
    better than a node that does not start.
    """
    if not settings.metrics_port:
        return
    try:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    except OSError as exc:
        log.error(
            "metrics port unavailable; running without /metrics",
            service=service,
            port=settings.metrics_port,
            error=str(exc),
        )
        return
    log.info("metrics served", service=service, url=f"http://{settings.metrics_host}:{settings.metrics_port}/metrics")


async def sample_every(interval: float, sample: Callable[[], Awaitable[None]], what: str) -> None:
    """Run `sample` (which sets gauges) every `interval` seconds until cancelled; a failed
    sample is logged and the gauges keep their last values."""
    while True:
        try:
            await sample()
        except Exception as exc:
            log.warning("metrics sample failed", what=what, error=f"{type(exc).__name__}: {exc}"[:300])
        await asyncio.sleep(interval)
