"""Translation between whatsmeow's protobufs and ours, on real protobuf objects built with the
classes neonize ships; no Go library, no network."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from typing import Any

import pytest

from services.devstack.processes import REPO_ROOT as ROOT
from services.session_actor import machine as m
from services.session_actor.adapters.base import (
    InboundMessage,
    OutgoingMedia,
    Receipt,
    SendError,
    Undecryptable,
)
from services.session_actor.adapters.neonize import translate
from services.session_actor.adapters.neonize.protobufs import e2e, pb

NOW = 7.0


def jid(user: str, server: str = "s.whatsapp.net", device: int = 0, raw_agent: int = 0) -> Any:
    return pb.JID(User=user, Server=server, RawAgent=raw_agent, Device=device, Integrator=0)


def test_importing_the_translation_does_not_load_the_go_library() -> None:
    script = textwrap.dedent(
        """
        import sys
        import services.session_actor.adapters.neonize.translate
        maps = open("/proc/self/maps").read()
        assert "neonize-linux-amd64.so" not in maps, "the Go library is mapped"
        loaded = sorted(name for name in sys.modules if name == "neonize" or name.startswith("neonize."))
        assert not loaded, loaded
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------------ inbound


def test_jids_are_written_as_whatsmeow_writes_them() -> None:
    assert translate.jid_string(jid("15550001111")) == "15550001111@s.whatsapp.net"
    assert translate.jid_string(jid("15550001111", device=7)) == "15550001111:7@s.whatsapp.net"
    assert translate.jid_string(jid("15550001111", "lid", device=7, raw_agent=1)) == "15550001111.1:7@lid"
    assert translate.jid_string(jid("", "g.us")) == "g.us"


@pytest.mark.parametrize("stamp", [1_700_000_000, 1_700_000_000_000, 1_700_000_000_000_000_000])
def test_times_in_seconds_milliseconds_or_nanoseconds_are_told_apart_by_size(stamp: int) -> None:
    assert translate.epoch_datetime(stamp) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("message", "content"),
    [
        (e2e.Message(conversation="hello"), ("text", "hello")),
        (e2e.Message(extendedTextMessage=e2e.ExtendedTextMessage(text="a link")), ("text", "a link")),
        (e2e.Message(imageMessage=e2e.ImageMessage(caption="a cat")), ("image", "a cat")),
        (e2e.Message(imageMessage=e2e.ImageMessage()), ("image", None)),
        (e2e.Message(videoMessage=e2e.VideoMessage(caption="a clip")), ("video", "a clip")),
        (e2e.Message(ptvMessage=e2e.VideoMessage(caption="round")), ("video", "round")),
        (e2e.Message(audioMessage=e2e.AudioMessage(PTT=True)), ("audio", None)),
        (e2e.Message(documentMessage=e2e.DocumentMessage(caption="Q3", fileName="q3.pdf")), ("document", "Q3")),
        (e2e.Message(documentMessage=e2e.DocumentMessage(fileName="q3.pdf")), ("document", None)),
        (e2e.Message(stickerMessage=e2e.StickerMessage()), ("sticker", None)),
        (e2e.Message(locationMessage=e2e.LocationMessage(name="Home")), ("location", "Home")),
        (e2e.Message(liveLocationMessage=e2e.LiveLocationMessage(caption="on my way")), ("location", "on my way")),
        (e2e.Message(contactMessage=e2e.ContactMessage(displayName="Ada")), ("contact", "Ada")),
        (e2e.Message(contactsArrayMessage=e2e.ContactsArrayMessage(displayName="2 contacts")), ("contact", "2 contacts")),
        (e2e.Message(reactionMessage=e2e.ReactionMessage(text="👍")), ("reaction", "👍")),
        (e2e.Message(pollCreationMessage=e2e.PollCreationMessage(name="Lunch?")), ("poll", "Lunch?")),
        (e2e.Message(pollCreationMessageV2=e2e.PollCreationMessage(name="Lunch?")), ("poll", "Lunch?")),
        (e2e.Message(pollCreationMessageV3=e2e.PollCreationMessage(name="Lunch?")), ("poll", "Lunch?")),
        (e2e.Message(pollUpdateMessage=e2e.PollUpdateMessage()), ("poll_vote", None)),
        # Content next to plumbing is content.
        (
            e2e.Message(conversation="hi", messageContextInfo=e2e.MessageContextInfo(messageSecret=b"s")),
            ("text", "hi"),
        ),
    ],
)
def test_each_kind_of_message_gives_its_type_and_text(message: Any, content: tuple[str, str | None]) -> None:
    assert translate.message_content(message) == content


