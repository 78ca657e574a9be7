"""The simulator client adapter against the simulated WhatsApp service, over a real NATS.

The simulator runs in this process (the same wiring as `python -m services.wa_sim`), except
in the last test, which runs it as its own process and restarts it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import nats.errors
import pytest
from nats.aio.client import Client as NatsClient

from contracts import sim
from contracts.envelope import ContractError, Ok
from contracts.messages import Contact, Edit, Location, MessageParts, Quoted, Reaction, Revoke, SendableParts
from services.common.config import Settings
from services.credentials.vault import check_store
from services.devstack.probes import call, call_ok, wait_until
from services.devstack.processes import Stack
from services.session_actor import machine
from services.session_actor.adapters.base import (
    ClientEvent,
    InboundMessage,
    MediaFetchError,
    MessageRef,
    OfflineSyncCompleted,
    Outgoing,
    OutgoingMedia,
    Receipt,
    SendError,
    StoreChanged,
)
from services.session_actor.adapters.sim import SimClient, SimClientFactory, SimStore
from services.wa_sim.main import build
from services.wa_sim.world import CREDS_ROTATE_EVERY, MEDIA_LIMITS, phone_for

E = TypeVar("E")


class SimServer:
    """The simulator service in this process; `restart` starts over from its state file."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def start(self) -> None:
        self.broker, self.simulator = build(self.settings)
        await self.simulator.start(await self.broker.connect())
        await self.broker.start()
        for sub in self.broker.subscribers:
            await self._until_answering(sub, True)

    async def stop(self) -> None:
        await self.simulator.stop_timers()
        await self.broker.stop()
        self.simulator.save()

    async def restart(self, **settings: Any) -> None:
        """Stop, then start again from the state file (with some settings changed)."""
        await self.stop()
        self.settings = self.settings.model_copy(update=settings)
        await self.start()

    async def pause(self, op: str) -> None:
        """Stop answering one wire operation."""
        sub = self._subscriber(op)
        await sub.stop()
        await self._until_answering(sub, False)

    async def resume(self, op: str) -> None:
        sub = self._subscriber(op)
        await sub.start()
        await self._until_answering(sub, True)

    def _subscriber(self, op: str) -> Any:
        subject = self.settings.subjects.sim_wire(op)
        return next(sub for sub in self.broker.subscribers if sub.subject.broker_address == subject)

    async def _until_answering(self, sub: Any, answering: bool) -> None:
        """Wait until the server has taken note of a (un)subscription.

        `flush()` is no barrier here: nats-py writes its PING ahead of commands still buffered.
        """
        subject = sub.subject.broker_address.replace("*", "probe")

        async def settled() -> bool:
            try:
                await self.broker.connection.request(subject, b"{}", timeout=1)
            except nats.errors.NoRespondersError:
                return not answering
            return answering

        await wait_until(settled, timeout=5, what=f"{subject} answering={answering}")


@pytest.fixture
async def wasim(settings: Settings) -> AsyncIterator[SimServer]:
    server = SimServer(settings)
    await server.start()
    yield server
    await server.stop()


class Events:
    """What one client emitted, in order."""

    def __init__(self) -> None:
        self.items: list[ClientEvent] = []

    def __call__(self, event: ClientEvent) -> None:
        self.items.append(event)

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.items if isinstance(e, kind)]

    async def next(self, kind: type[E], after: int = 0, match: Callable[[E], bool] = lambda e: True) -> E:
        """The first `kind` event among those emitted after the first `after` ones."""

        def found() -> E | None:
            return next((e for e in self.items[after:] if isinstance(e, kind) and match(e)), None)

        try:
            return await wait_until(found, timeout=5, what=kind.__name__)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; events: {self.items}") from None


