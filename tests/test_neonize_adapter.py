"""The neonize adapter against the real library, offline (no WhatsApp, no phone here).

What offline allows: the Go client creates and loads its store, the dial fails and becomes
an event, stores are snapshotted while Go writes them, hundreds of clients share a process.
What it does not: the events of a live connection. Those are fed to the adapter as the very
protobuf payloads Go sends, through the same decoding path.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from contracts.messages import Contact, Edit, Location, Reaction, Revoke, SendableParts
from services.common.config import Settings
from services.credentials.vault import BadVersion, check_store
from services.devstack.neonize_stores import forge_linked_store, fresh_store
from services.session_actor import machine as m
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
    Undecryptable,
)
from services.session_actor.adapters.neonize import translate
from services.session_actor.adapters.neonize.client import (
    CHAT_PRESENCE_COMPOSING,
    CHAT_PRESENCE_MEDIA_TEXT,
    DEVICE_TABLE,
    EVENT_HANDLERS,
    RECEIPT_READ,
    Incarnation,
    NeonizeClient,
    PairingError,
)
from services.session_actor.adapters.neonize.factory import NeonizeClientFactory
from services.session_actor.adapters.neonize.protobufs import e2e, pb

ROOT = Path(__file__).resolve().parent.parent
HI = Outgoing(text="hi")
JID = "15550001111:7@s.whatsapp.net"
DIAL_ERROR = "failed to dial whatsapp web websocket"


class Recorder:
    """Collects a client's events."""

    def __init__(self) -> None:
        self.events: list[ClientEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: ClientEvent) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, kind: type) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    async def wait_for(self, kind: type, timeout: float = 15.0, count: int = 1) -> Any:
        """The `count`-th event of `kind`."""
        async with asyncio.timeout(timeout):
            while len(self.of(kind)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.of(kind)[count - 1]


@pytest.fixture(scope="module")
async def factory() -> AsyncIterator[NeonizeClientFactory]:
    # fd 1 stays pytest's (its capture swaps it); the redirect is tested in a subprocess.
    neonize = NeonizeClientFactory(
        Settings(node_capacity=250),
        check_reachability=False,
        silence_go_stdout=False,
        store_poll_interval=0.1,
    )
    await neonize.start()
    yield neonize
    await neonize.stop()


@pytest.fixture(scope="module")
async def linked_store(factory: NeonizeClientFactory, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return forge_linked_store(await fresh_store(factory, tmp_path_factory.mktemp("template")), JID)


def fake_incarnation(
    client: NeonizeClient, connected: bool = False, uuid: bytes | None = None
) -> Incarnation:
    """Make `client` believe a Go client runs, to feed it what Go would send."""
    incarnation = Incarnation(uuid=uuid or f"fake#{time.monotonic_ns()}".encode())
    incarnation.settle()  # as a Go client does once it delivers anything
    client._current = incarnation
    client._connected = connected
    return incarnation


async def register_go_client(factory: NeonizeClientFactory, store: Path, uuid: bytes) -> None:
    """A Go client with its device loaded, left in goneonize's map (its offline dial failed)."""
    lib = factory.library
    no_jid = no_subscriptions = no_device_props = no_pair_phone = b""
    await factory.guard.write(
        lib.gocode.Neonize,
        str(store).encode(),
        uuid,
        no_jid,
        0,
        0,  # not a new device: load the stored one
        b"ERROR",
        *lib.callbacks,
        no_subscriptions,
        0,
        no_device_props,
        0,
        no_pair_phone,
        0,
        None,  # no proxy
    )


# ------------------------------------------------------------------------ lifecycle


async def test_offline_connect_reports_the_dial_error_and_creates_the_store(
    factory: NeonizeClientFactory, tmp_path: Path
) -> None:
    events = Recorder()
    client = factory.create("offline", tmp_path / "offline.db", events, lambda: 42.0)
    await client.connect()
    disconnected = await events.wait_for(m.Disconnected)
    assert disconnected.now == 42.0
    assert DIAL_ERROR in disconnected.detail
    assert (tmp_path / "offline.db").stat().st_size > 0
    # The actor retries: every attempt is a new Go client, and reports the same way.
    await client.connect()
    assert DIAL_ERROR in (await events.wait_for(m.Disconnected, count=2)).detail
    await client.close()


async def test_disconnect_and_close_are_idempotent_whatever_the_state(
    factory: NeonizeClientFactory, tmp_path: Path
) -> None:
    never = factory.create("never", tmp_path / "never.db", Recorder(), time.monotonic)
    for _ in range(2):
        await never.disconnect()
    for _ in range(2):
        await never.close()
    with pytest.raises(RuntimeError):
        await never.connect()

    failed_events = Recorder()
    failed = factory.create("failed", tmp_path / "failed.db", failed_events, time.monotonic)
    await failed.connect()
    await failed_events.wait_for(m.Disconnected)
    for _ in range(2):
        await failed.disconnect()
        await failed.close()

    # Closed before its Go client started, then right after: no Go client, or one stopped
    # only once it settled (removing it from Go's map earlier would crash the process).
    for name, let_it_start in (("early", False), ("hurried", True)):
        client = factory.create(name, tmp_path / f"{name}.db", Recorder(), time.monotonic)
        await client.connect()
        incarnation = client._current
        assert incarnation is not None and incarnation.starting is not None
        if let_it_start:
            await incarnation.starting
            assert incarnation.thread is not None
        await client.close()
        await client.close()
        assert (incarnation.thread is not None) == let_it_start
    assert not tmp_path.joinpath("never.db").exists()


async def test_reachability_probe_spends_no_go_client_offline(tmp_path: Path) -> None:
    probing = NeonizeClientFactory(Settings(node_capacity=4), silence_go_stdout=False)
    await probing.start()
    events = Recorder()
    client = probing.create("probed", tmp_path / "probed.db", events, time.monotonic)
    await client.connect()
    disconnected = await events.wait_for(m.Disconnected)
    assert disconnected.detail.startswith(DIAL_ERROR)
    assert "unreachable" in disconnected.detail
    assert probing.stats["connection_attempts"] == 0
    assert not (tmp_path / "probed.db").exists()
    await client.close()
    await probing.stop()


async def test_executor_runs_a_blocking_call_per_hosted_session(factory: NeonizeClientFactory) -> None:
    # With the default pool (6 threads on 2 cores) the 7th blocking call would never start.
    sessions = factory.capacity
    everyone_in = threading.Barrier(sessions, timeout=20)
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(None, everyone_in.wait) for _ in range(sessions)))


