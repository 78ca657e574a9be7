"""The published contract documents, generated: the JSON Schema (contracts/schema.py), the
AsyncAPI 3.0 document of every service's request subjects, built here from the services'
FastStream routers (which is why this lives above the services, not in contracts/), and
the OpenAPI document of the http-gateway's HTTP API.

    python -m services.devstack.contract_docs docs     # also `make schema`

FastStream builds payload schemas through pydantic, which cannot describe a msgspec Struct
(upstream issue ag2ai/faststream#2101). `describe_structs` gives every Struct a pydantic
hook that returns msgspec's own JSON Schema, references inlined (pydantic refuses
references it did not create).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from faststream.nats import NatsBroker
from faststream.specification import AsyncAPI
from pydantic_core import core_schema

import contracts
from contracts.alerts import AlertEvent
from contracts.events import MessageEvent, OutboundEvent, StatusEvent
from contracts.schema import document as schema_document
from contracts.schema import tidy
from contracts.sending import SCHEMA_EXTRAS
from contracts.webhooks import WebhookAlert
from services.common.config import Settings
from services.common.runtime import make_broker
from services.http_gateway.app import create_app
from services.http_gateway.webhooks.admin import build_router as webhook_router
from services.outbound_queue.main import build_router as outbound_router
from services.persistence.queries import build_router as history_router
from services.session_actor.api import build_router as session_router
from services.wa_sim.main import build_router as sim_router


def _inline(schema: Any, components: dict[str, Any]) -> Any:
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline(components[schema["$ref"].rsplit("/", 1)[1]], components)
        return {key: _inline(value, components) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inline(value, components) for value in schema]
    return schema


def json_schema(type_: Any) -> dict[str, Any]:
    """msgspec's JSON Schema of a type, self-contained."""
    (top,), components = msgspec.json.schema_components([type_])
    for name, extra in SCHEMA_EXTRAS.items():
        if name in components:
            components[name] = {**components[name], **extra}
    return tidy(_inline(top, components))


def _pydantic_schema(cls: type, source: Any, handler: Any) -> core_schema.CoreSchema:
    schema = json_schema(source)
    return core_schema.any_schema(metadata={"pydantic_js_functions": [lambda _core, _handler: schema]})


def describe_structs() -> None:
    """Let pydantic (and so FastStream's AsyncAPI) describe every msgspec Struct."""
    pending = [msgspec.Struct]
    while pending:
        for sub in pending.pop().__subclasses__():
            sub.__get_pydantic_core_schema__ = classmethod(_pydantic_schema)  # type: ignore[attr-defined]
            pending.append(sub)


class _Nothing:
    """Stands in for a service's dependencies while its routes are only being described."""

    def __getattr__(self, name: str) -> None:
        return None


# The events users subscribe to, as the services publish them (stream WA_EVENTS).
EVENTS: dict[str, tuple[type, str]] = {
    "status": (StatusEvent, "A session's state changed (with the QR code while pairing)."),
    "message": (MessageEvent, "An inbound message."),
    "outbound": (OutboundEvent, "A step of a send's lifecycle: queued, sent, delivered, read, failed, expired."),
    "alert": (AlertEvent, "A moment an operator must act on (contracts/alerts.py lists the kinds)."),
}


def asyncapi_document() -> dict[str, Any]:
    """One AsyncAPI document: the request subjects every service answers and the events
    they publish."""
    describe_structs()
    settings = Settings()
    broker: NatsBroker = make_broker(settings, "asyncapi")
    for kind, (payload, description) in EVENTS.items():
        broker.publisher(settings.subjects.event("{sid}", kind), schema=payload, description=description)
    # Handlers are only described here, never called: no live dependencies are needed.
    broker.include_router(session_router(None, settings))  # type: ignore[arg-type]
    broker.include_router(outbound_router(_Nothing(), None, settings))  # type: ignore[arg-type]
    broker.include_router(history_router(None, settings.subjects))  # type: ignore[arg-type]
    broker.include_router(sim_router(_Nothing(), settings))  # type: ignore[arg-type]
    broker.include_router(webhook_router(None, settings.subjects))  # type: ignore[arg-type]
    broker.publisher(
        settings.subjects.webhook_alert("{wid}"),
        schema=WebhookAlert,
        description="A webhook subscription paused (its receiver kept failing, or by request) or resumed.",
    )
    spec = AsyncAPI(
        broker,
        title="WhatsApp session gateway",
        version=contracts.__version__,
        description="Contract v1: requests and replies over NATS, and the events on the WA_EVENTS stream.",
        schema_version="3.0.0",
    )
    return json.loads(spec.to_specification().to_json())


def openapi_document() -> dict[str, Any]:
    """The http-gateway's HTTP API, as its FastAPI app describes itself (also at `/docs`)."""
    return create_app(Settings().subjects, "default").openapi()


# Each published document's file name and what generates it.
DOCUMENTS: dict[str, Callable[[], dict[str, Any]]] = {
    "contract-v1.schema.json": schema_document,
    "asyncapi.json": asyncapi_document,
    "openapi.json": openapi_document,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path, help="where to write the documents (the repository's docs/)")
    args = parser.parse_args(argv)
    for name, generate in DOCUMENTS.items():
        (args.directory / name).write_text(json.dumps(generate(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