class Harness:
    def __init__(self, nc: NatsClient, settings: Settings, root: Path) -> None:
        self.nc = nc
        self.settings = settings
        self.root = root
        self.factories: list[SimClientFactory] = []
        self.clients: list[SimClient] = []

    async def factory(self) -> SimClientFactory:
        """A node's factory, keepalive running."""
        factory = SimClientFactory(self.nc, self.settings)
        await factory.start()
        self.factories.append(factory)
        return factory

    async def client(
        self, sid: str, store: str | None = None, factory: SimClientFactory | None = None
    ) -> tuple[SimClient, Events]:
        events = Events()
        if factory is None:
            factory = self.factories[0] if self.factories else await self.factory()
        client = factory.create(sid, self.root / (store or sid) / "store.db", events, lambda: 42.0)
        self.clients.append(client)
        return client, events

    async def paired(self, sid: str) -> tuple[SimClient, Events]:
        """A client of `sid`, paired by QR code and connected."""
        client, events = await self.client(sid)
        await client.connect()
        await events.next(machine.QrShown)
        await call_ok(self.nc, self.settings.subjects.sim(sid, "scan"))
        await events.next(machine.Connected)
        return client, events

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for factory in self.factories:
            await factory.stop()


@pytest.fixture
async def harness(
    nc: NatsClient, settings: Settings, tmp_path: Path, wasim: SimServer
) -> AsyncIterator[Harness]:
    running = Harness(nc, settings, tmp_path / "stores")
    yield running
    await running.close()


async def stats(nc: NatsClient, settings: Settings, sid: str) -> sim.SessionStats:
    data = await call_ok(nc, settings.subjects.sim_stats, {"session_id": sid})
    return sim.SessionStats(**data["sessions"][sid])


def copy_store(client: SimClient, harness: Harness, name: str) -> None:
    """Another process restored the same credentials (e.g. from the vault)."""
    target = harness.root / name / "store.db"
    target.parent.mkdir(parents=True)
    shutil.copy(client.store_path, target)


# ----------------------------------------------------------------------------- pairing


async def test_qr_codes_rotate_and_pairing_ends_silently(harness: Harness, wasim: SimServer) -> None:
    # Pairing lasts 1 s here: 3 codes, the first for 0.5 s, then 0.25 s each.
    await wasim.restart(sim_qr_first=0.5, sim_qr_next=0.25, sim_qr_codes=3)
    client, events = await harness.client("alice")
    await client.connect()
    await events.next(machine.Disconnected)
    codes = [e.code for e in events.of(machine.QrShown)]
    assert len(set(codes)) == 3, events.items
    # After the last code expired the server forgot the connection without a word; the
    # client learnt it from its keepalive (the machine ignores that while pairing).
    reply = await call(harness.nc, harness.settings.subjects.sim("alice", "scan"))
    assert reply.error is not None and reply.error.code == "not_found"


async def test_scan_pairs_connects_and_writes_the_store(harness: Harness) -> None:
    client, events = await harness.client("alice")
    await client.connect()
    await events.next(machine.QrShown)
    scanned = await call_ok(harness.nc, harness.settings.subjects.sim("alice", "scan"))
    jid = f"{phone_for('alice')}@s.whatsapp.net"
    assert scanned == {"jid": jid}
    # Events are the machine's own inputs, stamped with the injected clock.
    assert await events.next(machine.PairSucceeded) == machine.PairSucceeded(42.0, jid)
    assert await events.next(machine.Connected) == machine.Connected(42.0, jid)
    await events.next(StoreChanged)  # keys rotated right after pairing
    assert await events.next(OfflineSyncCompleted) == OfflineSyncCompleted(0)
    device = SimStore(client.store_path).read()
    assert device is not None and device.jid == jid and device.key_generation == 2
    check_store(await client.snapshot(), client.device_table)


async def test_pairing_by_phone_code(harness: Harness) -> None:
    client, events = await harness.client("bob")
    await client.connect()
    await events.next(machine.QrShown)
    code = await client.pair_phone("4915112345678")
    assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4}", code)
    await call_ok(harness.nc, harness.settings.subjects.sim("bob", "scan"))
    assert (await events.next(machine.PairSucceeded)).jid == "4915112345678@s.whatsapp.net"