@pytest.mark.parametrize("wrapper", translate.MESSAGE_WRAPPERS)
def test_wrapped_messages_are_read_for_what_they_wrap(wrapper: str) -> None:
    inner = e2e.Message(imageMessage=e2e.ImageMessage(caption="inside"))
    assert translate.message_content(e2e.Message(**{wrapper: e2e.FutureProofMessage(message=inner)})) == (
        "image",
        "inside",
    )


def test_wrappers_are_unwrapped_however_deep() -> None:
    view_once = e2e.Message(viewOnceMessageV2=e2e.FutureProofMessage(message=e2e.Message(conversation="once")))
    ephemeral = e2e.Message(ephemeralMessage=e2e.FutureProofMessage(message=view_once))
    assert translate.message_content(ephemeral) == ("text", "once")
    # A wrapper around nothing is a message of a kind we do not know.
    assert translate.message_content(e2e.Message(ephemeralMessage=e2e.FutureProofMessage())) == ("other", None)


@pytest.mark.parametrize(
    "message",
    [
        e2e.Message(),
        e2e.Message(protocolMessage=e2e.ProtocolMessage()),
        e2e.Message(senderKeyDistributionMessage=e2e.SenderKeyDistributionMessage(groupID="g")),
        e2e.Message(messageContextInfo=e2e.MessageContextInfo(messageSecret=b"s")),
        e2e.Message(
            protocolMessage=e2e.ProtocolMessage(),
            messageContextInfo=e2e.MessageContextInfo(messageSecret=b"s"),
        ),
        e2e.Message(ephemeralMessage=e2e.FutureProofMessage(message=e2e.Message(protocolMessage=e2e.ProtocolMessage()))),
    ],
)
def test_plumbing_only_messages_are_nobodys_content(message: Any) -> None:
    assert translate.message_content(message) is None


@pytest.mark.parametrize(
    "message",
    [
        e2e.Message(buttonsMessage=e2e.ButtonsMessage(contentText="pick one")),
        e2e.Message(eventMessage=e2e.EventMessage(name="Party")),
        e2e.Message(groupInviteMessage=e2e.GroupInviteMessage(groupName="Team")),
    ],
)
def test_messages_of_kinds_we_do_not_know_are_other(message: Any) -> None:
    assert translate.message_content(message) == ("other", None)


def message_event(content: Any, from_me: bool = False, timestamp: int = 1_700_000_000) -> Any:
    source = pb.MessageSource(Chat=jid("120363000000000001", "g.us"), Sender=jid("15550002222", device=3), IsFromMe=from_me)
    return pb.Message(Info=pb.MessageInfo(MessageSource=source, ID="M1", Timestamp=timestamp), Message=content)


def test_a_message_event_becomes_an_inbound_message() -> None:
    event = message_event(e2e.Message(conversation="hello"), from_me=True, timestamp=1_700_000_000_000)
    assert translate.inbound_message(event) == InboundMessage(
        message_id="M1",
        chat="120363000000000001@g.us",
        sender="15550002222:3@s.whatsapp.net",
        from_me=True,
        type="text",
        timestamp=datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
        text="hello",
        ack=None,
    )
    assert translate.inbound_message(message_event(e2e.Message(protocolMessage=e2e.ProtocolMessage()))) is None


