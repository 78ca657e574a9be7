"""A session actor driven with fakes for its narrow host (tests/fakes.py): the connection
state machine's effects carried out, status reports fenced, commands answered, and a stop
that leaves nothing behind. The same actor runs across processes in test_ownership.py and
test_e2e.py; here each path is checked in milliseconds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from contracts.alerts import AlertEvent
from contracts.envelope import ContractError
from contracts.events import StatusEvent
from services.common.bus import encode
from services.credentials.vault import Restored
from services.devstack.probes import wait_until
from services.session_actor import machine as m
from services.session_actor.actor import SessionActor
from services.session_actor.adapters.base import InboundMedia, InboundMessage, SendError
from services.session_actor.commands import MOVING
from tests.fakes import ActorWorld

SID = "s1"
TOKEN = "00000000000001.0000000000000007"


class Running:
    def __init__(self, world: ActorWorld, actor: SessionActor) -> None:
        self.world = world
        self.actor = actor
        self.task = asyncio.create_task(actor.run())

    async def command(self, op: str, body: object = None) -> object:
        handle = self.world.commands.handlers[SID]
        return await handle(op, encode({} if body is None else body))

    async def reached(self, state: str) -> None:
        await wait_until(lambda: state in self.world.events.states(), timeout=5, what=f"{SID} reaching {state}")

    async def ended(self) -> None:
        await asyncio.wait_for(self.task, 5)


@pytest.fixture
def world(tmp_path: Path) -> ActorWorld:
    return ActorWorld(tmp_path)


@pytest.fixture
async def start(world: ActorWorld) -> AsyncIterator[object]:
    running: list[Running] = []

    def start_actor(state: str = "created", linked: bool = False) -> Running:
        world.sessions.add(SID, state)
        if linked:
            world.vault.stores[SID] = Restored(b"linked store", 1, "digest")
        running.append(Running(world, SessionActor(world.host(), SID, 7, TOKEN)))
        return running[-1]

    yield start_actor
    for r in running:
        r.actor.abort()
        await asyncio.wait_for(r.task, 5)


async def test_a_linked_session_connects_and_reports_under_its_token(world: ActorWorld, start: object) -> None:
    r = start(state="connected", linked=True)  # type: ignore[operator]
    await r.reached("connected")
    status = [e for e in world.events.events if e.state == "connected"][-1]
    assert status.token == TOKEN and status.node == "node-a" and status.jid == world.client.jid
    assert world.sessions.docs[SID]["state"] == "connected"
    assert world.sessions.docs[SID]["owner_token"] == TOKEN
    assert world.client.store_path.read_bytes() == b"linked store"  # restored before connecting
    await wait_until(lambda: world.vault.saves == [world.client.store], what="the credentials saved")


async def test_pairing_by_code_answers_with_the_code_once_the_first_qr_is_shown(
    world: ActorWorld, start: object
) -> None:
    r = start()  # type: ignore[operator]
    await wait_until(lambda: SID in world.commands.handlers, what="the actor listening")
    answer = await r.command("pair", {"method": "code", "phone": "15550001111"})
    assert answer.pair_code == "ABCD-EFGH"  # type: ignore[attr-defined]
    await wait_until(lambda: any(e.pair_code == "ABCD-EFGH" for e in world.events.events), what="the code event")


async def test_a_pair_request_for_a_linked_session_is_a_conflict(world: ActorWorld, start: object) -> None:
    r = start(state="connected", linked=True)  # type: ignore[operator]
    await r.reached("connected")
    with pytest.raises(ContractError) as refused:
        await r.command("pair", {"method": "qr"})
    assert refused.value.code == "conflict"


async def test_logout_unlinks_destroys_the_credentials_and_reports_logged_out(
    world: ActorWorld, start: object
) -> None:
    r = start(state="connected", linked=True)  # type: ignore[operator]
    await r.reached("connected")
    linked_client = world.client
    assert await r.command("logout") == {"state": "logged_out"}
    assert "logout" in linked_client.calls
    assert world.vault.destroyed == [SID] and SID not in world.vault.stores
    assert world.sessions.docs[SID]["state"] == "logged_out"
    assert world.client is not linked_client and not world.client.store_path.exists()  # fresh, unpaired


async def test_reconnect_of_an_unpaired_session_says_to_pair_first(world: ActorWorld, start: object) -> None:
    r = start()  # type: ignore[operator]
    await wait_until(lambda: SID in world.commands.handlers, what="the actor listening")
    with pytest.raises(ContractError) as refused:
        await r.command("reconnect")
    assert refused.value.code == "session_unavailable" and "pair it first" in refused.value.message


async def test_an_unknown_operation_is_answered_not_found(world: ActorWorld, start: object) -> None:
    r = start()  # type: ignore[operator]
    await wait_until(lambda: SID in world.commands.handlers, what="the actor listening")
    with pytest.raises(ContractError) as refused:
        await r.command("explode")
    assert refused.value.code == "not_found"


async def test_a_replaced_stream_of_a_session_owned_elsewhere_stops_the_actor_without_a_trace(
    world: ActorWorld, start: object
) -> None:
    r = start(state="connected", linked=True)  # type: ignore[operator]
    await r.reached("connected")
    world.node.owner = False  # the ownership view names another node now
    reports_before = len(world.sessions.reports)
    r.actor.emit(m.StreamReplaced(0.0))
    await r.ended()
    assert [x["state"] for x in world.sessions.reports[reports_before:]] == ["disconnected"]
    assert world.vault.destroyed == []  # the credentials belong to the new owner now


async def test_a_status_write_refused_by_a_newer_owner_stops_the_actor(world: ActorWorld, start: object) -> None:
    r = start(state="connected", linked=True)  # type: ignore[operator]
    await r.reached("connected")
    world.sessions.docs[SID]["owner_token"] = "99999999999999.0000000000000001"  # a newer claim fenced
    published = len(world.events.events)
    r.actor.emit(m.Disconnected(0.0, "network"))
    await r.ended()
    assert len(world.events.events) == published  # the refused state was never announced


async def test_without_the_lease_nothing_is_reported(world: ActorWorld, start: object) -> None:
    r = start(state="connected", linked=True)  # type: ignore[operator]
    await r.reached("connected")
    world.node.lease_valid = False
    published = len(world.events.events)
    r.actor.emit(m.Disconnected(0.0, "network"))
    await asyncio.sleep(0.1)
    assert len(world.events.events) == published


async def test_credentials_that_cannot_be_opened_end_the_actor_with_the_reason_for_its_node(
    world: ActorWorld, start: object
) -> None:
    world.vault.broken = "no version decrypts with the configured keys"
    r = start(state="connected")  # type: ignore[operator]
    await r.ended()  # its node hands the session back: another node's keys may open them
    stopped = [e for e in world.events.events if isinstance(e, StatusEvent) and e.state == "stopped"][-1]
    assert stopped.reason.startswith("credentials_unusable: no version decrypts")
    assert r.actor.unusable == stopped.reason
    assert world.clients.created == []  # nothing connects on unusable credentials
    assert SID not in world.commands.handlers
    # The operator is told, on the bus: the alert follows the status event it comes from.
    (alert,) = [e for e in world.events.events if isinstance(e, AlertEvent)]
    assert (alert.kind, alert.severity, alert.state) == ("credentials_unusable", "critical", "stopped")
    assert alert.event_id == f"{stopped.event_id}:alert" and alert.message == stopped.reason


async def test_an_inbound_message_becomes_an_event_and_is_acknowledged(world: ActorWorld, start: object) -> None:
    r = start(state="connected", linked=True)  # type: ignore[operator]
    await r.reached("connected")
    acked = asyncio.Event()

    async def ack() -> None:
        acked.set()

    at = datetime(2026, 12, 6, tzinfo=UTC)
    r.actor.emit(InboundMessage("m1", "15550002222@s.whatsapp.net", "15550002222@s.whatsapp.net", False, "text", at, "hi", ack=ack))
    await asyncio.wait_for(acked.wait(), 5)
    message = next(e for e in world.events.events if type(e).__name__ == "MessageEvent")
    assert (message.event_id, message.text, message.timestamp) == (f"{SID}:msg:m1", "hi", at)


async def test_a_graceful_stop_flushes_credentials_reports_and_answers_waiting_commands_moving(
    world: ActorWorld, start: object
) -> None:
    r = start(state="connected", linked=True)  # type: ignore[operator]
    await r.reached("connected")
    world.client.store = b"newer store"
    r.actor.stop("rebalancing to another node")
    waiting = asyncio.create_task(r.actor.command("reconnect", b"{}"))
    await r.ended()
    assert world.vault.saves[-1] == b"newer store"  # flushed on the way out
    last = world.sessions.reports[-1]
    assert last["state"] == "disconnected" and last["reason"] == "rebalancing to another node"
    with pytest.raises(ContractError) as moving:
        await waiting
    assert moving.value.code == MOVING
    assert not world.client.store_path.exists() and SID not in world.commands.handlers


async def test_a_command_to_an_actor_that_is_stopping_is_answered_moving_at_once(
    world: ActorWorld, start: object
) -> None:
    """Regression: a command that arrived during a graceful stop waited for the whole stop
    (flush, disconnect, report); under load the caller's own timeout ran out first (a pair
    request of the ownership tests, 30 s). It is answered at once: the caller asks the next
    owner."""
    r = start(state="connected", linked=True)  # type: ignore[operator]
    await r.reached("connected")
    closing, closed = asyncio.Event(), asyncio.Event()

    async def slow_disconnect() -> None:
        closing.set()
        await closed.wait()

    world.client.disconnect = slow_disconnect  # type: ignore[method-assign]
    r.actor.stop("rebalancing to another node")
    await asyncio.wait_for(closing.wait(), 5)
    try:
        with pytest.raises(ContractError) as moving:
            await asyncio.wait_for(r.command("reconnect"), 0.5)
        assert moving.value.code == MOVING
    finally:
        closed.set()


async def test_an_inbound_file_reaches_the_media_bucket_before_its_event(world: ActorWorld, start: object) -> None:
    r = start(state="connected", linked=True)  # type: ignore[operator]
    await r.reached("connected")
    acked = asyncio.Event()

    async def ack() -> None:
        acked.set()

    async def download() -> bytes:
        return b"%PDF-1.7 the report"

    chat = "15550002222@s.whatsapp.net"
    media = InboundMedia(mime="application/pdf", download=download, filename="q3.pdf")
    r.actor.emit(InboundMessage("m2", chat, chat, False, "document", datetime(2026, 12, 6, tzinfo=UTC), media=media, ack=ack))
    await asyncio.wait_for(acked.wait(), 5)
    message = next(e for e in world.events.events if type(e).__name__ == "MessageEvent")
    assert message.media.media_id == f"{SID}/m2" and message.media.filename == "q3.pdf"
    assert world.media.objects[f"{SID}/m2"] == b"%PDF-1.7 the report"


async def test_read_marks_go_out_at_once_and_only_while_connected(world: ActorWorld, start: object) -> None:
    r = start(state="connected", linked=True)  # type: ignore[operator]
    await r.reached("connected")
    body = {"chat": "120363000000000001@g.us", "message_ids": ["A", "B"], "sender": "15550002222"}
    done = await r.command("read", body)
    assert msgspec.to_builtins(done) == {"chat": "120363000000000001@g.us", "message_ids": ["A", "B"]}
    assert world.client.read == [("120363000000000001@g.us", ("A", "B"), "15550002222@s.whatsapp.net")]
    world.client.failures.append(SendError("send_failed", "server said no"))
    with pytest.raises(ContractError) as refused:
        await r.command("read", {"chat": "15550002222", "message_ids": ["C"]})
    assert refused.value.code == "session_unavailable" and "server said no" in refused.value.message
    with pytest.raises(ContractError) as bad:
        await r.command("read", {"chat": "15550002222", "message_ids": []})
    assert bad.value.code == "invalid_request"


async def test_a_session_that_is_not_connected_refuses_read_marks_at_once(
    world: ActorWorld, start: object
) -> None:
    r = start(state="created")  # type: ignore[operator]
    await wait_until(lambda: SID in world.commands.handlers, what="the actor listening")
    with pytest.raises(ContractError) as offline:
        await r.command("read", {"chat": "15550002222", "message_ids": ["D"]})
    assert offline.value.code == "session_unavailable" and "only while it is connected" in offline.value.message
    assert world.client.read == []


async def test_the_fourth_pair_request_within_two_minutes_is_rate_limited_with_the_time_to_wait(
    world: ActorWorld, start: object
) -> None:
    r = start()  # type: ignore[operator]
    await wait_until(lambda: SID in world.commands.handlers, what="the actor listening")
    for _ in range(3):
        answer = await r.command("pair", {"method": "code", "phone": "15550001111"})
        assert answer.pair_code == "ABCD-EFGH"  # type: ignore[attr-defined]
    with pytest.raises(ContractError) as refused:
        await r.command("pair", {"method": "code", "phone": "15550001111"})
    assert refused.value.code == "rate_limited" and "retry in" in refused.value.message
    assert 110 < refused.value.retry_after <= 120  # type: ignore[operator]
    reply = msgspec.json.decode(encode(refused.value.reply()))
    assert reply["error"]["code"] == "rate_limited" and reply["error"]["retry_after"] > 110