async def test_an_unpaired_client_has_no_snapshot(harness: Harness) -> None:
    client, _ = await harness.client("alice")
    with pytest.raises(FileNotFoundError):
        await client.snapshot()


# ------------------------------------------------------------------- connecting, overlap


async def test_stored_credentials_connect_again(harness: Harness) -> None:
    client, events = await harness.paired("alice")
    await client.disconnect()
    await client.disconnect()  # idempotent
    seen = len(events.items)
    await client.connect()
    await events.next(machine.Connected, after=seen)
    result = await stats(harness.nc, harness.settings, "alice")
    assert (result.connects, result.overlaps) == (2, 0)


async def test_a_second_client_with_the_same_device_replaces_the_first(harness: Harness) -> None:
    first, first_events = await harness.paired("alice")
    copy_store(first, harness, "alice-copy")
    second, second_events = await harness.client("alice", store="alice-copy", factory=await harness.factory())
    await second.connect()
    await second_events.next(machine.Connected)
    await first_events.next(machine.StreamReplaced)
    assert (await stats(harness.nc, harness.settings, "alice")).overlaps == 1
    with pytest.raises(SendError) as info:
        await first.send("15550001111@s.whatsapp.net", Outgoing(text="hi"), "r1")
    assert info.value.code == sim.NOT_CONNECTED and not info.value.permanent


async def test_a_connection_without_keepalives_dies_and_is_no_overlap(harness: Harness) -> None:
    silent_node = await harness.factory()
    first, first_events = await harness.client("alice", factory=silent_node)
    await first.connect()
    await first_events.next(machine.QrShown)
    await call_ok(harness.nc, harness.settings.subjects.sim("alice", "scan"))
    await first_events.next(machine.Connected)
    await silent_node.stop()  # a frozen node: no more keepalives
    copy_store(first, harness, "alice-copy")
    second, second_events = await harness.client("alice", store="alice-copy", factory=await harness.factory())
    await asyncio.sleep(harness.settings.sim_keepalive_timeout + 0.1)
    await second.connect()
    await second_events.next(machine.Connected)
    assert (await stats(harness.nc, harness.settings, "alice")).overlaps == 0
    assert first_events.of(machine.StreamReplaced) == []
    # The frozen node wakes up: its keepalive learns the connection is gone.
    await silent_node.start()
    await first_events.next(machine.Disconnected)


async def test_a_node_without_a_valid_lease_keeps_no_connection_alive(harness: Harness) -> None:
    lease_valid = True
    node = SimClientFactory(harness.nc, harness.settings)
    await node.start(lambda: lease_valid)
    harness.factories.append(node)
    first, first_events = await harness.client("bella", factory=node)
    await first.connect()
    await first_events.next(machine.QrShown)
    await call_ok(harness.nc, harness.settings.subjects.sim("bella", "scan"))
    await first_events.next(machine.Connected)
    # Kept alive past the timeout while the lease is valid...
    await asyncio.sleep(harness.settings.sim_keepalive_timeout + 0.5)
    assert first_events.of(machine.Disconnected) == []
    copy_store(first, harness, "bella-copy")
    # ...and left to expire once it is not: a node waking from a stall refreshes nothing.
    lease_valid = False
    await asyncio.sleep(harness.settings.sim_keepalive_timeout + 0.5)
    second, second_events = await harness.client("bella", store="bella-copy", factory=await harness.factory())
    await second.connect()
    await second_events.next(machine.Connected)
    assert (await stats(harness.nc, harness.settings, "bella")).overlaps == 0
    assert first_events.of(machine.StreamReplaced) == []


async def test_keepalive_failures_are_reported_and_their_end_too(harness: Harness, wasim: SimServer) -> None:
    _, events = await harness.paired("alice")
    await wasim.pause("keepalive")
    await events.next(machine.KeepAliveTimeout)
    await wasim.resume("keepalive")
    await events.next(machine.KeepAliveRestored)
    assert events.of(machine.Disconnected) == []