async def test_go_map_guard_keeps_writers_alone_and_serves_in_order(factory: NeonizeClientFactory) -> None:
    guard = factory.guard
    lock = threading.Lock()
    inside = {"readers": 0, "writers": 0}
    most_readers = 0
    overlaps: list[str] = []

    def enter(kind: str, seconds: float) -> None:
        nonlocal most_readers
        with lock:
            if inside["writers"] or (kind == "writers" and inside["readers"]):
                overlaps.append(f"{kind} met {inside}")
            inside[kind] += 1
            most_readers = max(most_readers, inside["readers"])
        time.sleep(seconds)
        with lock:
            inside[kind] -= 1

    calls = []
    for i in range(60):
        if i % 6 == 0:
            calls.append(guard.write(enter, "writers", 0.01))
        else:
            calls.append(guard.read(enter, "readers", 0.02))  # shorter than MAP_READ_GRACE
    await asyncio.gather(*calls)
    assert not overlaps
    assert most_readers > 1, "readers never shared"

    # A long reader holds writers back only for its map access, not its whole call.
    slow = asyncio.ensure_future(guard.read(time.sleep, 0.5))
    await asyncio.sleep(0.01)
    began = time.monotonic()
    await guard.write(time.sleep, 0)
    assert time.monotonic() - began < 0.3
    await slow


# -------------------------------------------------------------------------- the store


async def test_snapshot_passes_check_store_only_with_a_device_row(
    factory: NeonizeClientFactory, tmp_path: Path
) -> None:
    events = Recorder()
    client = factory.create("fresh", tmp_path / "fresh.db", events, time.monotonic)
    await client.connect()
    await events.wait_for(m.Disconnected)
    unpaired = await client.snapshot()
    with pytest.raises(BadVersion, match="no device"):
        check_store(unpaired, DEVICE_TABLE)
    check_store(forge_linked_store(unpaired, JID), DEVICE_TABLE)
    await client.close()
    with pytest.raises(FileNotFoundError):
        await factory.create("none", tmp_path / "none.db", events, time.monotonic).snapshot()


