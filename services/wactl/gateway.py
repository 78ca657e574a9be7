"""The NATS side of wactl: one connection, v1 requests, tails of the events stream, and the
decoding of what comes back."""

import asyncio
import contextlib
import re
from typing import Any, TypeVar

import msgspec
import nats.errors
import typer
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from contracts.alerts import AlertEvent
from contracts.events import Event, MessageEvent, OutboundEvent, StatusEvent
from contracts.sessions import Empty
from contracts.subjects import token
from services.common.bus import request
from services.common.config import Settings
from services.common.connection import connection_options
from services.wactl.exits import EXIT_UNREACHABLE, Failure

T = TypeVar("T")

CLOSE_TIMEOUT = 2.0
EVENT_TYPES: dict[str, type[Event]] = {
    "status": StatusEvent,
    "message": MessageEvent,
    "outbound": OutboundEvent,
    "alert": AlertEvent,
}


def convert(data: Any, type_: type[T]) -> T:
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        raise Failure(f"unexpected reply (expected {type_.__name__}): {exc}") from None


def decode_event(msg: Msg) -> Event | None:
    try:
        return msgspec.json.decode(msg.data, type=EVENT_TYPES[token(msg.subject, -1)])
    except (KeyError, msgspec.DecodeError):
        return None


class Feed:
    """Messages of one subscription, in order; `next` waits until a deadline (loop time)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Msg | None] = asyncio.Queue()

    async def on_msg(self, msg: Msg) -> None:
        self.queue.put_nowait(msg)

    async def next(self, deadline: float | None = None) -> Msg | None:
        """The next message, or None once `deadline` has passed."""
        timeout = None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            if timeout == 0:
                msg = self.queue.get_nowait()
            else:
                # Not wait_for: on Python 3.11 it can swallow the Ctrl-C cancellation when a
                # message arrives at the same moment, and `wactl events` then keeps running.
                async with asyncio.timeout(timeout):
                    msg = await self.queue.get()
        except (asyncio.QueueEmpty, TimeoutError):
            return None
        if msg is None:
            raise Failure("the connection to NATS was closed", EXIT_UNREACHABLE)
        return msg


class Gateway:
    """One NATS connection, and `call`: the one request helper every command goes through."""

    def __init__(self, settings: Settings, timeout: float) -> None:
        self.settings = settings
        self.subjects = settings.subjects
        self.timeout = timeout
        self.nc = NatsClient()
        self._feeds: list[Feed] = []
        self._last_error: Exception | None = None
        self._closing = False

    async def connect(self) -> None:
        url = self.settings.nats_url
        try:
            # Few, quick attempts: an unreachable server is reported in well under a second.
            await self.nc.connect(
                **connection_options(self.settings),
                name="wactl",
                connect_timeout=min(self.timeout, 5.0),
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                closed_cb=self._on_closed,
            )
        except Exception as exc:  # NoServersError, OSError, auth errors, timeouts
            cause = self._last_error or exc
            raise Failure(
                f"cannot connect to NATS at {redact(url)}: {str(cause) or type(cause).__name__} "
                "(set --nats-url or WA_NATS_URL)",
                EXIT_UNREACHABLE,
            ) from None
        # Once connected, ride out server restarts (a long `events` tail or `pair`).
        self.nc.options["max_reconnect_attempts"] = -1
        self.nc.options["reconnect_time_wait"] = 1.0

    async def close(self) -> None:
        self._closing = True
        # A command that is done (or interrupted) ends even if the server stopped reading.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.nc.close()

    async def call(self, subject: str, body: Any = None, timeout: float | None = None) -> Any:
        """A v1 request: `data` of an ok reply; ContractError for an error reply."""
        timeout = timeout or self.timeout
        try:
            return await request(self.nc, subject, Empty() if body is None else body, timeout)
        except nats.errors.NoRespondersError:
            raise Failure(
                f"no service answers {subject}: is {self._service(subject)} running "
                f"(prefix {self.subjects.prefix!r})?",
                EXIT_UNREACHABLE,
            ) from None
        except (nats.errors.TimeoutError, TimeoutError):
            raise Failure(f"no reply to {subject} within {timeout:g}s", EXIT_UNREACHABLE) from None
        except nats.errors.ConnectionClosedError:
            raise Failure("the connection to NATS was closed", EXIT_UNREACHABLE) from None
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise Failure(f"malformed reply to {subject} (not a v1 envelope)") from None

    async def tail(self, subject: str, from_start: bool = False) -> Feed:
        """Events matching `subject` from the events stream, from now on (or the start).

        An ordered JetStream consumer: it starts at a stream position, so whatever is
        published after this returns is seen, wherever the publisher is connected.
        """
        feed = Feed()
        try:
            await self.nc.jetstream().subscribe(
                subject,
                stream=self.subjects.events_stream,
                cb=feed.on_msg,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.ALL if from_start else DeliverPolicy.NEW,
            )
        except NotFoundError:
            raise Failure(
                f"no events stream {self.subjects.events_stream}: have the services run with "
                f"prefix {self.subjects.prefix!r}?",
                EXIT_UNREACHABLE,
            ) from None
        self._feeds.append(feed)
        return feed

    def _service(self, subject: str) -> str:
        if subject.startswith(self.subjects.sim_prefix + "."):
            return "wa-sim"
        kind = token(subject, 1)
        services = {"session": "session-actor", "send": "outbound-queue", "history": "persistence", "webhook": "http-gateway"}
        return services.get(kind, "the service")

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc

    async def _on_disconnected(self) -> None:
        if not self._closing:
            typer.echo("connection to NATS lost; reconnecting...", err=True)

    async def _on_reconnected(self) -> None:
        typer.echo("reconnected to NATS", err=True)

    async def _on_closed(self) -> None:
        for feed in self._feeds:
            feed.queue.put_nowait(None)


def redact(url: str) -> str:
    """A server URL without its user info (it may hold a password or token)."""
    return re.sub(r"//[^@/]*@", "//***@", url)