# ------------------------------------------------------------------------------ sending


async def test_send_receipts_and_stats(harness: Harness) -> None:
    client, events = await harness.paired("alice")
    sent = await client.send("15550001111@s.whatsapp.net", Outgoing(text="hi"), "ref-1")
    assert re.fullmatch(r"3EB0[0-9A-F]{16}", sent.message_id)
    delivered = await events.next(Receipt)
    assert delivered == Receipt("delivered", (sent.message_id,), "15550001111@s.whatsapp.net")
    await call_ok(harness.nc, harness.settings.subjects.sim("alice", "read"), {"message_id": sent.message_id})
    assert (await events.next(Receipt, match=lambda r: r.kind == "read")).message_ids == (sent.message_id,)

    await client.send("15550001111@s.whatsapp.net", Outgoing(text="hi"), "ref-1")  # a duplicate delivery
    result = await stats(harness.nc, harness.settings, "alice")
    assert result.received == {"ref-1": 2}
    assert (result.messages, result.duplicates) == (2, 1)
    everything = await call_ok(harness.nc, harness.settings.subjects.sim_stats)
    assert everything["totals"]["duplicates"] == 1 and "alice" in everything["sessions"]


async def test_send_errors(harness: Harness, wasim: SimServer) -> None:
    client, _ = await harness.paired("alice")
    with pytest.raises(SendError) as info:
        await client.send("0001234567@s.whatsapp.net", Outgoing(text="hi"), "r1")
    assert info.value.code == sim.NOT_ON_WHATSAPP and info.value.permanent
    await wasim.pause("send")  # WhatsApp unreachable: surely not sent, worth retrying
    with pytest.raises(SendError) as info:
        await client.send("15550001111@s.whatsapp.net", Outgoing(text="hi"), "r2")
    assert info.value.code == sim.NOT_CONNECTED and not info.value.permanent and not info.value.ambiguous
    await wasim.resume("send")
    await client.disconnect()
    with pytest.raises(SendError) as info:
        await client.send("15550001111@s.whatsapp.net", Outgoing(text="hi"), "r3")
    assert info.value.code == sim.NOT_CONNECTED
    assert (await stats(harness.nc, harness.settings, "alice")).messages == 0


async def test_send_media_over_the_wire_and_its_errors(harness: Harness) -> None:
    client, events = await harness.paired("alice")
    photo = OutgoingMedia("image", b"\xff\xd8\xff" + bytes(997), "image/jpeg", caption="a cat")
    sent = await client.send("15550001111@s.whatsapp.net", Outgoing(media=photo), "media-1")
    assert (await events.next(Receipt)).message_ids == (sent.message_id,)
    await client.send("15550001111@s.whatsapp.net", Outgoing(text="hi"), "text-1")
    result = await stats(harness.nc, harness.settings, "alice")
    assert result.received == {"media-1": 1, "text-1": 1} and result.messages == 2
    assert (result.media, result.media_bytes) == ({"image": 1}, 1000)
    assert result.media_sha256 == {"media-1": hashlib.sha256(photo.data).hexdigest()}

    # The simulated WhatsApp's own limits (the gateway's are configurable and may be higher).
    huge = OutgoingMedia("image", bytes(MEDIA_LIMITS["image"] + 1), "image/jpeg")
    with pytest.raises(SendError) as info:
        await client.send("15550001111@s.whatsapp.net", Outgoing(media=huge), "media-2")
    assert info.value.code == sim.MEDIA_TOO_LARGE and info.value.permanent
    assert "refuses image files over 16,777,216 bytes" in info.value.message
    with pytest.raises(SendError) as info:
        await client.send("0001234567@s.whatsapp.net", Outgoing(media=photo), "media-3")
    assert info.value.code == sim.NOT_ON_WHATSAPP and info.value.permanent
    await client.disconnect()
    with pytest.raises(SendError) as info:
        await client.send("15550001111@s.whatsapp.net", Outgoing(media=photo), "media-4")
    assert info.value.code == sim.NOT_CONNECTED and not info.value.permanent
    assert (await stats(harness.nc, harness.settings, "alice")).messages == 2