async def test_a_restored_copy_loads_the_same_device_elsewhere(
    factory: NeonizeClientFactory, linked_store: bytes, tmp_path: Path
) -> None:
    from neonize.aioze.client import ClientFactory as NeonizeFactory

    store = tmp_path / "other-node" / "restored.db"
    store.parent.mkdir()
    store.write_bytes(linked_store)  # what the actor does with the vault's copy
    # whatsmeow's own loader reads the device without a client: no GetMe on a dead client.
    devices = NeonizeFactory.get_all_devices_from_db(str(store))
    assert [translate.jid_string(device.JID) for device in devices] == [JID]

    events = Recorder()
    client = factory.create("restored", store, events, time.monotonic)
    await client.connect()  # the linked path: connect with the stored keys
    assert DIAL_ERROR in (await events.wait_for(m.Disconnected)).detail
    check_store(await client.snapshot(), DEVICE_TABLE)
    await client.close()


async def test_snapshots_stay_consistent_while_go_writes(
    factory: NeonizeClientFactory, linked_store: bytes, tmp_path: Path
) -> None:
    import sqlite3
    import tempfile

    lib = factory.library
    store = tmp_path / "busy.db"
    store.write_bytes(linked_store)
    writer = b"writer#busy"
    await register_go_client(factory, store, writer)
    client = factory.create("busy", store, Recorder(), time.monotonic)
    batches, per_batch = 150, 20

    snapshot_taken = asyncio.Event()

    async def go_writes() -> None:
        for batch in range(batches):
            if batch % 10 == 9:
                # Some snapshots certainly fall amid the writes, however fast either side runs.
                snapshot_taken.clear()
                await snapshot_taken.wait()
            entries = pb.ContactEntryArray(
                ContactEntry=[
                    pb.ContactEntry(
                        JID=pb.JID(
                            User=f"1666{batch:05d}{i:03d}",
                            Server="s.whatsapp.net",
                            RawAgent=0,
                            Device=0,
                            Integrator=0,
                        ),
                        FirstName="Ada",
                        FullName="Ada " + "x" * 200,
                    )
                    for i in range(per_batch)
                ]
            ).SerializeToString()
            # One transaction per call, through whatsmeow's own store.
            error = await factory.guard.read(lib.gocode.PutAllContactNames, writer, entries, len(entries))
            assert not error, error

    def contacts(snapshot: bytes) -> int:
        with tempfile.NamedTemporaryFile(suffix=".db") as copy:
            copy.write(snapshot)
            copy.flush()
            db = sqlite3.connect(copy.name)
            try:
                return db.execute("SELECT count(*) FROM whatsmeow_contacts").fetchone()[0]
            finally:
                db.close()

    writing = asyncio.ensure_future(go_writes())
    counts: list[int] = []
    while not writing.done():
        snapshot = await client.snapshot()
        snapshot_taken.set()
        check_store(snapshot, DEVICE_TABLE)  # integrity ok and the device row is there
        counts.append(contacts(snapshot))
    await writing
    counts.append(contacts(await client.snapshot()))
    assert len(counts) > 10
    assert counts == sorted(counts), "a snapshot went back in time"
    assert all(count % per_batch == 0 for count in counts), "a snapshot saw half a transaction"
    assert counts[-1] == batches * per_batch
    await factory.guard.write(lib.native.Stop, writer)
    await client.close()


async def test_store_changes_are_noticed_by_polling(factory: NeonizeClientFactory, tmp_path: Path) -> None:
    store = tmp_path / "polled.db"
    store.write_bytes(b"x")
    events = Recorder()
    client = factory.create("polled", store, events, time.monotonic)
    fake_incarnation(client)
    client._store_signature = client._stat_store()
    await asyncio.sleep(0.3)
    assert not events.of(StoreChanged)
    store.write_bytes(b"xy")  # a commit changes size and mtime
    await events.wait_for(StoreChanged, timeout=2)
    await asyncio.sleep(0.3)
    assert len(events.of(StoreChanged)) == 1
    await client.close()


# ---------------------------------------------------------------------------- events