def test_receipts_of_the_kinds_we_report() -> None:
    source = pb.MessageSource(Chat=jid("15550002222"), Sender=jid("15550002222"))
    expected = {"DELIVERED": "delivered", "READ": "read", "PLAYED": "played"}
    for name in pb.Receipt.ReceiptType.keys():
        event = pb.Receipt(MessageSource=source, MessageIDs=["A", "B"], Type=pb.Receipt.ReceiptType.Value(name))
        kind = expected.get(name)
        assert translate.receipt(event) == (Receipt(kind, ("A", "B"), "15550002222@s.whatsapp.net") if kind else None)
    # Unmapped types arrive unset; they would read as the first value, DELIVERED.
    assert translate.receipt(pb.Receipt(MessageSource=source, MessageIDs=["C"])) is None


def test_an_undecryptable_message_names_its_chat_and_sender() -> None:
    source = pb.MessageSource(Chat=jid("120363000000000001", "g.us"), Sender=jid("15550002222"))
    event = pb.UndecryptableMessage(Info=pb.MessageInfo(MessageSource=source, ID="U1", Timestamp=1))
    assert translate.undecryptable(event) == Undecryptable("U1", "120363000000000001@g.us", "15550002222@s.whatsapp.net")


def test_the_device_jid_comes_from_device_and_pair_status_events() -> None:
    assert translate.device_jid(pb.Device(JID=jid("15550001111", device=7))) == "15550001111:7@s.whatsapp.net"
    assert translate.device_jid(pb.Device()) is None
    assert translate.device_jid(pb.Device(JID=jid(""))) is None  # not paired yet
    paired = pb.PairStatus(ID=jid("15550001111", device=7), Status=pb.PairStatus.SUCCESS)
    assert translate.paired_jid(paired) == "15550001111:7@s.whatsapp.net"
    assert translate.paired_jid(pb.PairStatus(ID=jid("1"), Status=pb.PairStatus.ERROR, Error="bad")) is None
    assert translate.paired_jid(pb.PairStatus(ID=jid("1"))) is None  # status unset


# ---------------------------------------------------------------- connection failures


@pytest.mark.parametrize(("name", "code"), translate.CONNECT_FAILURE_CODES.items())
def test_connect_failure_reasons_become_whatsmeows_codes(name: str, code: int) -> None:
    event = pb.ConnectFailure(Reason=pb.ConnectFailureReason.Value(name), Message="why")
    assert translate.connect_failure(event, NOW) == m.ConnectFailure(NOW, code, "why")


def test_every_connect_failure_reason_neonize_knows_has_a_code() -> None:
    assert set(pb.ConnectFailureReason.keys()) == set(translate.CONNECT_FAILURE_CODES)


def test_a_connect_failure_code_neonize_does_not_map_is_read_from_the_raw_node() -> None:
    def failure(*attrs: Any) -> Any:
        return pb.ConnectFailure(Message="cat expired", Raw=pb.Node(Tag="failure", Attrs=list(attrs)))

    as_text = failure(pb.NodeAttrs(name="reason", text="413"))
    as_integer = failure(pb.NodeAttrs(name="location", text="frc"), pb.NodeAttrs(name="reason", integer=414))
    assert translate.connect_failure(as_text, NOW) == m.ConnectFailure(NOW, 413, "cat expired")
    assert translate.connect_failure(as_integer, NOW) == m.ConnectFailure(NOW, 414, "cat expired")
    assert translate.connect_failure(failure(pb.NodeAttrs(name="reason", text="soon")), NOW).code == 0
    assert translate.connect_failure(failure(), NOW).code == 0


def test_logged_out_says_why_and_whether_while_connecting() -> None:
    on_connect = pb.LoggedOut(OnConnect=True, Reason=pb.LOGGED_OUT)
    assert translate.logged_out(on_connect, NOW) == m.LoggedOut(NOW, "logged_out (401) while connecting")
    gone = pb.LoggedOut(OnConnect=False, Reason=pb.MAIN_DEVICE_GONE)
    assert translate.logged_out(gone, NOW) == m.LoggedOut(NOW, "main_device_gone (403)")
    # Unmapped reasons arrive unset; without the HasField check they would read as GENERIC.
    assert translate.logged_out(pb.LoggedOut(OnConnect=False), NOW) == m.LoggedOut(NOW, "unmapped (0)")