async def test_every_kind_of_message_and_read_marks_over_the_wire(harness: Harness) -> None:
    client, _ = await harness.paired("alice")
    bob = "15550001111@s.whatsapp.net"
    first = await client.send(bob, Outgoing(text="hi"), "t1")
    theirs = MessageRef("3EB0CAFE", from_me=False)
    ours = MessageRef(first.message_id, from_me=True)
    await client.send(bob, Outgoing(text="about that", reply_to=theirs), "t2")
    await client.send(bob, Outgoing(parts=SendableParts(reaction=Reaction(theirs.message_id, "👍")), target=theirs), "r1")
    await client.send(bob, Outgoing(parts=SendableParts(edit=Edit(first.message_id, "hi there")), target=ours), "e1")
    await client.send(bob, Outgoing(parts=SendableParts(location=Location(52.52, 13.405))), "l1")
    await client.send(bob, Outgoing(parts=SendableParts(contact=Contact("Ada", "BEGIN:VCARD\nFN:Ada\nEND:VCARD"))), "c1")
    photo = OutgoingMedia("image", b"\xff\xd8\xff" + bytes(97), "image/jpeg")
    await client.send(bob, Outgoing(media=photo, reply_to=ours), "m1")
    await client.send(bob, Outgoing(parts=SendableParts(revoke=Revoke(first.message_id)), target=ours), "d1")
    await client.mark_read(bob, ["3EB0CAFE", "3EB0BEEF"], None)
    result = await stats(harness.nc, harness.settings, "alice")
    assert result.kinds == {
        "text": 2, "reply": 2, "reaction": 1, "edit": 1, "location": 1, "contact": 1, "media": 1, "revoke": 1, "read": 2,
    }  # fmt: skip
    assert result.targets == {
        "t2": "3EB0CAFE", "r1": "3EB0CAFE", "e1": first.message_id, "m1": first.message_id, "d1": first.message_id,
    }  # fmt: skip
    # WhatsApp refuses to edit what the session did not send; no retry helps.
    with pytest.raises(SendError) as refused:
        await client.send(bob, Outgoing(parts=SendableParts(edit=Edit("3EB0CAFE", "x")), target=theirs), "e2")
    assert refused.value.code == "invalid_request" and refused.value.permanent
    await client.disconnect()
    with pytest.raises(SendError) as offline:
        await client.mark_read(bob, ["3EB0CAFE"], None)
    assert offline.value.code == sim.NOT_CONNECTED and not offline.value.permanent


async def test_receipts_for_an_offline_sender_come_on_the_next_connect(harness: Harness) -> None:
    client, events = await harness.paired("alice")
    sent = await client.send("15550001111@s.whatsapp.net", Outgoing(text="hi"), "r1")
    await client.disconnect()
    seen = len(events.items)
    await client.connect()
    receipt = await events.next(Receipt, after=seen)
    assert receipt.message_ids == (sent.message_id,)


async def test_keys_rotate_as_messages_flow(harness: Harness) -> None:
    client, events = await harness.paired("alice")
    await events.next(StoreChanged)
    before = await client.snapshot()
    for n in range(CREDS_ROTATE_EVERY):
        await client.send("15550001111@s.whatsapp.net", Outgoing(text="hi"), f"r{n}")
    await wait_until(lambda: len(events.of(StoreChanged)) == 2, timeout=3, what="a second key rotation")
    device = SimStore(client.store_path).read()
    assert device is not None and device.key_generation == 3
    after = await client.snapshot()
    assert after != before
    check_store(after, client.device_table)


# ------------------------------------------------------------------------------ inbound


