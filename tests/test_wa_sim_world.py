"""The simulated WhatsApp's rules (services/wa_sim/world.py), driven with explicit times."""

from __future__ import annotations

import random
import re

import msgspec
import pytest

from contracts import sim
from contracts.envelope import ContractError
from contracts.messages import Contact, Edit, Location, Poll, Quoted, Reaction, Revoke
from services.wa_sim.state import StateFile
from services.wa_sim.world import CREDS_ROTATE_EVERY, MEDIA_LIMITS, Durable, Rules, World, phone_for

RULES = Rules(qr_first=60, qr_next=20, qr_codes=3, keepalive_timeout=3, receipt_delay=0.05)
T0 = 1_700_000_000.0


def new_world(rules: Rules = RULES) -> World:
    return World(rules, random.Random(7))


def frames(world: World, conn_id: str | None = None) -> list[sim.AnyFrame]:
    """The frames sent since the last call (to one connection, if given)."""
    return [out.frame for out in world.take_outbox() if conn_id is None or out.conn_id == conn_id]


def kinds(world: World, conn_id: str | None = None) -> list[str]:
    return [type(f).__struct_config__.tag for f in frames(world, conn_id)]  # type: ignore[misc]


def conn_of(sid: str) -> str:
    return f"pair-{sid}"


def paired(world: World, sid: str = "alice") -> sim.DeviceCredentials:
    """Pair `sid` by QR code on connection `pair-<sid>` at T0, left connected; returns the device."""
    world.connect(conn_of(sid), sid, None, T0)
    world.scan(sid, T0)
    return next(f.device for f in frames(world) if isinstance(f, sim.PairSuccessFrame))


def send_text(world: World, conn_id: str, to: str, text: str, ref: str, now: float) -> sim.SendReply:
    return world.send(sim.SendRequest(conn_id=conn_id, to=to, ref=ref, text=text), now)


def says(world: World, sid: str, sender: str, text: str, now: float) -> str:
    """A contact sends `sid` a text."""
    return world.inbound(sid, sim.InboundRequest(sender=sender, text=text), None, now)


def error_code(call: object) -> str:
    with pytest.raises(ContractError) as info:
        call()  # type: ignore[operator]
    return info.value.code


# ----------------------------------------------------------------------------- pairing


def test_qr_codes_rotate_then_pairing_stops_silently() -> None:
    world = new_world(Rules(qr_first=60, qr_next=20, qr_codes=3, keepalive_timeout=1000))
    world.connect("c1c1c1c1", "alice", None, T0)
    first = frames(world, "c1c1c1c1")
    assert [type(f) for f in first] == [sim.QrFrame]
    world.tick(T0 + 59.9)
    assert frames(world) == []
    codes = [first[0].code]
    for at in (T0 + 60, T0 + 80):
        world.tick(at)
        (frame,) = frames(world, "c1c1c1c1")
        assert isinstance(frame, sim.QrFrame)
        codes.append(frame.code)
    assert len(set(codes)) == 3  # a fresh code each time

    world.tick(T0 + 100)  # the third and last code expires: no frame, the connection is gone
    assert frames(world) == []
    assert world.keepalive(["c1c1c1c1"], T0 + 100) == ["c1c1c1c1"]
    assert error_code(lambda: world.scan("alice", T0 + 100)) == "not_found"


def test_scan_links_a_device_and_connects() -> None:
    world = new_world()
    world.connect("c1c1c1c1", "alice", None, T0)
    frames(world)
    jid = world.scan("alice", T0 + 2)
    assert jid == f"{phone_for('alice')}@s.whatsapp.net"
    assert re.fullmatch(r"1555\d{7}", phone_for("alice")) and phone_for("alice") == phone_for("alice")
    out = frames(world, "c1c1c1c1")
    assert [type(f) for f in out] == [
        sim.PairSuccessFrame,
        sim.ConnectedFrame,
        sim.OfflineSyncCompletedFrame,
        sim.CredsUpdateFrame,
    ]
    device = out[0].device  # type: ignore[union-attr]
    assert device.jid == jid and device.key_generation == 1
    assert out[3].key_generation == 2  # type: ignore[union-attr]
    # The code stops rotating once paired, and there is nothing left to scan.
    for second in range(1, 62):
        world.keepalive(["c1c1c1c1"], T0 + second)
        world.tick(T0 + second)
    assert frames(world) == []
    assert error_code(lambda: world.scan("alice", T0 + 61)) == "not_found"
    assert world.stats().sessions["alice"].connects == 1