@pytest.mark.parametrize(("name", "code"), translate.TEMP_BAN_CODES.items())
def test_temporary_ban_reasons_become_whatsmeows_codes(name: str, code: int) -> None:
    event = pb.TemporaryBan(Code=pb.TemporaryBan.TempBanReason.Value(name), Expire=3600)
    assert translate.temporary_ban(event, NOW) == m.TemporaryBan(NOW, code, 3600.0)


def test_a_temporary_ban_without_reason_or_expiry() -> None:
    assert set(pb.TemporaryBan.TempBanReason.keys()) == set(translate.TEMP_BAN_CODES)
    assert translate.temporary_ban(pb.TemporaryBan(), NOW) == m.TemporaryBan(NOW, 0, 0.0)


def test_stream_errors_drop_the_connection() -> None:
    assert translate.stream_error(pb.StreamError(Code="516"), NOW) == m.Disconnected(NOW, "stream error 516")
    assert translate.stream_error(pb.StreamError(), NOW) == m.Disconnected(NOW, "stream error without code")


# ----------------------------------------------------------------------------- outbound


@pytest.mark.parametrize(
    "to_jid",
    ["15550002222@s.whatsapp.net", "120363000000000001@g.us", "120363-1700000000@g.us", "123456789012@lid", "1203630000@newsletter"],
)
def test_recipients_we_accept_become_jids(to_jid: str) -> None:
    recipient = translate.recipient_jid(to_jid)
    assert f"{recipient.User}@{recipient.Server}" == to_jid
    assert (recipient.RawAgent, recipient.Device, recipient.Integrator, recipient.IsEmpty) == (0, 0, 0, False)
    assert recipient.IsInitialized()  # every field is `required` in the schema


@pytest.mark.parametrize(
    "to_jid", ["abc", "123@s.whatsapp.net", "15550002222@example.com", "@g.us", "1555000222a@s.whatsapp.net", "15550002222"]
)
def test_recipients_whatsapp_cannot_deliver_to_are_refused_for_good(to_jid: str) -> None:
    with pytest.raises(SendError) as refused:
        translate.recipient_jid(to_jid)
    assert refused.value.code == "invalid_recipient" and refused.value.permanent


def test_a_text_is_a_plain_conversation_message() -> None:
    message = translate.text_message("hello")
    assert [d.name for d, _ in message.ListFields()] == ["conversation"]
    assert translate.message_content(message) == ("text", "hello")


def upload_response(size: int) -> Any:
    """What whatsmeow's Upload answers (hand-made: offline nothing can be uploaded)."""
    return pb.UploadResponse(
        url="https://mmg.whatsapp.net/v/t62.7118-24/123_456.enc?ccb=11-4",
        DirectPath="/v/t62.7118-24/123_456.enc?ccb=11-4",
        Handle="",
        MediaKey=b"k" * 32,
        FileEncSHA256=b"e" * 32,
        FileSHA256=b"s" * 32,
        FileLength=size,
    )


@pytest.mark.parametrize(
    ("media", "field", "kind", "caption"),
    [
        (OutgoingMedia("image", b"\xff\xd8\xff", "image/jpeg", caption="a cat"), "imageMessage", "image", "a cat"),
        (OutgoingMedia("video", b"\0" * 10, "video/mp4", caption=None), "videoMessage", "video", None),
        (OutgoingMedia("audio", b"ID3", "audio/mpeg"), "audioMessage", "audio", None),
        (OutgoingMedia("document", b"%PDF-", "application/pdf", filename="Q3.pdf"), "documentMessage", "document", None),
    ],
)
def test_media_messages_are_built_from_the_upload(media: OutgoingMedia, field: str, kind: str, caption: str | None) -> None:
    upload = upload_response(len(media.data))
    built = translate.media_message(media, upload, 1_700_000_000)
    # As Go receives it: serialized, then parsed.
    message = e2e.Message.FromString(built.SerializeToString())
    assert [d.name for d, _ in message.ListFields()] == [field]
    part = getattr(message, field)
    assert (part.URL, part.directPath) == (upload.url, upload.DirectPath)
    assert (part.mediaKey, part.fileEncSHA256, part.fileSHA256) == (b"k" * 32, b"e" * 32, b"s" * 32)
    assert (part.fileLength, part.mimetype, part.mediaKeyTimestamp) == (len(media.data), media.mime, 1_700_000_000)
    # The inbound parser reads our own messages back as what they are.
    assert translate.message_content(message) == (kind, caption)


