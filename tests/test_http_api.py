"""The HTTP API end to end, on the processes `make run` starts: a session paired and a
message sent over HTTP with a webhook receiver on loopback getting every event of it; API
keys and tenants; bad bodies; idempotent sends."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from contracts.types import utcnow
from services.api_keys.store import ApiKeyStore
from services.common import mongo
from services.devstack.probes import EventTap, call_ok, wait_until
from services.devstack.processes import GATEWAY_SERVICE, NODE_SERVICE, Stack
from services.devstack.receiver import Receiver

pytestmark = pytest.mark.slow

PHOTO = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
SID = "shop"


async def gateway_client(stack: Stack, key: str, **overrides: Any) -> httpx.AsyncClient:
    proc = stack.start(GATEWAY_SERVICE, **overrides)
    client = httpx.AsyncClient(base_url=proc.http_url, headers={"x-api-key": key}, timeout=60)

    async def serving() -> bool:
        return (await client.get("/healthz")).status_code == 200

    await wait_until(serving, timeout=60, what="the http-gateway")
    return client


async def until(client: httpx.AsyncClient, path: str, accept: Any, timeout: float = 30.0) -> dict[str, Any]:
    """GET `path` until its JSON answer passes `accept`."""

    async def answer() -> dict[str, Any] | None:
        reply = await client.get(path)
        body = reply.json() if reply.status_code == 200 else None
        return body if body is not None and accept(body) else None

    return await wait_until(answer, timeout=timeout, what=f"GET {path}")


@pytest.fixture
async def api(stack: Stack, settings, db, nc) -> AsyncIterator[httpx.AsyncClient]:
    """Every service, and a client of the http-gateway holding a key of the tenant."""
    _, key = await ApiKeyStore(db).create(settings.tenant, "tests", utcnow())
    for service in ("wa-sim", "outbound-queue", "persistence"):
        stack.start(service)
    stack.start(NODE_SERVICE, "node1")
    client = await gateway_client(stack, key, webhook_private_urls=True, webhook_sync_interval=0.3)
    yield client
    await client.aclose()


async def test_a_session_is_paired_and_a_message_sent_over_http_with_every_event_posted_signed_in_order(
    api: httpx.AsyncClient, nc, settings
) -> None:
    s = settings.subjects
    tap = await EventTap(nc, settings).start()
    receiver = await Receiver().start()
    hook = (await api.post("/v1/webhooks", json={"url": receiver.url, "sessions": [SID]})).json()
    assert hook["state"] == "active" and hook["secret"].startswith("whsec_")

    created = await api.post("/v1/sessions", json={"session_id": SID, "label": "Shop"})
    assert created.status_code == 201 and created.json()["state"] == "created"
    again = await api.post("/v1/sessions", json={"session_id": SID})
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert (await api.post("/v1/sessions", json={"session_id": "zz-last"})).status_code == 201
    page = (await api.get("/v1/sessions", params={"limit": 1})).json()
    assert [x["session_id"] for x in page["sessions"]] == [SID] and page["next"] == SID
    rest = (await api.get("/v1/sessions", params={"after": page["next"]})).json()
    assert [x["session_id"] for x in rest["sessions"]] == ["zz-last"] and "next" not in rest
    assert (await api.get("/v1/sessions", params={"limit": 0})).json()["error"]["code"] == "invalid_request"
    started = await api.post(f"/v1/sessions/{SID}/pair")
    assert started.status_code == 200 and started.json()["state"] == "pairing", started.text
    pairing = await until(api, f"/v1/sessions/{SID}/qr", lambda p: "qr" in p)
    png = await api.get(f"/v1/sessions/{SID}/qr.png")
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
    svg = await api.get(f"/v1/sessions/{SID}/qr.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content
    assert pairing["state"] == "pairing"
    await call_ok(nc, s.sim(SID, "scan"), {})  # the simulated phone scans it
    await until(api, f"/v1/sessions/{SID}/qr", lambda p: p["state"] == "connected" and "qr" not in p)
    assert (await api.get(f"/v1/sessions/{SID}/qr.png")).status_code == 404

    send = {"id": "h-1", "to": "15550001111", "text": "hello over HTTP"}
    first = await api.post(f"/v1/sessions/{SID}/messages", json=send)
    assert first.status_code == 202 and first.json() == {"id": "h-1", "duplicate": False, "state": "queued"}
    retried = await api.post(f"/v1/sessions/{SID}/messages", json=send)  # a client retrying its POST
    assert retried.status_code == 202 and retried.json() == {"id": "h-1", "duplicate": True, "state": "queued"}
    record = await until(api, f"/v1/sessions/{SID}/messages/h-1", lambda r: r["state"] == "delivered")
    assert [step["state"] for step in record["history"]] == ["queued", "sent", "delivered"]
    stats = await api.get(f"/v1/sessions/{SID}/queue")
    assert stats.json()["depth"] == 0

    photo = {"base64": base64.b64encode(PHOTO).decode(), "mime": "image/png"}
    await call_ok(nc, s.sim(SID, "inbound"), {"from": "15550002222", "type": "image", "text": "look", "media": photo})
    inbound = await until(api, f"/v1/sessions/{SID}/history/messages", lambda page: page["messages"])
    media_id = inbound["messages"][0]["media"]["media_id"]
    file = await api.get(f"/v1/sessions/{SID}/media/{media_id}")
    assert file.status_code == 200 and file.headers["content-type"] == "image/png"
    assert hashlib.sha256(file.content).hexdigest() == inbound["messages"][0]["media"]["sha256"]
    assert (await api.get(f"/v1/sessions/other/media/{media_id}")).status_code == 404

    # Bad bodies: the contract's own messages.
    malformed = await api.post(f"/v1/sessions/{SID}/messages", content=b'{"id": "x", ')
    assert malformed.status_code == 400 and malformed.json()["error"]["message"].startswith("malformed JSON")
    wrong = await api.post(f"/v1/sessions/{SID}/messages", json={"id": "x", "to": "abc", "text": "hi"})
    assert wrong.status_code == 422, wrong.text
    assert wrong.json()["error"] == {
        "code": "invalid_request",
        "message": "to: expected digits of an E.164 number (6-15 digits), or a full JID, got 'abc'",
    }
    bad_sid = await api.get("/v1/sessions/no.such")
    assert bad_sid.status_code == 422 and bad_sid.json()["error"]["message"].startswith("sid: expected a session id")
    assert (await api.get("/v1/sessions/nosuch")).status_code == 404
    nowhere = await api.get("/v1/nowhere")
    assert nowhere.status_code == 404 and nowhere.json()["error"] == {"code": "not_found", "message": "GET /v1/nowhere: Not Found"}

    # The receiver got every event of the session, signed, in the stream's order.
    wanted = lambda: [e["event_id"] for subject, e in tap.events if e.get("session_id") == SID]  # noqa: E731
    await wait_until(lambda: [d.webhook_id for d in receiver.answered] == wanted(), timeout=30, what="every event")
    await tap.stop()
    await receiver.stop()
    verifier = Webhook(hook["secret"])
    kinds = []
    for delivery in receiver.deliveries:
        payload = verifier.verify(delivery.body, delivery.headers)
        kinds.append(payload["type"])
    assert [d.webhook_id for d in receiver.answered] == wanted()
    assert {"status", "message", "outbound"} <= set(kinds)
    outbound = [d.payload["data"]["state"] for d in receiver.answered if d.payload["type"] == "outbound"]
    assert outbound == ["queued", "sent", "delivered"]


async def test_keys_are_bound_to_their_tenant_and_sessions_of_another_tenant_are_not_found(
    settings, db, tmp_path
) -> None:
    # Two deployments on the same servers stand for two tenants (prefixes, databases).
    other = settings.model_copy(
        update={"prefix": settings.prefix + "b", "sim_prefix": settings.sim_prefix + "b", "mongo_db": settings.mongo_db + "_b", "tenant": "b"}
    )  # fmt: skip
    mine, theirs = Stack(settings, tmp_path / "logs-a"), Stack(other, tmp_path / "logs-b")
    other_client, other_db = mongo.connect(other, "tests")
    keys, other_keys = ApiKeyStore(db), ApiKeyStore(other_db)
    _, key = await keys.create(settings.tenant, "a", utcnow())
    _, their_key = await other_keys.create("b", "b", utcnow())
    _, misbound = await keys.create("b", "made for b, stored in a", utcnow())
    revoked_id, revoked = await keys.create(settings.tenant, "revoked", utcnow())
    await keys.revoke(revoked_id.key_id, utcnow())
    try:
        for stack in (mine, theirs):
            stack.start(NODE_SERVICE, "node1")
        a = await gateway_client(mine, key)
        b = await gateway_client(theirs, their_key)

        created = await a.post("/v1/sessions", json={"session_id": "alpha"})
        assert created.status_code == 201, created.text
        assert (await a.get("/v1/sessions/alpha")).json()["session_id"] == "alpha"
        assert (await b.get("/v1/sessions/alpha")).status_code == 404  # b's own key, a's session
        assert (await b.get("/v1/sessions")).json() == {"sessions": []}

        unauthenticated = await a.get("/v1/sessions", headers={"x-api-key": ""})
        assert unauthenticated.status_code == 401 and "www-authenticate" in unauthenticated.headers
        assert unauthenticated.json()["error"]["code"] == "unauthorized"
        for wrong in (their_key, misbound, revoked, "wak_000000000000_" + "A" * 43, "nonsense"):
            assert (await a.get("/v1/sessions", headers={"x-api-key": wrong})).status_code == 401, wrong
        assert (await b.get("/v1/sessions", headers={"x-api-key": key})).status_code == 401
        bearer = await a.get("/v1/sessions", headers={"x-api-key": "", "authorization": f"Bearer {key}"})
        assert bearer.status_code == 200

        empty = await a.post("/v1/sessions", content=b"")
        assert empty.status_code == 400 and empty.json()["error"]["message"] == "empty body: expected a JSON object"
        bad = await a.post("/v1/sessions", json={"session_id": "a.b"})
        assert bad.status_code == 422
        assert bad.json()["error"]["message"] == "session_id: expected a session id of 1-64 characters A-Z a-z 0-9 _ -, got 'a.b'"
        await a.aclose()
        await b.aclose()
    finally:
        mine.stop_all()
        theirs.stop_all()
        await other_client.drop_database(other.mongo_db)
        await mongo.close(other_client)