def payload(name: str, **fields: Any) -> tuple[int, bytes]:
    """An event as Go sends it. Partial: the schema marks fields `required` that Go leaves
    unset for values it cannot map, and the adapter must cope with that."""
    from neonize.events import EVENT_TO_INT

    message_type = getattr(pb, name)
    return EVENT_TO_INT[message_type], message_type(**fields).SerializePartialToString()


def jid(user: str, server: str = "s.whatsapp.net", device: int = 0) -> Any:
    return pb.JID(User=user, Server=server, RawAgent=0, Device=device, Integrator=0)


async def test_connection_events_become_machine_inputs(
    factory: NeonizeClientFactory, tmp_path: Path
) -> None:
    events = Recorder()
    client = factory.create("events", tmp_path / "events.db", events, lambda: 7.0)

    live = fake_incarnation(client)
    client._from_go(live, "qr", "2@first-code")
    client._from_go(live, "qr", "2@second-code")
    client._from_go(
        live, "event", *payload("PairStatus", ID=jid("15550001111", device=7), Status=pb.PairStatus.SUCCESS)
    )
    client._from_go(live, "event", *payload("Device", JID=jid("15550001111", device=7)))
    client._from_go(live, "event", *payload("Connected", status=True))
    client._from_go(live, "event", *payload("KeepAliveTimeout", ErrorCount=1))
    client._from_go(live, "event", *payload("KeepAliveRestored"))
    assert events.events == [
        m.QrShown(7.0, "2@first-code"),
        m.QrShown(7.0, "2@second-code"),
        m.PairSucceeded(7.0, JID),
        m.Connected(7.0, JID),
        m.KeepAliveTimeout(7.0),
        m.KeepAliveRestored(7.0),
    ]
    assert client._connected

    ends = [
        (payload("Disconnected", status=True), m.Disconnected(7.0, "the connection to WhatsApp dropped")),
        (payload("StreamError", Code="516"), m.Disconnected(7.0, "stream error 516")),
        (payload("StreamReplaced"), m.StreamReplaced(7.0)),
        (payload("ClientOutdated"), m.ClientOutdated(7.0)),
        (
            payload("LoggedOut", OnConnect=True, Reason=pb.LOGGED_OUT),
            m.LoggedOut(7.0, "logged_out (401) while connecting"),
        ),
        # Unmapped codes arrive unset; without the HasField check they would read as GENERIC.
        (payload("LoggedOut", OnConnect=False), m.LoggedOut(7.0, "unmapped (0)")),
        (
            payload("ConnectFailure", Reason=pb.MAIN_DEVICE_GONE, Message="gone"),
            m.ConnectFailure(7.0, 403, "gone"),
        ),
        (
            payload(
                "ConnectFailure",
                Message="cat expired",
                Raw=pb.Node(Tag="failure", Attrs=[pb.NodeAttrs(name="reason", text="413")]),
            ),
            m.ConnectFailure(7.0, 413, "cat expired"),
        ),
        (
            payload("TemporaryBan", Code=pb.TemporaryBan.BLOCKED_BY_USERS, Expire=3600),
            m.TemporaryBan(7.0, 102, 3600.0),
        ),
        (payload("TemporaryBan"), m.TemporaryBan(7.0, 0, 0.0)),
    ]
    for (code, data), expected in ends:
        events.events.clear()
        ended = fake_incarnation(client, connected=True)
        client._from_go(ended, "event", code, data)
        # The Go client is retired before the actor hears of it: whatsmeow cannot redial.
        client._from_go(ended, "event", *payload("Connected", status=True))
        assert events.events == [expected]
        assert client._current is None and not client._connected
        await ended.stopping

    events.events.clear()
    pairing = fake_incarnation(client)
    client._from_go(pairing, "status", "err-client-outdated")
    assert events.events == [m.ClientOutdated(7.0)]
    await client.close()


async def test_a_client_whose_go_side_ended_reports_disconnected(
    factory: NeonizeClientFactory, tmp_path: Path
) -> None:
    events = Recorder()
    client = factory.create("ended", tmp_path / "ended.db", events, lambda: 3.0)
    incarnation = fake_incarnation(client, connected=True)
    client._on_thread_end(incarnation, "failed to dial whatsapp web websocket: no route")
    assert events.events == [m.Disconnected(3.0, "failed to dial whatsapp web websocket: no route")]
    await client.close()


