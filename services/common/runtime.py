"""What every service does at start: wait for NATS and MongoDB, build its broker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
from fast_depends.msgspec import MsgSpecSerializer
from faststream.nats import NatsBroker
from faststream.nats.security import NatsCredentials, NatsNKey, NatsSecurity, NatsToken, NatsUserPassword
from tenacity import before_sleep_log, retry, stop_after_delay, wait_exponential

from services.common import logs
from services.common.config import Settings
from services.common.connection import Reconnections, connect_nats, connection_options
from services.common.mongo import mongo_client

log = structlog.get_logger(__name__)

# How long a service keeps waiting for its servers at start (e.g. `make run` starting them).
STARTUP_PATIENCE = 120
# Stopping: handlers under way get HANDLER_GRACE to finish, the connection DRAIN_TIMEOUT to
# flush; the whole broker stop never takes longer than STOP_TIMEOUT.
HANDLER_GRACE = 3.0
DRAIN_TIMEOUT = 2.0
STOP_TIMEOUT = 6.0
SUPERVISOR_POLL = 0.5


@retry(
    wait=wait_exponential(multiplier=0.2, max=3),
    stop=stop_after_delay(STARTUP_PATIENCE),
    before_sleep=before_sleep_log(logging.getLogger("startup"), logging.WARNING),
    reraise=True,
)
async def wait_for_servers(settings: Settings, mongo: bool = True) -> None:
    nc = await connect_nats(settings, connect_timeout=2, max_reconnect_attempts=0)
    await nc.close()
    if mongo:
        client = mongo_client(settings, serverSelectionTimeoutMS=2000)
        try:
            await client.admin.command("ping")
        finally:
            await client.close()


class ServiceBroker(NatsBroker):
    """A broker whose stop ends within STOP_TIMEOUT, whether or not NATS answers.

    Trap: FastStream's stop waits up to `graceful_timeout` for handlers under way, then drains
    the connection, and nats-py's drain waits up to 30 s by default; with NATS away it raises
    ConnectionReconnectingError instead, and the service exited with a traceback.
    """

    async def stop(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> None:
        connection = self._connection
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await super().stop(exc_type, exc_val, exc_tb)
        except Exception as exc:  # TimeoutError included
            log.warning("NATS connection closed without draining", error=repr(exc))
            if connection is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await connection.close()
            self._connection = None
            self.config.disconnect()


def broker_security(options: dict[str, Any]) -> NatsSecurity | None:
    """FastStream's form of the credentials and TLS in nats-py `options` (connection.py)."""
    tls = options.get("tls")
    if "user" in options:
        return NatsUserPassword(options["user"], options["password"], ssl_context=tls)
    if "token" in options:
        return NatsToken(options["token"], ssl_context=tls)
    if "nkeys_seed" in options:
        return NatsNKey.from_file(options["nkeys_seed"], ssl_context=tls)
    if "user_credentials" in options:
        return NatsCredentials.from_file(options["user_credentials"], ssl_context=tls)
    return None if tls is None else NatsSecurity(ssl_context=tls)


def make_broker(settings: Settings, service: str, reconnections: Reconnections | None = None) -> NatsBroker:
    options = connection_options(settings)
    return ServiceBroker(
        options["servers"],
        security=broker_security(options),
        reconnected_cb=None if reconnections is None else reconnections.happened,
        name=service,
        serializer=MsgSpecSerializer(),
        # Per-message "Received/Processed" lines are debug material. Trap: FastStream's own
        # access logger writes to stdout through a handler of its own, around the redaction
        # of services/common/logs.py; a logger of ours goes through it.
        logger=logging.getLogger("faststream.broker"),
        log_level=logging.DEBUG,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        graceful_timeout=HANDLER_GRACE,
        drain_timeout=DRAIN_TIMEOUT,
    )


def exit_with_supervisor(settings: Settings) -> None:
    """Stop (SIGTERM to ourselves: the graceful path) once the supervisor is gone, so nothing
    is left running when `make run` or a test run is killed. A thread: it must work whatever
    the event loop is doing."""
    pid = settings.supervisor_pid
    if pid is None:
        return

    def watch() -> None:
        while _running(pid):
            time.sleep(SUPERVISOR_POLL)
        log.warning("supervisor gone: stopping", supervisor=pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed supervisor stays one until its parent reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def run_http_service(service: str, serve: Callable[[Settings], Coroutine[Any, Any, None]]) -> None:
    """The `main` of a service that serves HTTP with uvicorn: settings, logs, the watch on the
    supervisor, then `serve` until SIGTERM or Ctrl-C.

    SIGTERM unwinds like Ctrl-C, at any point: uvicorn shuts the app down gracefully and then
    re-raises the signal it caught, which lands here as KeyboardInterrupt after the cleanup.
    """
    settings = Settings()
    logs.setup(service, settings.log_level, settings.log_format)
    exit_with_supervisor(settings)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings))
