"""The C callbacks Go calls, and how they reach a client.

Go calls these from its own threads, for every client of the process (QR codes, login
status, events, its log lines). Each names the client by its incarnation uuid; `routes`
maps that uuid to a function that hops onto the event loop, where the client handles it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
from collections.abc import Callable
from typing import Any

import structlog

from services.session_actor.adapters.neonize.protobufs import pb

log = structlog.get_logger(__name__)

# Incarnation uuid -> where its callbacks go (a function that hops onto the event loop).
routes: dict[bytes, Callable[..., None]] = {}


def call_in_loop(loop: asyncio.AbstractEventLoop, handler: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: the process is exiting
        loop.call_soon_threadsafe(handler, *args)


def _route(uuid: bytes, kind: str, *args: Any) -> None:
    handler = routes.get(uuid)
    if handler is not None:
        handler(kind, *args)


def on_go_qr(uuid: int, code: int) -> None:
    try:
        _route(ctypes.string_at(uuid), "qr", ctypes.string_at(code).decode())
    except Exception:  # trap: neonize swallows handler errors; ctypes would print and drop them
        log.exception("QR callback failed")


def on_go_login_status(uuid: int, status: int) -> None:
    try:
        _route(ctypes.string_at(uuid), "status", ctypes.string_at(status).decode())
    except Exception:
        log.exception("login status callback failed")


def on_go_event(uuid: bytes, data: int, size: int, code: int) -> None:
    try:
        # The buffer is Go's and only valid during this call: copy it now, decode on the loop.
        _route(uuid, "event", code, ctypes.string_at(data, size))
    except Exception:
        log.exception("event callback failed", code=code)


_GO_LOG_LEVELS = {
    "ERROR": logging.ERROR,
    "WARN": logging.WARNING,
    "INFO": logging.INFO,
    "DEBUG": logging.DEBUG,
}


def on_go_log(data: int, size: int) -> None:
    try:
        entry = pb.LogEntry.FromString(ctypes.string_at(data, size))
        logger = logging.getLogger(f"whatsmeow.{entry.Name.replace('/', '.')}")
        logger.log(_GO_LOG_LEVELS.get(entry.Level, logging.INFO), entry.Message)
    except Exception:
        log.exception("log callback failed")


def go_log_level() -> bytes:
    """The level Go logs at, from our `whatsmeow` logger; never DEBUG (it dumps every frame)."""
    level = logging.getLogger("whatsmeow").getEffectiveLevel()
    if level >= logging.ERROR:
        return b"ERROR"
    return b"WARN" if level >= logging.WARNING else b"INFO"
