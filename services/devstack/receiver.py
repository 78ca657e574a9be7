"""A webhook receiver on loopback, for tests and benchmarks: a small Starlette app served by
uvicorn in the caller's event loop, that records every POST and answers as told (a status,
after a delay), and can stop listening and listen again on the same port."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.devstack.probes import wait_until
from services.devstack.servers import free_port


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: bytes
    received: float  # time.perf_counter() when it arrived
    status: int  # what it was answered

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def payload(self) -> dict:
        return msgspec.json.decode(self.body)


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    status: int = 200  # what every POST is answered
    delay: float = 0.0  # seconds before answering
    deliveries: list[Delivery] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def answered(self) -> list[Delivery]:
        """The POSTs answered with a 2xx so far (the status may change between them)."""
        return [d for d in self.deliveries if 200 <= d.status < 300]

    async def _receive(self, request: Request) -> Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            body = await request.body()
            status = self.status
            if self.delay:
                await asyncio.sleep(self.delay)
            self.deliveries.append(Delivery(dict(request.headers), body, time.perf_counter(), status))
            return Response(status_code=status)
        finally:
            self.in_flight -= 1

    async def start(self) -> Receiver:
        app = Starlette(routes=[Route("/hook", self._receive, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        # Trap: uvicorn takes over SIGINT/SIGTERM while it serves; a receiver inside a test
        # or a benchmark must leave them to its host.
        self._server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        self._task = asyncio.create_task(self._server.serve(), name=f"receiver-{self.port}")
        server = self._server
        await wait_until(lambda: server.started, timeout=10, what=f"the receiver on port {self.port}")
        return self

    async def stop(self) -> None:
        """Stop listening (connections are refused until `start` again)."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = self._task = None

