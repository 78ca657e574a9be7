"""The HTTP API as one FastAPI app: the routes (sessions, messages, webhooks) behind the API
key check, `/healthz` open for probes, every error in the contract's shape, and the
OpenAPI document (interactive at `/docs`) with the contract's schemas."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from nats.aio.client import Client as NatsClient
from starlette.exceptions import HTTPException as StarletteHTTPException

import contracts
from contracts.subjects import Subjects
from services.api_keys.store import ApiKeyStore
from services.http_gateway import parameters, routes_messages, routes_sessions, routes_webhooks
from services.http_gateway.auth import KeyCheck
from services.http_gateway.bridge import ApiError, Bridge, error_response
from services.http_gateway.openapi import Schemas

DESCRIPTION = """\
Every call is a request of the public NATS contract (docs/contract-v1.md): the same bodies,
the same idempotency `id` for sends, the contract's error codes as HTTP statuses
(`{"ok": false, "error": {"code", "message"}}`). Authenticate with an API key of this
deployment's tenant (`wactl apikey create`) as `X-Api-Key` or `Authorization: Bearer`.

Webhooks: subscribe a URL to events; each POST is signed the Standard Webhooks way
(`webhook-id`, `webhook-timestamp`, `webhook-signature`), in order per session, at least
once (deduplicate by `webhook-id`).
"""

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(
    subjects: Subjects,
    tenant: str,
    nc: NatsClient | None = None,
    keys: ApiKeyStore | None = None,
    lifespan: Lifespan | None = None,
) -> FastAPI:
    """The app; without `nc` and `keys` it can only describe itself (the OpenAPI document)."""
    app = FastAPI(
        title="WhatsApp session gateway: HTTP API", version=contracts.__version__, description=DESCRIPTION,
        lifespan=lifespan,
    )  # fmt: skip
    schemas = Schemas()
    bridge = Bridge(nc)
    authenticated = [Depends(KeyCheck(keys, tenant))]
    app.include_router(routes_sessions.router(bridge, nc, subjects, schemas), dependencies=authenticated)
    app.include_router(routes_messages.router(bridge, nc, subjects, schemas), dependencies=authenticated)
    app.include_router(routes_webhooks.router(bridge, subjects, schemas), dependencies=authenticated)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        connected = nc is not None and nc.is_connected
        if not connected:
            raise ApiError(503, "temporarily_unavailable", "not connected to NATS")
        return {"status": "ok"}

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def no_route(request: Request, exc: StarletteHTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else "invalid_request"
        return error_response(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}")

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> Response:
        return error_response(422, "invalid_request", parameters.refusal(exc.errors()))

    schemas.install(app)
    return app