async def test_messages_receipts_and_notices(factory: NeonizeClientFactory, tmp_path: Path) -> None:
    events = Recorder()
    client = factory.create("messages", tmp_path / "messages.db", events, time.monotonic)
    live = fake_incarnation(client, connected=True)

    def message(content: Any, message_id: str, from_me: bool = False) -> tuple[int, bytes]:
        source = pb.MessageSource(
            Chat=jid("15550002222"), Sender=jid("15550002222"), IsFromMe=from_me, IsGroup=False
        )
        info = pb.MessageInfo(MessageSource=source, ID=message_id, Timestamp=1_700_000_000)
        return payload("Message", Info=info, Message=content)

    client._from_go(live, "event", *message(e2e.Message(conversation="hello"), "M1"))
    client._from_go(
        live, "event", *message(e2e.Message(extendedTextMessage=e2e.ExtendedTextMessage(text="a link")), "M2")
    )
    client._from_go(
        live, "event", *message(e2e.Message(imageMessage=e2e.ImageMessage(caption="a cat")), "M3", from_me=True)
    )
    ephemeral = e2e.Message(ephemeralMessage=e2e.FutureProofMessage(message=e2e.Message(conversation="vanishing")))
    client._from_go(live, "event", *message(ephemeral, "M4"))
    client._from_go(live, "event", *message(e2e.Message(reactionMessage=e2e.ReactionMessage(text="👍")), "M5"))
    client._from_go(live, "event", *message(e2e.Message(protocolMessage=e2e.ProtocolMessage()), "M6"))  # plumbing
    inbound = events.of(InboundMessage)
    assert [(i.message_id, i.type, i.text, i.from_me) for i in inbound] == [
        ("M1", "text", "hello", False),
        ("M2", "text", "a link", False),
        ("M3", "image", "a cat", True),
        ("M4", "text", "vanishing", False),
        ("M5", "reaction", None, False),
    ]
    assert inbound[4].parts.reaction == Reaction("", "👍")
    assert inbound[0].chat == "15550002222@s.whatsapp.net"
    assert inbound[0].timestamp.timestamp() == 1_700_000_000

    events.events.clear()
    source = pb.MessageSource(
        Chat=jid("15550002222"), Sender=jid("15550002222"), IsFromMe=False, IsGroup=False
    )
    for kind in ("DELIVERED", "READ", "PLAYED", "READ_SELF"):
        receipt = payload(
            "Receipt", MessageSource=source, MessageIDs=["A", "B"], Type=pb.Receipt.ReceiptType.Value(kind)
        )
        client._from_go(live, "event", *receipt)
    client._from_go(live, "event", *payload("Receipt", MessageSource=source, MessageIDs=["C"]))  # type unset
    info = pb.MessageInfo(MessageSource=source, ID="U1", Timestamp=1)
    client._from_go(live, "event", *payload("UndecryptableMessage", Info=info, IsUnavailable=False))
    client._from_go(live, "event", *payload("OfflineSyncCompleted", Count=12))
    chat = "15550002222@s.whatsapp.net"
    assert events.events == [
        Receipt("delivered", ("A", "B"), chat),
        Receipt("read", ("A", "B"), chat),
        Receipt("played", ("A", "B"), chat),
        Undecryptable("U1", chat, chat),
        OfflineSyncCompleted(12),
    ]
    await client.close()


# ------------------------------------------------------------------------- commands


