"""The published contract documents match the code, and real messages validate against them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import jsonschema
import msgspec

from contracts import schema
from contracts.events import StatusEvent
from contracts.types import utcnow
from services.devstack.contract_docs import asyncapi_document, openapi_document

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_json_schema_document_is_current() -> None:
    committed = json.loads((DOCS / "contract-v1.schema.json").read_text())
    assert committed == json.loads(json.dumps(schema.document())), "run `make schema`"


def test_asyncapi_document_is_current() -> None:
    committed = json.loads((DOCS / "asyncapi.json").read_text())
    with warnings.catch_warnings():
        # FastStream warns when two payloads share a name and one schema overwrites the other.
        warnings.simplefilter("error", RuntimeWarning)
        generated = asyncapi_document()
    assert committed == generated, "run `make schema`"
    assert committed["asyncapi"] == "3.0.0"


def test_encoded_messages_validate_against_the_schema() -> None:
    doc = schema.document()
    event = StatusEvent(event_id="e1", session_id="alice", at=utcnow(), state="connected", node="n1")
    status = {**doc["subjects"]["wa.evt.<sid>.status"]["body"], "$defs": doc["$defs"]}
    jsonschema.validate(msgspec.json.decode(msgspec.json.encode(event)), status)
    reply = {**doc["subjects"]["wa.send.<sid>"]["reply"], "$defs": doc["$defs"]}
    jsonschema.validate({"ok": True, "data": {"id": "x", "state": "queued", "duplicate": False}}, reply)
    jsonschema.validate({"ok": False, "error": {"code": "not_found", "message": "no session"}}, reply)
    bad = {**doc["subjects"]["wa.send.<sid>"]["body"], "$defs": doc["$defs"]}
    try:
        jsonschema.validate({"id": "x", "to": "abc", "text": "hi"}, bad)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("an invalid recipient must not validate")


def test_openapi_document_is_current() -> None:
    committed = json.loads((DOCS / "openapi.json").read_text())
    assert committed == openapi_document(), "run `make schema`"
    send = committed["paths"]["/v1/sessions/{sid}/messages"]["post"]
    assert send["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/SendText"}
    assert {"APIKeyHeader", "HTTPBearer"} <= set(committed["components"]["securitySchemes"])