def test_pairing_by_phone_code_uses_that_number() -> None:
    world = new_world()
    world.connect("c1c1c1c1", "bob", None, T0)
    code = world.pair_phone("c1c1c1c1", "4915112345678", T0 + 1)
    assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4}", code)
    assert world.scan("bob", T0 + 2) == "4915112345678@s.whatsapp.net"


def test_pair_code_needs_a_pairing_connection() -> None:
    world = new_world()
    device = paired(world)
    assert error_code(lambda: world.pair_phone(conn_of("alice"), "4915112345678", T0)) == "not_found"
    world.connect("c2c2c2c2", "alice", device, T0)
    assert error_code(lambda: world.pair_phone("0000ffff", "4915112345678", T0)) == "not_found"


def test_pairing_again_unlinks_the_previous_device() -> None:
    world = new_world()
    old = paired(world)
    world.connect("c2c2c2c2", "alice", None, T0 + 1)
    world.scan("alice", T0 + 1)
    assert kinds(world, conn_of("alice")) == ["logged_out"]
    world.connect("c3c3c3c3", "alice", old, T0 + 2)
    assert kinds(world, "c3c3c3c3") == ["connect_failure"]


# ------------------------------------------------------------------- connecting, overlap


def test_wrong_or_unknown_credentials_are_refused_with_401() -> None:
    world = new_world()
    device = paired(world)
    wrong = msgspec.structs.replace(device, secret="nope")
    unknown = msgspec.structs.replace(device, device_id="feedbeef")
    for n, creds in enumerate((wrong, unknown)):
        conn_id = f"d{n}d{n}d{n}d{n}"
        world.connect(conn_id, "alice", creds, T0)
        (failure,) = frames(world, conn_id)
        assert isinstance(failure, sim.ConnectFailureFrame) and failure.code == 401
        assert world.keepalive([conn_id], T0) == [conn_id]  # the server closed it


def test_any_key_generation_connects() -> None:
    world = new_world()
    device = paired(world)
    world.disconnect(conn_of("alice"))
    world.connect("c2c2c2c2", "alice", msgspec.structs.replace(device, key_generation=1), T0 + 1)
    assert kinds(world, "c2c2c2c2") == ["connected", "offline_sync_completed"]


def test_a_second_live_connection_replaces_the_first_and_counts_an_overlap() -> None:
    world = new_world()
    device = paired(world)
    frames(world)
    world.connect("c2c2c2c2", "alice", device, T0 + 1)
    out = world.take_outbox()
    assert [(o.conn_id, type(o.frame)) for o in out] == [
        (conn_of("alice"), sim.StreamReplacedFrame),
        ("c2c2c2c2", sim.ConnectedFrame),
        ("c2c2c2c2", sim.OfflineSyncCompletedFrame),
    ]
    assert world.keepalive([conn_of("alice"), "c2c2c2c2"], T0 + 1) == [conn_of("alice")]
    stats = world.stats().sessions["alice"]
    assert (stats.overlaps, stats.connects) == (1, 2)


def test_a_connection_silent_past_the_keepalive_timeout_is_dead_and_no_overlap() -> None:
    world = new_world()
    device = paired(world)
    world.keepalive([conn_of("alice")], T0 + 2)  # refreshed: alive until T0 + 5
    world.tick(T0 + 4.9)
    assert world.keepalive([], T0 + 4.9) == []
    world.tick(T0 + 5)
    assert world.keepalive([conn_of("alice")], T0 + 5) == [conn_of("alice")]
    frames(world)
    world.connect("c2c2c2c2", "alice", device, T0 + 6)
    assert kinds(world) == ["connected", "offline_sync_completed"]  # nothing to the dead one
    assert world.stats().sessions["alice"].overlaps == 0


