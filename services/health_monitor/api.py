"""The JSON endpoints of the health monitor, for probes, scripts and Prometheus:

    GET /healthz           200 {"status": "ok", "checks": {...}} or 503 {"status": "unavailable", ...}
    GET /nodes             {"nodes": [NodeHealth, ...], "silent": [node_id, ...]}
    GET /sessions          {"sessions": [SessionHealth, ...]}; filters ?state=... and ?node=...
    GET /sessions/<sid>    SessionHealth, or 404 {"error": ...}
    GET /metrics           Prometheus metrics (the official client's exposition)

/nodes and /sessions name sessions and phone numbers: they ask for the dashboard's token
(`Authorization: Bearer <token>`, the dashboard's cookie, or `?token=`), 401 without it, 503
while no token is configured. /healthz and /metrics stay open for probes and scrapers
(/metrics names no session unless WA_METRICS_PER_SESSION is on).

Errors are `{"error": message}`; unknown paths are FastAPI's JSON 404.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import msgspec
import pymongo
from fastapi import APIRouter, Query, Request, Response
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder
from pymongo.errors import PyMongoError

from services.health_monitor.auth import Gate
from services.health_monitor.board import STATES
from services.health_monitor.monitor import HealthMonitor
from services.health_monitor.view import SessionHealth

# A request reading MongoDB gives up after this long (the driver would wait 10 s for a server).
MONGO_READ_TIMEOUT = 2.0

_encoder = msgspec.json.Encoder()
_GET = ["GET", "HEAD"]


def json_response(body: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status, media_type="application/json")


def error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


class MongoUnavailable(Exception):
    """MongoDB did not answer in time: the endpoints say 503."""


@contextmanager
def mongo_read() -> Iterator[None]:
    """A read of MongoDB that gives up after MONGO_READ_TIMEOUT with MongoUnavailable."""
    try:
        with pymongo.timeout(MONGO_READ_TIMEOUT):
            yield
    except PyMongoError as exc:
        raise MongoUnavailable(f"MongoDB unavailable: {type(exc).__name__}") from exc


async def session_rows(monitor: HealthMonitor, state: str | None = None, node: str | None = None) -> list[SessionHealth]:
    with mongo_read():
        docs = await monitor.store.list()
    return monitor.view.sessions(docs, state=state, node=node)


def router(monitor: HealthMonitor, gate: Gate) -> APIRouter:
    api = APIRouter()

    def refused(request: Request) -> Response | None:
        """Why a request for what names sessions is refused, if it is."""
        if not gate.enabled:
            return error(503, "/nodes and /sessions are off: set WA_DASHBOARD_TOKEN to turn them on")
        if gate.allows(request) or gate.accepts_token(request.query_params.get("token")):
            return None
        return error(401, "send the dashboard token: Authorization: Bearer <token>")

    @api.api_route("/healthz", methods=_GET)
    async def healthz() -> Response:
        checks = await monitor.checks()
        ok = all(check.ok for check in checks.values())
        return json_response({"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503)

    @api.api_route("/nodes", methods=_GET)
    async def nodes(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        now = time.monotonic()
        return json_response({"nodes": monitor.view.nodes(now), "silent": monitor.view.silent_nodes(now)})

    @api.api_route("/sessions", methods=_GET)
    async def sessions(
        request: Request, state: Annotated[str | None, Query()] = None, node: Annotated[str | None, Query()] = None
    ) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        if state is not None and state not in STATES:
            return error(400, f"state: expected one of {', '.join(sorted(STATES))}, got {state!r}")
        try:
            return json_response({"sessions": await session_rows(monitor, state, node)})
        except MongoUnavailable as exc:
            return error(503, str(exc))

    @api.api_route("/sessions/{sid}", methods=_GET)
    async def one_session(request: Request, sid: str) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        try:
            with mongo_read():
                doc = await monitor.store.get(sid)
        except MongoUnavailable as exc:
            return error(503, str(exc))
        if doc is None:
            return error(404, f"session {sid!r} not found")
        return json_response(monitor.view.session(doc))

    # Async on purpose: the cluster collector reads the view, which only the event loop may.
    @api.get("/metrics")
    async def metrics(request: Request) -> Response:
        encode, content_type = choose_encoder(request.headers.get("accept"))
        return Response(encode(REGISTRY), media_type=content_type)

    return api
