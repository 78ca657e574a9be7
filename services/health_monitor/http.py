"""The HTTP endpoints (JSON) of the health monitor; they render what the monitor knows.

    GET /healthz           200 {"status": "ok", "checks": {...}} or 503 {"status": "unavailable", ...}
    GET /nodes             {"nodes": [NodeHealth, ...], "silent": [node_id, ...]}
    GET /sessions          {"sessions": [SessionHealth, ...]}; filters ?state=... and ?node=...
    GET /sessions/<sid>    SessionHealth, or 404 {"error": ...}

Served by FastStream's AsgiFastStream, so the broker and the HTTP server share one app and
one lifecycle. AsgiFastStream matches whole paths only (faststream 0.7; its maintainers keep
it that way, ag2ai/faststream#2659), so `SessionPaths` adds the one path with a parameter.
"""

from __future__ import annotations

import time
from typing import Any, get_args

import msgspec
import pymongo
from faststream.asgi import AsgiResponse, Request, get
from faststream.asgi.types import ASGIApp, Receive, Scope, Send
from pymongo.errors import PyMongoError

from contracts.types import SessionState
from services.health_monitor.monitor import HealthMonitor

# A request reading MongoDB gives up after this long (the driver would wait 10 s for a server).
MONGO_READ_TIMEOUT = 2.0
SESSIONS = "/sessions"

_STATES = frozenset(get_args(SessionState))
_encoder = msgspec.json.Encoder()


def json_response(body: Any, status: int = 200) -> AsgiResponse:
    return AsgiResponse(_encoder.encode(body), status, {"content-type": "application/json"})


def _error(status: int, message: str) -> AsgiResponse:
    return json_response({"error": message}, status)


def routes(monitor: HealthMonitor) -> list[tuple[str, ASGIApp]]:
    @get
    async def healthz(scope: Scope) -> AsgiResponse:
        checks = await monitor.checks()
        ok = all(check.ok for check in checks.values())
        return json_response({"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503)

    @get
    async def nodes(scope: Scope) -> AsgiResponse:
        now = time.monotonic()
        return json_response({"nodes": monitor.view.nodes(now), "silent": monitor.view.silent_nodes(now)})

    @get
    async def sessions(request: Request) -> AsgiResponse:
        params = request.query_params
        state = params.get("state", [None])[0]
        node = params.get("node", [None])[0]
        if state is not None and state not in _STATES:
            return _error(400, f"state: expected one of {', '.join(sorted(_STATES))}, got {state!r}")
        try:
            with pymongo.timeout(MONGO_READ_TIMEOUT):
                docs = await monitor.store.list()
        except PyMongoError as exc:
            return _error(503, f"MongoDB unavailable: {type(exc).__name__}")
        return json_response({"sessions": monitor.view.sessions(docs, state=state, node=node)})

    return [("/healthz", healthz), ("/nodes", nodes), (SESSIONS, sessions)]


class SessionPaths:
    """`/sessions/<sid>` here; everything else, the lifespan included, to the FastStream app."""

    def __init__(self, app: ASGIApp, monitor: HealthMonitor) -> None:
        self._app = app
        self._monitor = monitor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        prefix = SESSIONS + "/"
        if scope["type"] == "http" and scope["path"].startswith(prefix):
            response = await self._one_session(scope["method"], scope["path"][len(prefix) :])
            await response(scope, receive, send)
        else:
            await self._app(scope, receive, send)

    async def _one_session(self, method: str, sid: str) -> AsgiResponse:
        if method not in ("GET", "HEAD"):
            return AsgiResponse(b"Method Not Allowed", 405, {"allow": "GET, HEAD"})
        try:
            with pymongo.timeout(MONGO_READ_TIMEOUT):
                doc = await self._monitor.store.get(sid)
        except PyMongoError as exc:
            return _error(503, f"MongoDB unavailable: {type(exc).__name__}")
        if doc is None:
            return _error(404, f"session {sid!r} not found")
        return json_response(self._monitor.view.session(doc))