async def test_send_errors_are_classified(
    factory: NeonizeClientFactory, linked_store: bytes, tmp_path: Path
) -> None:
    client = factory.create("sender", tmp_path / "sender.db", Recorder(), time.monotonic)
    with pytest.raises(SendError) as not_connected:
        await client.send("15550002222@s.whatsapp.net", HI, ref="r1")
    assert not_connected.value.code == "not_connected" and not not_connected.value.permanent

    # A real Go client that never got a connection: whatsmeow's own errors come back.
    store = tmp_path / "sender.db"
    store.write_bytes(linked_store)
    uuid = b"sender#go"
    await register_go_client(factory, store, uuid)
    fake_incarnation(client, connected=True, uuid=uuid)
    for bad in ("abc", "123@s.whatsapp.net", "15550002222@example.com", "@g.us"):
        with pytest.raises(SendError) as invalid:
            await client.send(bad, HI, ref="r2")
        assert invalid.value.code == "invalid_recipient" and invalid.value.permanent
    for recipient in ("15550002222@s.whatsapp.net", "120363000000000001@g.us"):
        with pytest.raises(SendError) as offline:
            await client.send(recipient, HI, ref="r3")
        assert offline.value.code == "not_connected", offline.value
        assert not offline.value.permanent and not offline.value.ambiguous
    # Every other kind is built and handed to Go's SendMessage the same way.
    target = MessageRef("T1", from_me=True)
    for message in (
        Outgoing(text="hi", reply_to=target),
        Outgoing(parts=SendableParts(reaction=Reaction("T1", "👍")), target=target),
        Outgoing(parts=SendableParts(edit=Edit("T1", "fixed")), target=target),
        Outgoing(parts=SendableParts(revoke=Revoke("T1")), target=target),
        Outgoing(parts=SendableParts(location=Location(52.5, 13.4))),
        Outgoing(parts=SendableParts(contact=Contact("Ada", "BEGIN:VCARD\nFN:Ada\nEND:VCARD"))),
    ):
        with pytest.raises(SendError) as offline:
            await client.send("120363000000000001@g.us", message, ref="r4")
        assert offline.value.code == "not_connected", (message, offline.value)
    # Read receipts too: whatsmeow refuses them offline.
    with pytest.raises(SendError) as unread:
        await client.mark_read("120363000000000001@g.us", ["M1"], "15550002222:3@s.whatsapp.net")
    assert not unread.value.permanent, unread.value
    await factory.guard.write(factory.library.native.Stop, uuid)
    client._current = None
    await client.close()


async def test_media_upload_fails_offline_as_a_transient_error(
    factory: NeonizeClientFactory, linked_store: bytes, tmp_path: Path
) -> None:
    photo = OutgoingMedia("image", b"\xff\xd8\xff" + bytes(1000), "image/jpeg", caption="hi")
    client = factory.create("media", tmp_path / "media.db", Recorder(), time.monotonic)
    with pytest.raises(SendError) as not_connected:
        await client.send("15550002222@s.whatsapp.net", Outgoing(media=photo), ref="r1")
    assert not_connected.value.code == "not_connected" and not not_connected.value.permanent

    # A real Go client that never got a connection: whatsmeow's upload itself fails.
    store = tmp_path / "media.db"
    store.write_bytes(linked_store)
    uuid = b"media#go"
    await register_go_client(factory, store, uuid)
    fake_incarnation(client, connected=True, uuid=uuid)
    with pytest.raises(SendError) as invalid:
        await client.send("abc", Outgoing(media=photo), ref="r2")
    assert invalid.value.code == "invalid_recipient" and invalid.value.permanent
    # A group skips the is-on-WhatsApp lookup, so the upload is what runs (and fails) offline.
    with pytest.raises(SendError) as offline:
        await client.send("120363000000000001@g.us", Outgoing(media=photo), ref="r3")
    error = offline.value
    assert error.code == "media_upload_failed", error
    assert not error.permanent and not error.ambiguous
    assert "failed to refresh media connections" in error.message
    await factory.guard.write(factory.library.native.Stop, uuid)
    client._current = None
    await client.close()


async def test_pair_code_and_logout_need_a_connection(
    factory: NeonizeClientFactory, tmp_path: Path
) -> None:
    client = factory.create("pairing", tmp_path / "pairing.db", Recorder(), time.monotonic)
    with pytest.raises(PairingError):
        await client.pair_phone("+1 555 000 1111")
    await client.logout()  # not connected: nothing to unlink, and nothing raised
    await client.close()


# ----------------------------------------------------------------------------- scale


