"""Structured logs (structlog) for every service; call `setup` before anything else logs.

neonize calls `logging.basicConfig(INFO)` on import, so configuring first matters there.
Every line, ours and the libraries' (nats, FastStream, pymongo, neonize), is redacted
(services/common/redaction.py) after its traceback is rendered, so a traceback is redacted
too.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from services.common.redaction import redact


def setup(service: str, level: str = "INFO", fmt: str = "console") -> structlog.stdlib.BoundLogger:
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Plain tracebacks, rendered as text before redaction: the default rich one prints every
    # frame's locals, thousands of lines (and seconds of CPU) per exception when an actor
    # holds a large state, and any of them could hold a message text.
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback)
    )
    renderers: list[Any] = [structlog.processors.format_exc_info, _redact, renderer]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-message lines from FastStream, a line per HTTP request from httpx (webhooks, media
    # fetches) and driver chatter are noise at INFO.
    for noisy in ("faststream", "pymongo", "nats", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # Trap: FastStream's logger writes through a handler of its own (stderr, not
    # propagated), around the redaction; its lines go through ours instead.
    faststream = logging.getLogger("faststream")
    faststream.handlers.clear()
    faststream.propagate = True
    structlog.contextvars.bind_contextvars(service=service)
    return structlog.get_logger(service)


def _redact(logger: Any, method: str, event_dict: Any) -> Any:
    return redact(event_dict)