async def test_inbound_live_and_offline_redelivered_until_acked(harness: Harness) -> None:
    client, events = await harness.paired("alice")
    inbound = harness.settings.subjects.sim("alice", "inbound")
    live = await call_ok(harness.nc, inbound, {"from": "15550002222", "text": "live"})
    message = await events.next(InboundMessage)
    assert (message.message_id, message.text, message.chat, message.from_me) == (
        live["message_id"],
        "live",
        "15550002222@s.whatsapp.net",
        False,
    )
    assert message.ack is not None
    await message.ack()

    await client.disconnect()
    offline = await call_ok(harness.nc, inbound, {"from": "15550003333", "text": "while away"})
    for _ in range(2):  # not acked: delivered again on every connect
        seen = len(events.items)
        await client.connect()
        again = await events.next(InboundMessage, after=seen)
        assert again.message_id == offline["message_id"]
        assert await events.next(OfflineSyncCompleted, after=seen) == OfflineSyncCompleted(1)
        await client.disconnect()
    assert again.ack is not None
    await again.ack()  # its connection is closed: the ack is lost, quietly
    seen = len(events.items)
    await client.connect()
    redelivered = await events.next(InboundMessage, after=seen)
    assert redelivered.message_id == offline["message_id"] and redelivered.ack is not None
    await redelivered.ack()
    await client.disconnect()
    seen = len(events.items)
    await client.connect()
    assert await events.next(OfflineSyncCompleted, after=seen) == OfflineSyncCompleted(0)
    assert [m for m in events.items[seen:] if isinstance(m, InboundMessage)] == []


async def test_inbound_files_come_from_the_media_servers_with_faults_and_expiry(harness: Harness) -> None:
    client, events = await harness.paired("alice")
    s = harness.settings.subjects
    photo = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    body = {"from": "15550002222", "type": "image", "text": "look", "media": {"base64": base64.b64encode(photo).decode(), "mime": "image/png", "width": 4}}
    await call_ok(harness.nc, s.sim("alice", "inbound"), body)
    message = await events.next(InboundMessage)
    media = message.media
    assert media is not None and (message.type, message.text) == ("image", "look")
    assert (media.mime, media.size, media.sha256, media.width) == ("image/png", len(photo), hashlib.sha256(photo).hexdigest(), 4)
    assert await media.download() == photo

    # The media servers falter once: worth another attempt, which gets the file.
    await call_ok(harness.nc, s.sim("alice", "faults"), {"download_errors": 1})
    with pytest.raises(MediaFetchError) as faltered:
        await media.download()
    assert faltered.value.code == "media_download_failed" and not faltered.value.permanent
    assert await media.download() == photo
    assert (await stats(harness.nc, harness.settings, "alice")).downloads == 3

    # A file put there beforehand (larger than a NATS message) is sent by its name, as often as wanted.
    bucket = await harness.nc.jetstream().object_store(s.sim_media_bucket)
    big = bytes(3 * 1024 * 1024) + b"end"
    await bucket.put("big.bin", big)
    document = {"from": "15550002222", "type": "document", "media": {"object": "big.bin", "mime": "application/pdf", "filename": "big.pdf"}}
    for _ in range(2):
        await call_ok(harness.nc, s.sim("alice", "inbound"), document)
    await wait_until(lambda: len(events.of(InboundMessage)) == 3, what="both copies")
    copies = events.of(InboundMessage)[1:]
    assert [c.media.filename for c in copies] == ["big.pdf", "big.pdf"]  # type: ignore[union-attr]
    assert copies[0].media.sha256 == hashlib.sha256(big).hexdigest()  # type: ignore[union-attr]
    assert await copies[0].media.download() == big  # type: ignore[union-attr]

    # Gone from the media servers (expired): not to be had, for good.
    await bucket.delete("big.bin")
    with pytest.raises(MediaFetchError) as gone:
        await copies[1].media.download()  # type: ignore[union-attr]
    assert gone.value.code == "media_unavailable" and gone.value.permanent
    # No connection: worth another attempt once there is one.
    await client.disconnect()
    with pytest.raises(MediaFetchError) as offline:
        await media.download()
    assert not offline.value.permanent
    missing = {**document, "media": {"object": "nowhere.bin", "mime": "application/pdf"}}
    reply = await call(harness.nc, s.sim("alice", "inbound"), missing)
    assert reply.error is not None and reply.error.message.startswith("media.object: no object 'nowhere.bin'")