async def test_200_clients_in_one_process(
    factory: NeonizeClientFactory, linked_store: bytes, tmp_path: Path
) -> None:
    count = 200
    threads_before = threading.active_count()
    reported: dict[int, m.Disconnected] = {}
    everyone = asyncio.Event()

    def recorder(i: int):
        def on_event(event: ClientEvent) -> None:
            if isinstance(event, m.Disconnected):
                reported.setdefault(i, event)
                if len(reported) == count:
                    everyone.set()

        return on_event

    for i in range(count):
        (tmp_path / f"s{i}.db").write_bytes(linked_store)
    clients = [
        factory.create(f"s{i}", tmp_path / f"s{i}.db", recorder(i), time.monotonic) for i in range(count)
    ]

    lag = 0.0

    async def heartbeat() -> None:
        nonlocal lag
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lag = max(lag, time.monotonic() - before - 0.01)

    beating = asyncio.ensure_future(heartbeat())
    started = time.monotonic()
    await asyncio.gather(*(client.connect() for client in clients))
    await asyncio.wait_for(everyone.wait(), 50)
    took = time.monotonic() - started
    beating.cancel()

    assert all(DIAL_ERROR in event.detail for event in reported.values())
    assert lag < 0.5, f"the event loop stalled for {lag:.2f}s"
    assert factory.stats["running"] == 0
    # No thread per idle client: only executor threads that served the stops remain.
    assert threading.active_count() - threads_before < 60
    await asyncio.gather(*(client.close() for client in clients))
    print(f"\n200 offline clients reported in {took:.1f}s, max loop lag {lag * 1000:.0f} ms")

    # Still responsive: one more client connects and reports promptly.
    events = Recorder()
    late = factory.create("late", tmp_path / "s0.db", events, time.monotonic)
    await late.connect()
    await events.wait_for(m.Disconnected, timeout=5)
    await late.close()


# ------------------------------------------------------------------ what we restate of neonize


def test_what_the_adapter_restates_of_neonize_matches_neonize() -> None:
    """`protobufs` and `translate` reach neonize without loading its Go library, so some of
    neonize's values are restated there: they must be neonize's own."""
    import neonize.proto.Neonize_pb2 as neonize_pb
    from neonize.events import EVENT_TO_INT
    from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message
    from neonize.utils.enum import ChatPresence, ChatPresenceMedia, MediaType, ReceiptType
    from neonize.utils.jid import Jid2String

    assert pb.JID is neonize_pb.JID and e2e.Message is Message  # the very classes
    assert set(EVENT_HANDLERS) <= set(EVENT_TO_INT)
    for user, server, raw_agent, device in (
        ("15550001111", "s.whatsapp.net", 0, 0),
        ("15550001111", "s.whatsapp.net", 0, 7),
        ("15550001111", "lid", 1, 7),
        ("120363000000000001", "g.us", 0, 0),
        ("", "s.whatsapp.net", 0, 0),
    ):
        jid = pb.JID(User=user, Server=server, RawAgent=raw_agent, Device=device, Integrator=0)
        assert translate.jid_string(jid) == Jid2String(jid)
    assert {kind: MediaType(value).name for kind, value in translate.UPLOAD_TYPES.items()} == {
        "image": "MediaImage", "video": "MediaVideo", "audio": "MediaAudio", "document": "MediaDocument",
    }  # fmt: skip
    assert ChatPresence(CHAT_PRESENCE_COMPOSING).name == "CHAT_PRESENCE_COMPOSING"
    assert ChatPresenceMedia(CHAT_PRESENCE_MEDIA_TEXT).name == "CHAT_PRESENCE_MEDIA_TEXT"
    assert ReceiptType(RECEIPT_READ).name == "READ"


# ------------------------------------------------------------------------- process


def test_neonize_is_imported_late_keeps_logging_and_go_stdout_stays_out(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, logging, sys
        from services.session_actor.adapters.neonize.factory import NeonizeClientFactory
        from services.session_actor.adapters.neonize.library import load_library
        from services.session_actor.adapters.neonize.protobufs import pb
        assert "neonize" not in sys.modules, "imported at module import"
        from services.common.config import Settings
        from services.common.logs import setup
        setup("probe", "WARNING")
        handlers, level = logging.getLogger().handlers[:], logging.getLogger().level

        def go_prints():
            # goneonize prints failed sends to fd 1: "SendMessage: Error sending message: ..."
            lib = load_library()
            jid = pb.JID(User="1", Server="s.whatsapp.net", RawAgent=0, Device=0, Integrator=0)
            data = jid.SerializeToString()
            lib.gocode.SendMessage(b"nobody", data, len(data), b"", 0)

        async def main():
            go_prints()
            assert logging.getLogger().handlers == handlers and logging.getLogger().level == level
            print("python before", flush=True)
            factory = NeonizeClientFactory(Settings(node_capacity=1))
            await factory.start()
            go_prints()
            print("python during", flush=True)
            await factory.stop()
            go_prints()
            print("python after", flush=True)

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if line.startswith("python")] == [
        "python before",
        "python during",
        "python after",
    ]
    assert sum(line.startswith("SendMessage: Error") for line in lines) == 2  # not the one in between