def test_an_expired_connection_is_dead_even_before_the_timer_runs() -> None:
    world = new_world()
    device = paired(world)
    frames(world)
    world.connect("c2c2c2c2", "alice", device, T0 + 3)  # no tick, no keepalive since T0
    assert kinds(world) == ["connected", "offline_sync_completed"]
    assert world.stats().sessions["alice"].overlaps == 0


def test_closed_connections_are_not_replaced() -> None:
    world = new_world()
    device = paired(world)
    world.disconnect(conn_of("alice"))
    world.disconnect(conn_of("alice"))  # idempotent
    frames(world)
    world.connect("c2c2c2c2", "alice", device, T0 + 1)
    assert kinds(world) == ["connected", "offline_sync_completed"]
    assert world.stats().totals.overlaps == 0


def test_a_connection_id_is_used_once() -> None:
    world = new_world()
    world.connect("c1c1c1c1", "alice", None, T0)
    assert error_code(lambda: world.connect("c1c1c1c1", "alice", None, T0)) == "conflict"


# ------------------------------------------------------------------------------ sending


def test_send_records_refs_and_duplicates() -> None:
    world = new_world()
    paired(world)
    first = send_text(world, conn_of("alice"), "15550001111", "hi", "ref-1", T0 + 1)
    assert re.fullmatch(r"3EB0[0-9A-F]{16}", first.message_id)
    assert first.timestamp.timestamp() == T0 + 1
    send_text(world, conn_of("alice"), "15550001111@s.whatsapp.net", "hi", "ref-1", T0 + 1)
    send_text(world, conn_of("alice"), "15550001111", "hi", "ref-2", T0 + 1)
    stats = world.stats()
    assert stats.sessions["alice"].received == {"ref-1": 2, "ref-2": 1}
    assert (stats.sessions["alice"].messages, stats.sessions["alice"].duplicates) == (3, 1)
    assert (stats.totals.messages, stats.totals.duplicates, stats.totals.sessions) == (3, 1, 1)
    assert world.stats(refs=False).sessions["alice"].received == {}


def test_send_refuses_closed_and_pairing_connections_and_unknown_numbers() -> None:
    world = new_world()
    paired(world)
    assert (
        error_code(lambda: send_text(world, conn_of("alice"), "0001234567", "hi", "r", T0)) == sim.NOT_ON_WHATSAPP
    )
    world.connect("c2c2c2c2", "bob", None, T0)
    assert error_code(lambda: send_text(world, "c2c2c2c2", "15550001111", "hi", "r", T0)) == sim.NOT_CONNECTED
    world.disconnect(conn_of("alice"))
    assert error_code(lambda: send_text(world, conn_of("alice"), "15550001111", "hi", "r", T0)) == sim.NOT_CONNECTED
    assert world.stats().totals.messages == 0


def media(ref: str, kind: str = "image", size: int = 1000, **extra: object) -> sim.SendMediaRequest:
    fields: dict[str, object] = {"conn_id": conn_of("alice"), "to": "15550001111", "mime": f"{kind}/x"}
    return sim.SendMediaRequest(
        **{**fields, "ref": ref, "kind": kind, "size": size, "sha256": "ab" * 32, **extra}
    )  # type: ignore[arg-type]