async def test_what_a_contact_sends_reaches_the_client_in_every_shape(harness: Harness) -> None:
    _, events = await harness.paired("alice")
    inbound = harness.settings.subjects.sim("alice", "inbound")
    await call_ok(harness.nc, inbound, {"from": "15550002222", "text": "hi all", "group": "120363000000000001@g.us", "quoted_id": "3EB0AA", "mentions": ["15550003333@s.whatsapp.net"]})
    await call_ok(harness.nc, inbound, {"from": "15550002222", "reaction": {"target_id": "3EB0AA", "emoji": "👍"}})
    await call_ok(harness.nc, inbound, {"from": "15550002222", "location": {"lat": 52.52, "lon": 13.405, "name": "Office"}})
    await wait_until(lambda: len(events.of(InboundMessage)) == 3, what="three messages")
    group, reaction, place = events.of(InboundMessage)
    assert (group.chat, group.sender, group.parts) == (
        "120363000000000001@g.us", "15550002222@s.whatsapp.net",
        MessageParts(quoted=Quoted("3EB0AA", "15550002222@s.whatsapp.net"), mentions=["15550003333@s.whatsapp.net"]),
    )  # fmt: skip
    assert (reaction.type, reaction.parts.reaction, reaction.text) == ("reaction", Reaction("3EB0AA", "👍"), None)
    assert (place.type, place.parts.location) == ("location", Location(52.52, 13.405, "Office"))


# ------------------------------------------------------------------- unlink, drop, ban


async def test_unlink_logs_out_and_the_credentials_stop_working(harness: Harness) -> None:
    client, events = await harness.paired("alice")
    assert await call_ok(harness.nc, harness.settings.subjects.sim("alice", "unlink")) == {"closed": True}
    assert (await events.next(machine.LoggedOut)).reason == "unlinked from the phone"
    await client.connect()
    assert (await events.next(machine.ConnectFailure)).code == 401


async def test_drop_disconnects_and_the_client_reconnects(harness: Harness) -> None:
    client, events = await harness.paired("alice")
    assert await call_ok(harness.nc, harness.settings.subjects.sim("alice", "drop")) == {"closed": True}
    await events.next(machine.Disconnected)
    seen = len(events.items)
    await client.connect()
    await events.next(machine.Connected, after=seen)
    assert (await stats(harness.nc, harness.settings, "alice")).overlaps == 0


async def test_ban_then_connects_refused_with_the_time_left(harness: Harness) -> None:
    client, events = await harness.paired("alice")
    await call_ok(harness.nc, harness.settings.subjects.sim("alice", "ban"), {"seconds": 60})
    ban = await events.next(machine.TemporaryBan)
    assert (ban.code, ban.expires_in) == (402, 60)
    seen = len(events.items)
    await client.connect()
    refused = await events.next(machine.TemporaryBan, after=seen)
    assert refused.code == 402 and 58 <= refused.expires_in <= 60


async def test_logout_unlinks_the_device(harness: Harness) -> None:
    client, events = await harness.paired("alice")
    copy_store(client, harness, "alice-copy")
    await client.logout()
    assert SimStore(client.store_path).read() is None
    other, other_events = await harness.client("alice", store="alice-copy")
    await other.connect()
    assert (await other_events.next(machine.ConnectFailure)).code == 401
    assert events.of(machine.LoggedOut) == []  # its own logout is no news to the client


# ------------------------------------------------------------------- control requests


