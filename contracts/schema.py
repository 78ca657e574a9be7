"""JSON Schema of every public message of contract v1 (requests, replies, events).

Written to docs/contract-v1.schema.json by `make schema` (services/devstack/contract_docs.py).
"""

from __future__ import annotations

import inspect
from typing import Any

import msgspec

from contracts.alerts import AlertEvent
from contracts.envelope import Err, Ok
from contracts.events import MessageEvent, OutboundEvent, StatusEvent
from contracts.sending import SCHEMA_EXTRAS, SendAccepted, SendText
from contracts.sessions import (
    MarkedRead,
    MarkRead,
    PairRequest,
    PairStarted,
    Session,
    SessionCreate,
    SessionDeleted,
    SessionList,
    SessionListRequest,
)
from contracts.webhooks import Webhook, WebhookAlert, WebhookCreate, WebhookDeleted, WebhookList

# What travels on each subject pattern of contract v1 (the prefix is configurable). Every
# reply is either the `Ok` named here or `Err`.
MESSAGES: dict[str, tuple[Any, Any]] = {
    "wa.session.create": (SessionCreate, Ok[Session]),
    "wa.session.list": (SessionListRequest, Ok[SessionList]),
    "wa.session.<sid>.get": (dict, Ok[Session]),
    "wa.session.<sid>.pair": (PairRequest, Ok[PairStarted]),
    "wa.session.<sid>.logout": (dict, Ok[Session]),
    "wa.session.<sid>.delete": (dict, Ok[SessionDeleted]),
    "wa.session.<sid>.reconnect": (dict, Ok[Session]),
    "wa.session.<sid>.read": (MarkRead, Ok[MarkedRead]),
    "wa.send.<sid>": (SendText, Ok[SendAccepted]),
    "wa.evt.<sid>.status": (StatusEvent, None),
    "wa.evt.<sid>.message": (MessageEvent, None),
    "wa.evt.<sid>.outbound": (OutboundEvent, None),
    "wa.evt.<sid>.alert": (AlertEvent, None),
    "wa.webhook.create": (WebhookCreate, Ok[Webhook]),
    "wa.webhook.list": (dict, Ok[WebhookList]),
    "wa.webhook.<wid>.get": (dict, Ok[Webhook]),
    "wa.webhook.<wid>.pause": (dict, Ok[Webhook]),
    "wa.webhook.<wid>.resume": (dict, Ok[Webhook]),
    "wa.webhook.<wid>.delete": (dict, Ok[WebhookDeleted]),
    "wa.webhook.<wid>.alert": (WebhookAlert, None),
}


def tidy(schema: Any) -> Any:
    """The schema with every description dedented: msgspec's own dedenting of docstrings
    changed in 0.23, and the committed documents must not depend on its version."""
    if isinstance(schema, dict):
        return {
            key: inspect.cleandoc(value) if key == "description" and isinstance(value, str) else tidy(value)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [tidy(value) for value in schema]
    return schema


def document() -> dict[str, Any]:
    types = [Err, *(t for pair in MESSAGES.values() for t in pair if t is not None)]
    schemas, components = msgspec.json.schema_components(types, ref_template="#/$defs/{name}")
    for name, extra in SCHEMA_EXTRAS.items():
        components[name].update(extra)
    error, *found_list = schemas
    found = iter(found_list)
    subjects = {}
    for subject, (_, reply) in MESSAGES.items():
        entry = {"body": next(found)}
        if reply is not None:
            entry["reply"] = {"oneOf": [next(found), error]}
        subjects[subject] = entry
    return tidy({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "WhatsApp session gateway, public NATS contract v1",
        "subjects": subjects,
        "$defs": components,
    })