def test_media_sends_count_like_texts_and_per_kind_within_whatsapp_limits() -> None:
    world = new_world()
    paired(world)
    send_text(world, conn_of("alice"), "15550001111", "hi", "t-1", T0)
    image = world.send_media(media("m-1", caption="a cat"), T0 + 1)
    assert re.fullmatch(r"3EB0[0-9A-F]{16}", image.message_id)
    world.send_media(media("m-2", "document", size=MEDIA_LIMITS["document"], filename="a.pdf"), T0 + 1)
    world.send_media(media("m-2", "document"), T0 + 1)  # a duplicate, like a text's
    counters = world.stats().sessions["alice"]
    assert counters.received == {"t-1": 1, "m-1": 1, "m-2": 2}
    assert (counters.messages, counters.duplicates) == (4, 1)
    assert counters.media == {"image": 1, "document": 2}
    assert counters.media_bytes == 1000 + MEDIA_LIMITS["document"] + 1000
    assert counters.media_sha256 == {"m-1": "ab" * 32, "m-2": "ab" * 32}
    assert world.stats().totals.media == 3
    assert world.stats(refs=False).sessions["alice"].media_sha256 == {}
    frames(world)
    world.tick(T0 + 2)  # receipts come for media too
    assert {m for f in frames(world) if isinstance(f, sim.ReceiptFrame) for m in f.message_ids} >= {
        image.message_id
    }

    for kind, limit in MEDIA_LIMITS.items():
        with pytest.raises(ContractError) as info:
            world.send_media(media("big", kind, size=limit + 1), T0 + 3)
        assert info.value.code == sim.MEDIA_TOO_LARGE
        assert f"refuses {kind} files over {limit:,} bytes" in info.value.message
    assert error_code(lambda: world.send_media(media("e", size=0), T0)) == "invalid_request"
    assert error_code(lambda: world.send_media(media("a", "audio", caption="x"), T0)) == "invalid_request"
    assert error_code(lambda: world.send_media(media("n", to="0001234567"), T0)) == sim.NOT_ON_WHATSAPP
    world.disconnect(conn_of("alice"))
    assert error_code(lambda: world.send_media(media("c"), T0)) == sim.NOT_CONNECTED
    assert world.stats().sessions["alice"].messages == 4


def test_every_kind_of_send_is_counted_with_what_it_points_at() -> None:
    world = new_world()
    paired(world)
    alice = conn_of("alice")

    def send(ref: str, **body: object) -> str:
        return world.send(sim.SendRequest(conn_id=alice, to="15550001111", ref=ref, **body), T0).message_id  # type: ignore[arg-type]

    first = send("t1", text="hi")
    send("t2", text="about that", reply_to="IN-1")
    send("r1", reaction=Reaction(first, "👍"))
    send("e1", edit=Edit(first, "hi there"))
    send("l1", location=Location(52.52, 13.405, "Office"))
    send("c1", contact=Contact("Ada", "BEGIN:VCARD\nFN:Ada\nEND:VCARD"))
    send("d1", revoke=Revoke(first))
    world.send_media(media("m1", reply_to=first), T0)
    world.mark_read(sim.MarkReadRequest(alice, "15550001111@s.whatsapp.net", ["IN-1", "IN-2"]), T0)
    counters = world.stats().sessions["alice"]
    assert counters.kinds == {
        "text": 2, "reply": 2, "reaction": 1, "edit": 1, "location": 1, "contact": 1, "revoke": 1, "media": 1, "read": 2,
    }  # fmt: skip
    assert counters.targets == {"t2": "IN-1", "r1": first, "e1": first, "d1": first, "m1": first}
    assert counters.messages == 8  # every send is a message; read marks are not
    refs_left_out = world.stats(refs=False).sessions["alice"]
    assert refs_left_out.targets == {} and refs_left_out.kinds == counters.kinds


