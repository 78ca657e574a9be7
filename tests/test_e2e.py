"""Contract v1 end to end, on the processes `make run` starts (issue #2's acceptance)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from services.devstack.probes import EventTap, call, call_ok, wait_until
from services.devstack.processes import MakeRun
from services.devstack.scenarios import pair
from services.devstack.servers import free_port

pytestmark = pytest.mark.slow


async def test_pair_send_receive_and_survive_a_full_restart(settings, nc, tmp_path) -> None:
    s = settings.subjects
    settings = settings.model_copy(update={"http_port": free_port()})
    stack = MakeRun(settings, tmp_path / "devstack.log")
    tap = await EventTap(nc, settings).start()
    stack.start()
    try:
        await wait_until(lambda: call(nc, s.session_list, {}, timeout=2), timeout=60, what="the session API")
        # The HTTP API, with the key `make run` wrote on its first start.
        key = (settings.data_dir / "api-key").read_text().strip()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}", headers={"x-api-key": key}) as http:
            listed = await wait_until(lambda: http.get("/v1/sessions"), timeout=60, what="the HTTP API")
            assert listed.status_code == 200 and listed.json() == {"sessions": []}
        created = await call_ok(nc, s.session_create, {"session_id": "demo", "label": "Demo shop"})
        assert created["state"] == "created" and created["label"] == "Demo shop"

        await pair(nc, settings, tap, "demo")
        states = tap.states("demo")
        assert states.index("pairing") < states.index("connected")
        session = await call_ok(nc, s.session("demo", "get"))
        assert session["state"] == "connected" and session["jid"] and session["node"]

        accepted = await call_ok(nc, s.send("demo"), {"id": "m-1", "to": "15550001111", "text": "hello"})
        assert accepted == {"id": "m-1", "state": "queued", "duplicate": False}
        await tap.wait_for("demo", "outbound", lambda e: e["id"] == "m-1" and e["state"] == "delivered")
        lifecycle = [e["state"] for e in tap.of("demo", "outbound") if e["id"] == "m-1"]
        assert lifecycle == ["queued", "sent", "delivered"]
        again = await call_ok(nc, s.send("demo"), {"id": "m-1", "to": "15550001111", "text": "hello"})
        assert again["duplicate"] is True

        await call_ok(nc, s.sim("demo", "inbound"), {"from": "15550002222", "text": "hi"})
        inbound = await tap.wait_for("demo", "message", lambda e: e["text"] == "hi")
        assert inbound["sender"].startswith("15550002222") and not inbound["from_me"]

        async def stored() -> list:
            page = await call_ok(nc, s.history("demo", "messages"), {})
            return page["messages"]

        messages = await wait_until(stored, what="the message in history")
        assert messages[0]["message_id"] == inbound["message_id"]
    finally:
        code = await stack.stop()
    assert code is not None, "make run did not stop on Ctrl-C:\n" + stack.logs()[-3000:]
    # The node stops first, while the services its handoff talks to still answer.
    stops = [line.split("|")[1].split()[0] for line in stack.logs().splitlines() if "stopped (rc=" in line]
    assert stops[0] == "session-actor.1" and len(stops) == 6, stops

    # Everything stopped. Start again: the session comes back without pairing.
    seen = len(tap.of("demo", "status"))
    stack.start()
    try:
        back = await tap.wait_state("demo", "connected", timeout=60, after=seen)
        assert back["state"] == "connected"
        assert "pairing" not in tap.states("demo")[seen:]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}", headers={"x-api-key": key}) as http:
            found = await wait_until(lambda: http.get("/v1/sessions/demo"), timeout=60, what="the HTTP API")
            assert found.status_code == 200 and found.json()["state"] == "connected"
    finally:
        await stack.stop()
    await tap.stop()
    assert stack.logs().count(f"API key (shown once; kept in {settings.data_dir.resolve() / 'api-key'}): {key}") == 1


@pytest.fixture
async def running(stack, nc, settings):
    stack.start_all(nodes=1)
    tap = await EventTap(nc, settings).start()
    await wait_until(lambda: call(nc, settings.subjects.session_list, {}, timeout=2), timeout=60, what="services")
    await pair(nc, settings, tap, "good")
    yield tap
    await tap.stop()


BAD_BODIES = [
    (b"{not json", "malformed JSON"),
    (b'"a string"', "expected object"),
    (b"\xff", "malformed JSON"),
]


async def test_every_request_subject_answers_bad_input_with_the_envelope(running, stack, nc, settings) -> None:
    s = settings.subjects
    subjects = [
        s.session_create,
        s.session_list,
        s.session("good", "get"),
        s.session("good", "pair"),
        s.session("good", "logout"),
        s.session("good", "delete"),
        s.session("good", "reconnect"),
        s.send("good"),
        s.history("good", "messages"),
    ]
    for subject in subjects:
        for body, words in BAD_BODIES:
            reply = await call(nc, subject, body)
            assert not reply.ok and reply.error.code == "invalid_request", (subject, body, reply)
            assert words in reply.error.message, (subject, reply.error.message)

    cases = [
        (s.session_create, {"session_id": 7}, "session_id: expected str"),
        (s.session_create, {"session_id": "a b"}, "session_id: expected a session id"),
        (s.session_create, {"session_id": "x", "label": "l" * 300}, "label: too long"),
        (s.session("good", "pair"), {"method": "code", "phone": "12ab"}, "phone: expected digits"),
        (s.session("good", "pair"), {"method": "carrier-pigeon"}, "method: invalid value"),
        (s.send("good"), {"id": "1", "to": "15550001111", "text": "x" * 65537}, "text: too long"),
        (s.send("good"), {"id": "", "to": "15550001111", "text": "x"}, "id: too short"),
        (s.send("good"), {"id": "1", "to": "not-a-number", "text": "x"}, "to: expected digits"),
        (s.send("good"), {"id": "1", "text": "x"}, "to: required field is missing"),
    ]
    for subject, body, words in cases:
        reply = await call(nc, subject, body)
        assert not reply.ok and reply.error.code == "invalid_request", (subject, body, reply)
        assert words in reply.error.message, (subject, reply.error.message)

    unknown = [s.session("ghost", op) for op in ("get", "logout", "delete", "reconnect")]
    for subject in [*unknown, s.send("ghost")]:
        reply = await call(nc, subject, {"id": "1", "to": "15550001111", "text": "x"} if ".send." in subject else {})
        assert not reply.ok and reply.error.code == "not_found", (subject, reply)
    reply = await call(nc, s.session("ghost", "pair"), {"method": "qr"})
    assert reply.error.code == "not_found"
    reply = await call(nc, s.session_create, {"session_id": "good"})
    assert reply.error.code == "conflict"

    # Invalid session ids in the subject itself (valid NATS tokens, invalid ids).
    for subject in (s.session("b%40d", "get"), s.send("x" * 65)):
        reply = await call(nc, subject, {"id": "1", "to": "15550001111", "text": "x"})
        assert not reply.ok and reply.error.code == "invalid_request", (subject, reply)

    # Nothing crashed and the good session still works end to end.
    assert all(proc.alive for proc in stack.procs.values())
    await call_ok(nc, s.send("good"), {"id": "after", "to": "15550001111", "text": "still here"})
    await running.wait_for("good", "outbound", lambda e: e["id"] == "after" and e["state"] == "sent")


async def test_a_send_without_reply_subject_reports_its_failure_as_an_event(running, nc, settings) -> None:
    await nc.publish(settings.subjects.send("good"), b'{"id": "no-reply", "to": "bad", "text": "x"}')
    failed = await running.wait_for("good", "outbound", lambda e: e["id"] == "no-reply")
    assert failed["state"] == "failed" and failed["error"]["code"] == "invalid_request"
    await asyncio.sleep(0)