def test_audio_goes_as_a_file_and_documents_carry_their_name() -> None:
    audio = translate.media_message(OutgoingMedia("audio", b"ID3", "audio/mpeg", caption="ignored"), upload_response(3), 1)
    assert audio.audioMessage.HasField("PTT") and not audio.audioMessage.PTT
    assert translate.message_content(audio) == ("audio", None)  # an audio message has no caption
    document = translate.media_message(OutgoingMedia("document", b"%PDF-", "application/pdf", filename="Q3.pdf"), upload_response(5), 1)
    assert (document.documentMessage.fileName, document.documentMessage.title) == ("Q3.pdf", "Q3.pdf")
    unnamed = translate.media_message(OutgoingMedia("document", b"%PDF-", "application/pdf"), upload_response(5), 1)
    assert (unnamed.documentMessage.fileName, unnamed.documentMessage.title) == ("document", "document")


def test_a_captioned_document_goes_the_way_whatsapps_clients_send_it() -> None:
    captioned = OutgoingMedia("document", b"%PDF-", "application/pdf", filename="Q3.pdf", caption="the figures")
    message = translate.media_message(captioned, upload_response(5), 1)
    assert [d.name for d, _ in message.ListFields()] == ["documentWithCaptionMessage"]
    inner = message.documentWithCaptionMessage.message.documentMessage
    assert (inner.caption, inner.fileName, inner.URL) == ("the figures", "Q3.pdf", upload_response(5).url)
    assert translate.message_content(message) == ("document", "the figures")


def test_a_pair_code_request_sets_every_field_go_reads() -> None:
    params = translate.pair_phone_params("+1 (555) 000-1111")
    assert params.phone == "15550001111"
    assert (params.showPushNotification, params.clientType, params.clientDisplayName) == (True, 1, "Chrome (Linux)")
    assert all(params.HasField(name) for name in ("phone", "showPushNotification", "clientType", "clientDisplayName"))


# --------------------------------------------------------------------------- Go's errors


def describe(error: SendError) -> tuple[str, str, bool, bool]:
    return error.code, error.message, error.permanent, error.ambiguous


@pytest.mark.parametrize(
    ("text", "code", "permanent", "ambiguous"),
    [
        ("timed out waiting for message send response", "ambiguous", False, True),
        ("failed to send: websocket not connected", "not_connected", False, False),
        ("client is nil", "not_connected", False, False),
        ("the store doesn't contain a device JID", "not_logged_in", True, False),
        ("not logged in", "not_logged_in", True, False),
        ("can't send message to unknown server abc", "invalid_recipient", True, False),
        ("invalid JID", "invalid_recipient", True, False),
        ("server returned error 500", "send_failed", False, False),
    ],
)
def test_send_errors_are_classified(text: str, code: str, permanent: bool, ambiguous: bool) -> None:
    assert describe(translate.send_error(text)) == (code, text, permanent, ambiguous)


def test_upload_errors_are_retried_unless_the_session_cannot_send() -> None:
    for text in ("the store doesn't contain a device JID", "can't send message to unknown server abc"):
        assert describe(translate.upload_error(text)) == describe(translate.send_error(text))
    for text in ("upload failed with status code 500", "failed to refresh media connections: websocket not connected"):
        error = translate.upload_error(text)
        assert (error.code, error.permanent, error.ambiguous) == ("media_upload_failed", False, False)
        assert error.message == f"uploading the file to WhatsApp failed: {text}"