def test_only_a_message_the_session_sent_to_that_chat_can_be_edited_or_revoked() -> None:
    world = new_world()
    paired(world)
    alice = conn_of("alice")
    mine = send_text(world, alice, "15550001111", "hi", "t1", T0).message_id
    for body in ({"edit": Edit("3EB0FFFF", "x")}, {"revoke": Revoke("3EB0FFFF")}):
        request = sim.SendRequest(conn_id=alice, to="15550001111", ref="x", **body)  # type: ignore[arg-type]
        assert error_code(lambda request=request: world.send(request, T0)) == "invalid_request"
    elsewhere = sim.SendRequest(conn_id=alice, to="15550003333", ref="y", edit=Edit(mine, "x"))
    with pytest.raises(ContractError) as refused:
        world.send(elsewhere, T0)
    assert "is not a message this session sent to 15550003333@s.whatsapp.net" in refused.value.message
    # A reaction may point at anything (a contact's message too).
    world.send(sim.SendRequest(conn_id=alice, to="15550001111", ref="r", reaction=Reaction("IN-9", "👍")), T0)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "got none"),
        ({"text": "hi", "reaction": Reaction("T", "👍")}, "got text and reaction"),
        ({"reaction": Reaction("T", "👍"), "reply_to": "Q"}, "reply_to: a reaction quotes nothing"),
    ],
)
def test_a_send_is_exactly_one_thing(body: dict[str, object], words: str) -> None:
    world = new_world()
    paired(world)
    with pytest.raises(ContractError) as refused:
        world.send(sim.SendRequest(conn_id=conn_of("alice"), to="15550001111", ref="x", **body), T0)  # type: ignore[arg-type]
    assert refused.value.code == "invalid_request" and words in refused.value.message


def test_downloads_need_a_live_connection_and_fail_as_often_as_told() -> None:
    world = new_world()
    paired(world)
    world.faults("alice", send_errors=1, download_errors=2)
    for _ in range(2):
        assert error_code(lambda: world.download(conn_of("alice"), T0)) == "internal"
    world.download(conn_of("alice"), T0)
    world.faults("alice", send_errors=None, download_errors=None)  # counts not given stay as they are
    assert error_code(lambda: send_text(world, conn_of("alice"), "15550001111", "hi", "r", T0)) == "internal"
    assert world.stats().sessions["alice"].downloads == 3
    world.disconnect(conn_of("alice"))
    assert error_code(lambda: world.download(conn_of("alice"), T0)) == sim.NOT_CONNECTED


def test_receipts_come_after_the_delay_and_again_on_every_connect_until_acked() -> None:
    world = new_world()
    device = paired(world)
    frames(world)
    sent = send_text(world, conn_of("alice"), "15550001111", "hi", "r1", T0)
    world.tick(T0 + 0.04)
    assert frames(world) == []
    world.tick(T0 + 0.05)
    (first,) = frames(world, conn_of("alice"))
    assert isinstance(first, sim.ReceiptFrame)
    assert (first.kind, first.message_ids, first.chat) == (
        "delivered",
        [sent.message_id],
        "15550001111@s.whatsapp.net",
    )
    world.ack(conn_of("alice"), [first.receipt_id], T0 + 0.1)

    # One reaches a connection that dies before acking it, one finds the sender offline.
    unacked = send_text(world, conn_of("alice"), "15550001111", "again", "r2", T0 + 1)
    world.tick(T0 + 1.1)
    assert len(frames(world)) == 1
    offline = send_text(world, conn_of("alice"), "15550001111", "more", "r3", T0 + 1.5)
    world.disconnect(conn_of("alice"))
    world.tick(T0 + 2)
    assert frames(world) == []
    world.connect("c2c2c2c2", "alice", device, T0 + 3)
    out = frames(world, "c2c2c2c2")
    assert [type(f) for f in out] == [
        sim.ConnectedFrame,
        sim.ReceiptFrame,
        sim.ReceiptFrame,
        sim.OfflineSyncCompletedFrame,
    ]
    assert [f.message_ids for f in out[1:3]] == [[unacked.message_id], [offline.message_id]]  # type: ignore[union-attr]


def test_read_receipts_on_request() -> None:
    world = new_world()
    paired(world)
    sent = send_text(world, conn_of("alice"), "15550001111", "hi", "r1", T0)
    frames(world)
    world.read("alice", sent.message_id, T0 + 1)
    (read,) = frames(world)
    assert isinstance(read, sim.ReceiptFrame)
    assert (read.kind, read.message_ids, read.chat) == (
        "read",
        [sent.message_id],
        "15550001111@s.whatsapp.net",
    )
    assert error_code(lambda: world.read("alice", "3EB0NOPE", T0 + 1)) == "not_found"