# ------------------------------------------------------------------------ downloads


class FakeDownloads:
    """goneonize's DownloadAny, faked at that one boundary: what it was given, on which thread."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[bytes, Any, int]] = []

    def DownloadAny(self, uuid: bytes, payload: bytes, size: int) -> bytes:
        self.calls.append((uuid, e2e.Message.FromString(payload[:size]), threading.get_ident()))
        return self.answers.pop(0).SerializeToString()


async def test_a_files_download_goes_through_the_library_call_off_the_loop(
    factory: NeonizeClientFactory, tmp_path: Path
) -> None:
    events = Recorder()
    client = factory.create("downloads", tmp_path / "downloads.db", events, time.monotonic)
    live = fake_incarnation(client, connected=True)
    downloads = FakeDownloads(
        [
            pb.DownloadReturnFunction(Binary=b"\x89PNG" + bytes(100)),
            pb.DownloadReturnFunction(Error="download failed with status code 404"),
            pb.DownloadReturnFunction(Error="failed to refresh media connections: websocket not connected"),
        ]
    )
    client._lib = SimpleNamespace(gocode=downloads)  # type: ignore[assignment]
    source = pb.MessageSource(Chat=jid("15550002222"), Sender=jid("15550002222"), IsFromMe=False, IsGroup=False)
    image = e2e.ImageMessage(mimetype="image/png", fileLength=104, directPath="/v/t62/1.enc", mediaKey=b"k" * 32)
    info = pb.MessageInfo(MessageSource=source, ID="P1", Timestamp=1_700_000_000)
    client._from_go(live, "event", *payload("Message", Info=info, Message=e2e.Message(imageMessage=image)))
    media = (await events.wait_for(InboundMessage)).media
    assert media is not None and (media.mime, media.size) == ("image/png", 104)

    assert await media.download() == b"\x89PNG" + bytes(100)
    uuid, message, thread = downloads.calls[0]
    assert uuid == live.uuid and thread != threading.get_ident()  # Go ran on an executor thread
    assert message == e2e.Message(imageMessage=image)  # the file's part, keys and path as received
    with pytest.raises(MediaFetchError) as gone:
        await media.download()
    assert (gone.value.code, gone.value.permanent) == ("media_unavailable", True)
    with pytest.raises(MediaFetchError) as offline:
        await media.download()
    assert (offline.value.code, offline.value.permanent) == ("media_download_failed", False)
    client._connected = False
    with pytest.raises(MediaFetchError) as not_connected:
        await media.download()
    assert not not_connected.value.permanent and len(downloads.calls) == 3  # Go was not asked
    client._current = None
    await client.close()


async def test_a_download_without_a_connection_fails_in_whatsmeow_as_worth_retrying(
    factory: NeonizeClientFactory, linked_store: bytes, tmp_path: Path
) -> None:
    client = factory.create("offline-download", tmp_path / "od.db", Recorder(), time.monotonic)
    store = tmp_path / "od.db"
    store.write_bytes(linked_store)
    uuid = b"offline-download#go"
    await register_go_client(factory, store, uuid)
    fake_incarnation(client, connected=True, uuid=uuid)
    image = e2e.ImageMessage(
        URL="https://mmg.whatsapp.net/v/t62/1.enc", directPath="/v/t62/1.enc", mediaKey=b"k" * 32,
        fileEncSHA256=b"e" * 32, fileSHA256=b"s" * 32, fileLength=10, mimetype="image/jpeg",
    )  # fmt: skip
    with pytest.raises(MediaFetchError) as offline:
        await client._download(e2e.Message(imageMessage=image))
    assert (offline.value.code, offline.value.permanent) == ("media_download_failed", False)
    assert "websocket not connected" in offline.value.message
    await factory.guard.write(factory.library.native.Stop, uuid)
    client._current = None
    await client.close()
