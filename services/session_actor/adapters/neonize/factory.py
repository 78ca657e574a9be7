"""`NeonizeClientFactory`: the process-wide side of neonize (the library, the event loop, the
Go map guard, the threads of the Go clients) and what the clients ask of it: starting and
stopping Go clients, a shared reachability probe, and polling the stores for changes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from services.common.config import Settings
from services.common.tasks import cancel_and_wait, wait_event
from services.session_actor.adapters.base import ClientFactory, Clock, Emit
from services.session_actor.adapters.neonize import process
from services.session_actor.adapters.neonize.callbacks import call_in_loop, go_log_level, routes
from services.session_actor.adapters.neonize.client import (
    DEVICE_TABLE,
    EVENT_HANDLERS,
    STOP_TIMEOUT,
    Incarnation,
    NeonizeClient,
)
from services.session_actor.adapters.neonize.guard import GoMapGuard, process_guard
from services.session_actor.adapters.neonize.library import Library, load_library
from services.session_actor.adapters.neonize.protobufs import DeviceProps

log = structlog.get_logger(__name__)

WHATSAPP_ENDPOINT = ("web.whatsapp.com", 443)  # whatsmeow dials wss://web.whatsapp.com/ws/chat

# Neonize()'s map writes happen before it dials: ~3 ms on an existing store, 10-115 ms when
# it creates a fresh one (measured here). Other Go calls wait for its first callback, or this.
PROLOGUE_GRACE_RESTORED = 0.15
PROLOGUE_GRACE_FRESH = 0.5
# How long Stop waits for Neonize() to get past its post-connect map reads.
SETTLE_TIMEOUT = 2.0
# Blocking calls (a send can wait ~75 s for WhatsApp) take an executor thread each; one per
# hosted session, plus room for stops, snapshots and DNS lookups.
EXECUTOR_HEADROOM = 32
STORE_POLL_INTERVAL = 2.0
PROBE_TIMEOUT = 10.0
PROBE_TTL = 5.0


class NeonizeClientFactory(ClientFactory):
    """Process-wide neonize state: the library, the event loop, threads and the Go map guard."""

    device_table = DEVICE_TABLE

    def __init__(
        self,
        settings: Settings,
        *,
        device_name: str = "WA Gateway",
        check_reachability: bool = True,
        silence_go_stdout: bool = True,
        store_poll_interval: float = STORE_POLL_INTERVAL,
    ) -> None:
        """`device_name`: how the linked device is listed on the phone.

        `check_reachability`: probe WhatsApp before each attempt (see the package doc).
        `silence_go_stdout`: point fd 1 at /dev/null (Python's stdout keeps working).
        """
        self.capacity = settings.node_capacity  # sessions this process hosts
        self.device_name = device_name
        self._check_reachability = check_reachability
        self._silence_go_stdout = silence_go_stdout
        self._store_poll_interval = store_poll_interval
        self.loop: asyncio.AbstractEventLoop | None = None
        self.library: Library
        self.guard: GoMapGuard
        # Code Go sends an event under -> its protobuf class, for the events the clients handle.
        self.event_types: dict[int, type] = {}
        self._device_props = b""
        self._clients: set[NeonizeClient] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running: set[Incarnation] = set()
        self._attempts = 0
        self._attempt_budget = 0
        self._probe: asyncio.Future[str | None] | None = None
        self._probe_at = 0.0
        self._poller: asyncio.Task[None] | None = None
        self._restore_stdout: Callable[[], None] | None = None

    async def start(self, may_act: Callable[[], bool] = lambda: True) -> None:
        # whatsmeow keeps its connections alive in Go, out of our reach: a stalled node's
        # connection stays up, and WhatsApp replaces it when the next owner connects
        # (stream replaced, which the actor answers by checking ownership).
        if self.loop is not None:
            return
        # Trap: neonize calls logging.basicConfig on import; it is imported only now, after
        # services.common.logs.setup, and the root logger is restored afterwards.
        self.library = load_library()
        self.event_types = {self.library.event_codes[event_type]: event_type for event_type in EVENT_HANDLERS}
        self.loop = asyncio.get_running_loop()
        process.size_default_executor(self.loop, self.capacity + EXECUTOR_HEADROOM)
        # Trap: one event loop per process (Go's callbacks are bound to it).
        self.guard = process_guard(self.loop)
        self._attempt_budget = process.raise_fd_limit() // 2
        self._device_props = DeviceProps(os=self.device_name, platformType=DeviceProps.CHROME).SerializeToString()
        if self._silence_go_stdout:
            self._restore_stdout = process.send_fd1_to_devnull()
        self._poller = asyncio.create_task(self._poll_stores(), name="neonize-store-poller")

    async def stop(self) -> None:
        await cancel_and_wait(self._poller)
        self._poller = None
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=STOP_TIMEOUT)
        if self._restore_stdout is not None:
            self._restore_stdout()
            self._restore_stdout = None

    def create(self, session_id: str, store_path: Path, emit: Emit, clock: Clock) -> NeonizeClient:
        if self.loop is None:
            raise RuntimeError("NeonizeClientFactory.start() must run first")
        client = NeonizeClient(session_id, store_path, emit, clock, factory=self)
        self._clients.add(client)
        return client

    @property
    def stats(self) -> dict[str, int]:
        """Counters for health checks.

        connection_attempts: Neonize() calls, each keeping one store handle for good.
        parked: retired Go clients whose Neonize() has not returned: briefly while they stop,
        for good after an abandoned pairing (one idle thread each).
        """
        return {
            "clients": len(self._clients),
            "connection_attempts": self._attempts,
            "running": sum(not incarnation.retired for incarnation in self._running),
            "parked": sum(incarnation.retired for incarnation in self._running),
        }

    # -- services for clients -----------------------------------------------------------------
    async def start_incarnation(self, client: NeonizeClient, incarnation: Incarnation) -> None:
        assert self.loop is not None
        grace = PROLOGUE_GRACE_RESTORED if client.store_path.exists() else PROLOGUE_GRACE_FRESH
        incarnation.release_prologue = await self.guard.hold()
        if incarnation.retired:  # disconnected while waiting for its turn
            incarnation.release_prologue()
            return
        library = self.library
        # Trap: handlers must be known before connecting; Neonize() takes the subscribed event
        # codes and the QR callback up front (without one, Go prints an ASCII QR to stdout).
        subscribed = bytes(code for code in self.event_types if code)
        args = (
            str(client.store_path).encode(),
            incarnation.uuid,
            b"",
            0,
            0,
            go_log_level(),
            *library.callbacks,
            subscribed,
            len(subscribed),
            self._device_props,
            len(self._device_props),
            b"",
            0,
            None,
        )
        routes[incarnation.uuid] = functools.partial(call_in_loop, self.loop, client._from_go, incarnation)
        ended = functools.partial(call_in_loop, self.loop, client._on_thread_end, incarnation)
        # Its own daemon thread: Neonize() blocks for the client's life, sometimes forever.
        incarnation.thread = threading.Thread(
            target=_run_neonize, args=(library, args, ended), name=f"neonize-{client.session_id}", daemon=True
        )
        try:
            incarnation.thread.start()
        except BaseException:
            routes.pop(incarnation.uuid, None)
            incarnation.release_prologue()
            raise
        self.loop.call_later(grace, incarnation.release_prologue)
        self._running.add(incarnation)
        self._attempts += 1
        if self._attempts == self._attempt_budget:
            log.error(
                "neonize holds a store handle per connection attempt and never closes them; "
                "half the fd limit is used: recycle this node",
                attempts=self._attempts,
            )

    def incarnation_ended(self, incarnation: Incarnation) -> None:
        self._running.discard(incarnation)

    async def stop_go_client(self, incarnation: Incarnation) -> None:
        """Disconnect, then remove the Go client from goneonize's maps."""
        if incarnation.starting is not None:
            await asyncio.wait({incarnation.starting})
        if incarnation.thread is None:
            return  # retired before a Go client was started
        native = self.library.native
        try:
            # Trap: this waits for an in-flight dial (whatsmeow's socket lock), which can take
            # long; as a shared reader it blocks nobody. It also marks the disconnect as
            # expected, which ends whatsmeow's own reconnect loop.
            await self.guard.read(native.Disconnect, incarnation.uuid)
            # Go reads the map right after connecting; removing the client before would crash.
            await wait_event(incarnation.settled, SETTLE_TIMEOUT)
            await self.guard.write(native.Stop, incarnation.uuid)
        except Exception:
            log.exception("stopping a WhatsApp client failed", uuid=incarnation.uuid.decode())

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def forget(self, client: NeonizeClient) -> None:
        self._clients.discard(client)

    async def whatsapp_unreachable(self) -> str | None:
        """Why WhatsApp cannot be reached right now, or None; one shared probe per PROBE_TTL."""
        if not self._check_reachability:
            return None
        assert self.loop is not None
        now = self.loop.time()
        if self._probe is None or (self._probe.done() and now - self._probe_at > PROBE_TTL):
            self._probe_at = now
            self._probe = asyncio.ensure_future(_probe_whatsapp())
        return await asyncio.shield(self._probe)

    async def _poll_stores(self) -> None:
        while True:
            await asyncio.sleep(self._store_poll_interval)
            for client in list(self._clients):
                client.poll_store()


def _run_neonize(library: Library, args: tuple[Any, ...], ended: Callable[[str], None]) -> None:
    """Body of an incarnation's thread: Neonize() returns when the client stops (or never)."""
    try:
        error = library.gocode.Neonize(*args).decode(errors="replace")
    except BaseException as exc:  # the loop must hear of the end whatever happened
        error = f"{type(exc).__name__}: {exc}"
    ended(error)


async def _probe_whatsapp() -> str | None:
    if {"https", "all"} & urllib.request.getproxies().keys():
        return None  # Go dials through the proxy; a direct probe would say nothing
    host, port = WHATSAPP_ENDPOINT
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        return f"{host}:{port} unreachable ({exc or type(exc).__name__}); no client started"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None