def test_keys_rotate_every_20_messages() -> None:
    world = new_world()
    paired(world)
    frames(world)
    for n in range(CREDS_ROTATE_EVERY - 1):
        send_text(world, conn_of("alice"), "15550001111", "hi", f"r{n}", T0)
    assert kinds(world) == []
    says(world, "alice", "15550002222", "hello", T0)  # received messages count too
    out = frames(world)
    assert [type(f) for f in out] == [sim.MessageFrame, sim.CredsUpdateFrame]
    assert out[1].key_generation == 3  # type: ignore[union-attr]  # 1 at pairing, 2 right after


# ------------------------------------------------------------------------------ inbound


def test_inbound_is_delivered_live_and_redelivered_until_acked() -> None:
    world = new_world()
    device = paired(world)
    frames(world)
    message_id = says(world, "alice", "15550002222", "hello", T0 + 1)
    (message,) = frames(world, conn_of("alice"))
    assert message == sim.MessageFrame(
        message_id=message_id,
        chat="15550002222@s.whatsapp.net",
        sender="15550002222@s.whatsapp.net",
        timestamp=message.timestamp,
        text="hello",
    )
    world.disconnect(conn_of("alice"))  # not acked
    world.connect("c2c2c2c2", "alice", device, T0 + 2)
    assert [type(f) for f in frames(world)] == [
        sim.ConnectedFrame,
        sim.MessageFrame,
        sim.OfflineSyncCompletedFrame,
    ]
    world.ack("c2c2c2c2", [message_id], T0 + 2)
    world.disconnect("c2c2c2c2")
    world.connect("c3c3c3c3", "alice", device, T0 + 3)
    assert frames(world)[-1] == sim.OfflineSyncCompletedFrame(0)


def test_offline_inbound_waits_for_the_next_connect() -> None:
    world = new_world()
    device = paired(world)
    world.disconnect(conn_of("alice"))
    frames(world)
    first = says(world, "alice", "15550002222", "one", T0 + 1)
    second = says(world, "alice", "15550003333", "two", T0 + 2)
    assert frames(world) == []
    world.connect("c2c2c2c2", "alice", device, T0 + 3)
    out = frames(world, "c2c2c2c2")
    assert [getattr(f, "message_id", None) for f in out[1:3]] == [first, second]
    assert out[3] == sim.OfflineSyncCompletedFrame(2)
    assert world.stats().sessions["alice"].inbound == 2


def test_an_ack_on_a_closed_connection_is_lost() -> None:
    world = new_world()
    paired(world)
    message_id = says(world, "alice", "15550002222", "hello", T0)
    world.disconnect(conn_of("alice"))
    assert error_code(lambda: world.ack(conn_of("alice"), [message_id], T0)) == sim.NOT_CONNECTED
    assert message_id in world.sessions["alice"].inbox


FILE = sim.SimMedia(direct_path="ab" * 16, mime="image/jpeg", size=1234, sha256="cd" * 32, width=10, height=20)


