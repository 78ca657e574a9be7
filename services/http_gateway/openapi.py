"""The OpenAPI document of the HTTP API, with the contract's own schemas.

Bodies are contract types (msgspec Structs), not pydantic models: each route names its
request and answer types here, and msgspec's JSON Schemas of them (the same as
docs/contract-v1.schema.json) become the document's components. FastAPI writes the rest
(paths, parameters, the API key schemes).
"""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from contracts.envelope import Err
from contracts.schema import tidy
from contracts.sending import SCHEMA_EXTRAS

REF = "#/components/schemas/{name}"
# The errors every authenticated route may answer besides its own.
COMMON_ERRORS = (401, 503, 504)
ERROR_TEXT = {
    400: "the body is not a JSON object",
    401: "no API key, or not a valid one",
    403: "refused by the contract (unauthorized)",
    404: "no such session, send, file or subscription",
    409: "a conflict: exists already, or the session cannot do that now (session_unavailable)",
    413: "the body is larger than a NATS message",
    422: "the body or a parameter breaks the contract's rules (invalid_request)",
    429: "rate_limited: the session's queue is full",
    503: "a server or service is away for now (temporarily_unavailable): retry",
    504: "no answer in time: retry (a send retried with its id is never sent twice)",
}


class Schemas:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def of(self, type_: Any) -> dict[str, Any]:
        (schema,), components = msgspec.json.schema_components([type_], ref_template=REF)
        for name, extra in SCHEMA_EXTRAS.items():
            if name in components:
                components[name] = {**components[name], **extra}
        self.components.update(tidy(components))
        return tidy(schema)

    def body(self, type_: Any, required: bool = True) -> dict[str, Any]:
        """`openapi_extra` of a route whose JSON body is a `type_`."""
        return {"requestBody": {"required": required, "content": {"application/json": {"schema": self.of(type_)}}}}

    def answers(self, status: int, type_: Any, *errors: int, media_type: str = "application/json") -> dict[int, Any]:
        """`responses` of a route: its answer, and the errors it may give (and the common ones)."""
        content = {media_type: {"schema": self.of(type_)}} if type_ is not None else {media_type: {}}
        found: dict[int, Any] = {status: {"description": "done", "content": content}}
        error = {"application/json": {"schema": self.of(Err)}}
        for code in sorted({*errors, *COMMON_ERRORS}):
            found[code] = {"description": ERROR_TEXT[code], "content": error}
        return found

    def install(self, app: FastAPI) -> None:
        """Make `app.openapi()` carry these components."""

        def openapi() -> dict[str, Any]:
            if app.openapi_schema is None:
                document = get_openapi(
                    title=app.title, version=app.version, description=app.description, routes=app.routes
                )
                document.setdefault("components", {}).setdefault("schemas", {}).update(self.components)
                app.openapi_schema = document
            return app.openapi_schema

        app.openapi = openapi  # type: ignore[method-assign]