@pytest.mark.parametrize(
    ("op", "body", "code", "message"),
    [
        ("inbound", b"{not json", "invalid_request", "malformed JSON"),
        ("inbound", b"", "invalid_request", "empty body"),
        ("inbound", {"from": "abc", "text": "hi"}, "invalid_request", "from: expected digits"),
        ("inbound", {"from": "15550002222"}, "invalid_request", "text: required for a text message"),
        ("ban", {"seconds": 0}, "invalid_request", "seconds"),
        ("ban", {"seconds": "10"}, "invalid_request", "seconds: expected int"),
        ("read", {"message_id": 5}, "invalid_request", "message_id: expected str"),
        ("scan", [], "invalid_request", "expected object"),
        ("drop", {}, "not_found", "never seen session 'nobody'"),
    ],
)
async def test_malformed_control_requests_get_clear_errors(
    harness: Harness, op: str, body: Any, code: str, message: str
) -> None:
    reply = await call(harness.nc, harness.settings.subjects.sim("nobody", op), body)
    assert reply.error is not None
    assert reply.error.code == code and message in reply.error.message, reply.error


async def test_bad_ids_and_unknown_sessions(harness: Harness) -> None:
    s = harness.settings.subjects
    reply = await call(harness.nc, s.sim("x" * 65, "scan"))
    assert (
        reply.error is not None
        and reply.error.code == "invalid_request"
        and "session id" in reply.error.message
    )
    await harness.paired("alice")
    reply = await call(harness.nc, s.sim("alice", "read"), {"message_id": "3EB0NOPE"})
    assert reply.error is not None and reply.error.code == "not_found"
    reply = await call(harness.nc, s.sim_stats, {"session_id": "nobody"})
    assert reply.error is not None and reply.error.code == "not_found"
    reply = await call(harness.nc, s.sim_wire("connect"), {"conn_id": "NOT-HEX", "session_id": "alice"})
    assert (
        reply.error is not None and reply.error.code == "invalid_request" and "conn_id" in reply.error.message
    )
    assert await call_ok(harness.nc, s.sim_stats)  # still serving


async def test_stats_too_big_for_nats_are_refused_with_advice(harness: Harness, wasim: SimServer) -> None:
    huge = Ok(data={"received": "x" * harness.nc.max_payload})
    with pytest.raises(ContractError) as info:
        wasim.simulator.check_fits(huge)
    assert info.value.code == "invalid_request" and '"refs": false' in info.value.message


# ------------------------------------------------------------------------ durability


async def test_devices_bans_and_inbound_survive_a_restart(harness: Harness, wasim: SimServer) -> None:
    alice, alice_events = await harness.paired("alice")
    await alice.disconnect()
    pending = await call_ok(
        harness.nc, harness.settings.subjects.sim("alice", "inbound"), {"from": "15550002222", "text": "kept"}
    )
    bob, bob_events = await harness.paired("bob")
    await call_ok(harness.nc, harness.settings.subjects.sim("bob", "ban"), {"seconds": 600})
    await bob_events.next(machine.TemporaryBan)
    await wasim.restart()

    seen = len(alice_events.items)
    await alice.connect()
    await alice_events.next(machine.Connected, after=seen)
    assert (await alice_events.next(InboundMessage, after=seen)).message_id == pending["message_id"]
    seen = len(bob_events.items)
    await bob.connect()
    assert (await bob_events.next(machine.TemporaryBan, after=seen)).expires_in > 500


async def test_the_service_process_keeps_credentials_across_a_restart(
    nc: NatsClient, settings: Settings, tmp_path: Path, stack: Stack
) -> None:
    stack.start("wa-sim")
    await wait_until(lambda: _answers(nc, settings), timeout=20, what="wa-sim answering")
    harness = Harness(nc, settings, tmp_path / "stores")
    try:
        client, events = await harness.paired("alice")
        await client.disconnect()
        assert stack.stop("wa-sim") == 0
        stack.start("wa-sim")
        await wait_until(lambda: _answers(nc, settings), timeout=20, what="wa-sim answering again")
        seen = len(events.items)
        await client.connect()
        await events.next(machine.Connected, after=seen)
    finally:
        await harness.close()


async def _answers(nc: NatsClient, settings: Settings) -> bool:
    try:
        return (await call(nc, settings.subjects.sim_stats, timeout=0.5)).ok
    except Exception:
        return False