def test_what_a_contact_sends_becomes_the_frame_the_client_reads() -> None:
    world = new_world()
    paired(world)
    mine = send_text(world, conn_of("alice"), "15550001111", "hi", "t1", T0).message_id
    frames(world)
    contact = "15550002222@s.whatsapp.net"

    def sent(req: sim.InboundRequest, file: sim.SimMedia | None = None) -> sim.MessageFrame:
        world.inbound("alice", req, file, T0)
        (frame,) = [f for f in frames(world) if isinstance(f, sim.MessageFrame)]
        return frame

    upload = sim.InboundFile(object=FILE.direct_path, mime="image/jpeg")  # the service put it on the media servers
    photo = sent(sim.InboundRequest(sender="15550002222", type="image", text="look", media=upload), FILE)
    assert (photo.type, photo.text, photo.media) == ("image", "look", FILE)
    reply = sent(sim.InboundRequest(sender="15550002222", text="yes", quoted_id=mine))
    assert reply.quoted == Quoted(mine, f"{phone_for('alice')}@s.whatsapp.net")  # our own message, quoted
    other = sent(sim.InboundRequest(sender="15550002222", text="and", quoted_id="3EB0AAAA"))
    assert other.quoted == Quoted("3EB0AAAA", contact)
    group = sent(sim.InboundRequest(sender="15550002222", text="hi all", group="120363000000000001@g.us", mentions=["15550003333@s.whatsapp.net"]))
    assert (group.chat, group.sender, group.mentions) == ("120363000000000001@g.us", contact, ["15550003333@s.whatsapp.net"])
    for field, value in (
        ("reaction", Reaction(mine, "👍")),
        ("edit", Edit("3EB0AAAA", "fixed")),
        ("revoke", Revoke("3EB0AAAA")),
        ("location", Location(1.0, 2.0)),
        ("contact", Contact("Ada", "BEGIN:VCARD\nEND:VCARD")),
        ("poll", Poll("Lunch?", ["Pizza", "Sushi"])),
    ):
        frame = sent(sim.InboundRequest(sender="15550002222", **{field: value}))  # type: ignore[arg-type]
        assert (frame.type, getattr(frame, field), frame.text) == (field, value, None)
    assert sent(sim.InboundRequest(sender="15550002222", type="unknown")).type == "unknown"
    # Unacked, they wait durably, files described and all.
    durable = msgspec.json.decode(msgspec.json.encode(world.durable()), type=Durable)
    assert durable.inbox["alice"][0] == photo


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({}, "text: required for a text message"),
        ({"type": "image"}, "media: a message of type 'image' needs its file"),
        ({"type": "text", "media": {"base64": "AAAA", "mime": "image/png"}}, "type: a file is one of"),
        ({"media": {"base64": "AAAA", "mime": "image/png"}}, "type: a file is one of"),
        ({"reaction": {"target_id": "T", "emoji": "x"}, "location": {"lat": 1, "lon": 2}}, "give at most one of"),
        ({"type": "edit", "reaction": {"target_id": "T", "emoji": "x"}}, "type: 'edit' does not go with reaction"),
        ({"type": "poll"}, "poll: required for a message of type 'poll'"),
        ({"text": "hi", "reaction": {"target_id": "T", "emoji": "x"}}, "text: a reaction has no text"),
    ],
)
def test_inbound_requests_that_do_not_say_one_thing_are_refused(fields: dict[str, object], words: str) -> None:
    world = new_world()
    paired(world)
    request = msgspec.convert({"from": "15550002222", **fields}, sim.InboundRequest)
    with pytest.raises(ContractError) as refused:
        world.inbound("alice", request, None, T0)
    assert refused.value.code == "invalid_request" and words in refused.value.message, refused.value.message


def test_inbound_needs_a_linked_device() -> None:
    world = new_world()
    world.connect("c1c1c1c1", "alice", None, T0)
    assert error_code(lambda: says(world, "alice", "15550002222", "hi", T0)) == "conflict"


# ------------------------------------------------------------------- unlink, drop, ban


def test_unlink_logs_the_device_out_for_good() -> None:
    world = new_world()
    device = paired(world)
    frames(world)
    assert world.unlink("alice", T0 + 1) is True
    assert frames(world) == [sim.LoggedOutFrame("unlinked from the phone")]
    world.connect("c2c2c2c2", "alice", device, T0 + 2)
    assert frames(world) == [sim.ConnectFailureFrame(401, "device is not linked (logged out)")]
    assert error_code(lambda: world.unlink("alice", T0 + 2)) == "conflict"


def test_drop_closes_abruptly_and_the_device_reconnects() -> None:
    world = new_world()
    device = paired(world)
    frames(world)
    assert world.drop("alice", T0 + 1) is True
    assert frames(world) == [sim.DisconnectedFrame("connection dropped")]
    assert world.drop("alice", T0 + 1) is False
    world.connect("c2c2c2c2", "alice", device, T0 + 2)
    assert kinds(world) == ["connected", "offline_sync_completed"]
    assert world.stats().sessions["alice"].overlaps == 0


