"""Who may call the HTTP API: whoever holds an API key of this deployment's tenant
(services/api_keys), sent as `X-Api-Key: <key>` or `Authorization: Bearer <key>`.
Anything else is 401. Keys live in the tenant's own database and are bound to the tenant:
another tenant's gateway does not know them."""

from __future__ import annotations

from typing import Annotated

import pymongo
from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pymongo.errors import PyMongoError

from contracts.envelope import TEMPORARILY_UNAVAILABLE
from services.api_keys.store import ApiKey, ApiKeyStore
from services.http_gateway.bridge import ApiError

# A key check gives up on MongoDB after this long (the driver would wait 10 s).
MONGO_TIMEOUT = 2.0
CHALLENGE = {"www-authenticate": 'Bearer realm="wa-gateway"'}

api_key_header = APIKeyHeader(name="X-Api-Key", auto_error=False, description="an API key (`wactl apikey create`)")
bearer = HTTPBearer(auto_error=False, description="the same API key, as `Authorization: Bearer <key>`")


class KeyCheck:
    """A FastAPI dependency: the caller's API key, or 401."""

    def __init__(self, store: ApiKeyStore | None, tenant: str) -> None:
        self._store = store
        self._tenant = tenant

    async def __call__(
        self,
        header: Annotated[str | None, Security(api_key_header)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> ApiKey:
        token = header or (credentials.credentials if credentials is not None else None)
        if not token:
            raise ApiError(
                401, "unauthorized", "missing API key: send it as X-Api-Key or Authorization: Bearer", CHALLENGE
            )
        assert self._store is not None, "the key check is only described, not connected"
        try:
            with pymongo.timeout(MONGO_TIMEOUT):
                key = await self._store.verify(token, self._tenant)
        except PyMongoError as exc:
            raise ApiError(503, TEMPORARILY_UNAVAILABLE, f"API keys cannot be checked now ({type(exc).__name__})") from None
        if key is None:
            raise ApiError(401, "unauthorized", "unknown or revoked API key", CHALLENGE)
        return key