def test_ban_closes_and_refuses_until_it_lifts() -> None:
    world = new_world()
    device = paired(world)
    frames(world)
    assert world.ban("alice", 100, T0) is True
    assert frames(world) == [sim.TemporaryBanFrame(402, 100)]
    world.connect("c2c2c2c2", "alice", device, T0 + 30.5)
    assert frames(world) == [sim.ConnectFailureFrame(402, "temporarily banned", expires_in=70)]
    world.connect("c3c3c3c3", "alice", device, T0 + 100)
    assert kinds(world) == ["connected", "offline_sync_completed"]


def test_logout_from_the_device_needs_its_secret() -> None:
    world = new_world()
    device = paired(world)
    world.disconnect(conn_of("alice"))
    assert error_code(lambda: world.logout(msgspec.structs.replace(device, secret="x"), T0)) == "unauthorized"
    world.logout(device, T0)
    world.logout(device, T0)  # gone already: fine
    assert world.devices == {}


def test_control_requests_name_a_known_valid_session() -> None:
    world = new_world()
    assert error_code(lambda: world.scan("nobody", T0)) == "not_found"
    assert error_code(lambda: world.drop("nobody", T0)) == "not_found"
    assert error_code(lambda: world.stats("nobody")) == "not_found"
    assert error_code(lambda: says(world, "bad*id", "15550002222", "hi", T0)) == "invalid_request"


# ------------------------------------------------------------------------- durability


def test_durable_state_survives_a_restart(tmp_path) -> None:
    world = new_world()
    device = paired(world)
    message_id = says(world, "alice", "15550002222", "kept", T0)
    send_text(world, conn_of("alice"), "15550001111", "stats are not kept", "r1", T0)
    state = StateFile(tmp_path / "wa_sim" / "state.json")
    state.save(world, T0)
    assert [p.name for p in state.path.parent.iterdir()] == ["state.json"]  # no temporary left

    again = new_world()
    StateFile(state.path).load_into(again)
    again.connect("c2c2c2c2", "alice", device, T0 + 10)
    out = frames(again, "c2c2c2c2")
    assert [type(f) for f in out] == [sim.ConnectedFrame, sim.MessageFrame, sim.OfflineSyncCompletedFrame]
    assert out[1].message_id == message_id  # type: ignore[union-attr]
    assert again.stats().sessions["alice"].messages == 0


def test_ban_survives_a_restart() -> None:
    world = new_world()
    device = paired(world)
    world.ban("alice", 600, T0)
    again = new_world()
    again.restore(msgspec.json.decode(msgspec.json.encode(world.durable()), type=Durable))
    again.connect("c2c2c2c2", "alice", device, T0 + 60)
    assert frames(again) == [sim.ConnectFailureFrame(402, "temporarily banned", expires_in=540)]


def test_saves_are_debounced_and_a_damaged_file_is_set_aside(tmp_path) -> None:
    path = tmp_path / "state.json"
    world = new_world()
    state = StateFile(path)
    paired(world)
    state.save_if_changed(world, T0)
    saved = path.read_bytes()
    says(world, "alice", "15550002222", "hi", T0)
    state.save_if_changed(world, T0 + 0.1)
    assert path.read_bytes() == saved  # too soon
    state.save_if_changed(world, T0 + 1)
    assert path.read_bytes() != saved

    path.write_text("{not json")
    fresh = new_world()
    StateFile(path).load_into(fresh)
    assert fresh.devices == {} and path.with_suffix(".damaged").exists()


def test_a_connect_that_arrives_after_the_client_hung_up_opens_nothing() -> None:
    world = new_world()
    device = paired(world)
    world.disconnect(conn_of("alice"))
    world.disconnect("late0001")  # the client gave up on a connect the server has not seen yet
    assert error_code(lambda: world.connect("late0001", "alice", device, T0 + 1)) == "conflict"
    world.connect("fresh001", "alice", device, T0 + 2)
    assert world.stats().sessions["alice"].overlaps == 0
