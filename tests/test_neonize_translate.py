"""Translation between whatsmeow's protobufs and ours, on real protobuf objects built with the
classes neonize ships; no Go library, no network."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts.messages import (
    Contact,
    Edit,
    Location,
    MessageParts,
    Poll,
    Quoted,
    Reaction,
    Revoke,
    SendableParts,
)
from services.devstack.processes import REPO_ROOT as ROOT
from services.session_actor import machine as m
from services.session_actor.adapters.base import (
    InboundMedia,
    InboundMessage,
    MessageRef,
    Outgoing,
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


def said(message: Any) -> tuple[str, str | None] | None:
    """(type, text) of a WhatsApp message; None for plumbing."""
    content = translate.message_content(message)
    return None if content is None else (content.type, content.text)


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
        (e2e.Message(audioMessage=e2e.AudioMessage(PTT=True)), ("voice", None)),
        (e2e.Message(audioMessage=e2e.AudioMessage(PTT=False)), ("audio", None)),
        (e2e.Message(documentMessage=e2e.DocumentMessage(caption="Q3", fileName="q3.pdf")), ("document", "Q3")),
        (e2e.Message(documentMessage=e2e.DocumentMessage(fileName="q3.pdf")), ("document", None)),
        (e2e.Message(stickerMessage=e2e.StickerMessage()), ("sticker", None)),
        (e2e.Message(locationMessage=e2e.LocationMessage(name="Home")), ("location", None)),
        (e2e.Message(liveLocationMessage=e2e.LiveLocationMessage(caption="on my way")), ("location", "on my way")),
        (e2e.Message(contactMessage=e2e.ContactMessage(displayName="Ada")), ("contact", None)),
        (e2e.Message(contactsArrayMessage=e2e.ContactsArrayMessage(displayName="2 contacts")), ("contact", None)),
        (e2e.Message(reactionMessage=e2e.ReactionMessage(text="👍")), ("reaction", None)),
        (e2e.Message(pollCreationMessage=e2e.PollCreationMessage(name="Lunch?")), ("poll", None)),
        (e2e.Message(pollCreationMessageV2=e2e.PollCreationMessage(name="Lunch?")), ("poll", None)),
        (e2e.Message(pollCreationMessageV3=e2e.PollCreationMessage(name="Lunch?")), ("poll", None)),
        # Votes arrive encrypted for the poll's creator.
        (e2e.Message(pollUpdateMessage=e2e.PollUpdateMessage()), ("unknown", None)),
        # Content next to plumbing is content.
        (
            e2e.Message(conversation="hi", messageContextInfo=e2e.MessageContextInfo(messageSecret=b"s")),
            ("text", "hi"),
        ),
    ],
)
def test_each_kind_of_message_gives_its_type_and_text(message: Any, content: tuple[str, str | None]) -> None:
    assert said(message) == content


@pytest.mark.parametrize("wrapper", translate.MESSAGE_WRAPPERS)
def test_wrapped_messages_are_read_for_what_they_wrap(wrapper: str) -> None:
    inner = e2e.Message(imageMessage=e2e.ImageMessage(caption="inside"))
    assert said(e2e.Message(**{wrapper: e2e.FutureProofMessage(message=inner)})) == ("image", "inside")


def test_wrappers_are_unwrapped_however_deep() -> None:
    view_once = e2e.Message(viewOnceMessageV2=e2e.FutureProofMessage(message=e2e.Message(conversation="once")))
    ephemeral = e2e.Message(ephemeralMessage=e2e.FutureProofMessage(message=view_once))
    assert said(ephemeral) == ("text", "once")
    # A wrapper around nothing is a message of a kind we do not know.
    assert said(e2e.Message(ephemeralMessage=e2e.FutureProofMessage())) == ("unknown", None)


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
    assert said(message) is None


@pytest.mark.parametrize(
    "message",
    [
        e2e.Message(buttonsMessage=e2e.ButtonsMessage(contentText="pick one")),
        e2e.Message(eventMessage=e2e.EventMessage(name="Party")),
        e2e.Message(groupInviteMessage=e2e.GroupInviteMessage(groupName="Team")),
    ],
)
def test_messages_of_kinds_we_do_not_know_are_unknown(message: Any) -> None:
    assert said(message) == ("unknown", None)


def message_event(content: Any, from_me: bool = False, timestamp: int = 1_700_000_000) -> Any:
    source = pb.MessageSource(Chat=jid("120363000000000001", "g.us"), Sender=jid("15550002222", device=3), IsFromMe=from_me)
    return pb.Message(Info=pb.MessageInfo(MessageSource=source, ID="M1", Timestamp=timestamp), Message=content)


async def no_download(message: Any) -> bytes:
    raise AssertionError("nothing is downloaded while translating")


SHA = bytes(range(32))


def inbound(content: Any) -> InboundMessage:
    message = translate.inbound_message(message_event(content), no_download)
    assert message is not None
    return message


def test_an_image_describes_its_file_and_downloads_through_its_own_part() -> None:
    context = e2e.ContextInfo(
        stanzaID="Q1", participant="15550001111@s.whatsapp.net", mentionedJID=["15550003333@s.whatsapp.net"]
    )
    image = e2e.ImageMessage(
        caption="a cat", mimetype="image/png", fileLength=120_000, fileSHA256=SHA, width=640, height=480,
        directPath="/v/t62/1.enc", mediaKey=b"k" * 32, contextInfo=context,
    )  # fmt: skip
    message = inbound(e2e.Message(imageMessage=image))
    assert (message.type, message.text) == ("image", "a cat")
    assert message.parts == MessageParts(quoted=Quoted("Q1", "15550001111@s.whatsapp.net"), mentions=["15550003333@s.whatsapp.net"])
    assert message.media == InboundMedia(
        mime="image/png", download=no_download, size=120_000, sha256=SHA.hex(), width=640, height=480
    )
    # What reaches DownloadAny: the part alone, in the field it looks in, keys and path kept.
    (downloaded,) = message.media.download.args  # type: ignore[union-attr]
    parsed = e2e.Message.FromString(downloaded.SerializeToString())
    assert [d.name for d, _ in parsed.ListFields()] == ["imageMessage"]
    assert (parsed.imageMessage.directPath, parsed.imageMessage.mediaKey) == ("/v/t62/1.enc", b"k" * 32)


@pytest.mark.parametrize(
    ("content", "kind", "field", "described"),
    [
        (
            e2e.Message(audioMessage=e2e.AudioMessage(PTT=True, seconds=7, mimetype="audio/ogg; codecs=opus")),
            "voice", "audioMessage", {"mime": "audio/ogg; codecs=opus", "seconds": 7},
        ),
        (e2e.Message(audioMessage=e2e.AudioMessage(seconds=200)), "audio", "audioMessage", {"mime": "audio/mpeg", "seconds": 200}),
        (
            e2e.Message(videoMessage=e2e.VideoMessage(seconds=12, width=1280, height=720, fileLength=9)),
            "video", "videoMessage", {"mime": "video/mp4", "seconds": 12, "width": 1280, "height": 720, "size": 9},
        ),
        # A round video message: DownloadAny knows only videoMessage.
        (e2e.Message(ptvMessage=e2e.VideoMessage(seconds=3)), "video", "videoMessage", {"mime": "video/mp4", "seconds": 3}),
        (
            e2e.Message(documentMessage=e2e.DocumentMessage(fileName="q3.pdf", mimetype="application/pdf")),
            "document", "documentMessage", {"mime": "application/pdf", "filename": "q3.pdf"},
        ),
        (
            e2e.Message(documentWithCaptionMessage=e2e.FutureProofMessage(message=e2e.Message(
                documentMessage=e2e.DocumentMessage(fileName="q3.pdf", caption="the figures")))),
            "document", "documentMessage", {"mime": "application/octet-stream", "filename": "q3.pdf"},
        ),
        (e2e.Message(stickerMessage=e2e.StickerMessage(width=512, height=512)), "sticker", "stickerMessage", {"mime": "image/webp", "width": 512, "height": 512}),
    ],
)  # fmt: skip
def test_every_kind_of_file_is_described_from_its_message(content: Any, kind: str, field: str, described: dict[str, Any]) -> None:
    message = inbound(content)
    assert message.type == kind
    assert message.media == InboundMedia(download=no_download, **described)
    (downloaded,) = message.media.download.args  # type: ignore[union-attr]
    assert [d.name for d, _ in downloaded.ListFields()] == [field]


def test_reactions_edits_and_revokes_name_their_target() -> None:
    react = inbound(e2e.Message(reactionMessage=e2e.ReactionMessage(key={"ID": "T1", "fromMe": True}, text="👍")))
    assert (react.type, react.parts.reaction) == ("reaction", Reaction("T1", "👍"))
    removed = inbound(e2e.Message(reactionMessage=e2e.ReactionMessage(key={"ID": "T1"}, text="")))
    assert removed.parts.reaction == Reaction("T1", "")  # an empty emoji takes the reaction back
    protocol = e2e.ProtocolMessage(
        key={"ID": "T2"}, type=e2e.ProtocolMessage.MESSAGE_EDIT, editedMessage=e2e.Message(conversation="fixed")
    )
    edited = inbound(e2e.Message(editedMessage=e2e.FutureProofMessage(message=e2e.Message(protocolMessage=protocol))))
    assert (edited.type, edited.parts.edit, edited.text) == ("edit", Edit("T2", "fixed"), None)
    revoked = inbound(e2e.Message(protocolMessage=e2e.ProtocolMessage(key={"ID": "T3"}, type=e2e.ProtocolMessage.REVOKE)))
    assert (revoked.type, revoked.parts.revoke) == ("revoke", Revoke("T3"))
    # Trap: an unset type reads as REVOKE, the enum's first value: that is plumbing, not a delete.
    assert translate.message_content(e2e.Message(protocolMessage=e2e.ProtocolMessage(key={"ID": "T4"}))) is None


def test_locations_contacts_and_polls_keep_what_they_say() -> None:
    place = e2e.LocationMessage(degreesLatitude=52.52, degreesLongitude=13.405, name="Office", address="Unter den Linden 1")
    assert inbound(e2e.Message(locationMessage=place)).parts.location == Location(52.52, 13.405, "Office", "Unter den Linden 1")
    live = inbound(e2e.Message(liveLocationMessage=e2e.LiveLocationMessage(degreesLatitude=-33.9, degreesLongitude=18.4)))
    assert live.parts.location == Location(-33.9, 18.4)
    vcard = "BEGIN:VCARD\nVERSION:3.0\nFN:Ada\nEND:VCARD"
    card = inbound(e2e.Message(contactMessage=e2e.ContactMessage(displayName="Ada", vcard=vcard)))
    assert (card.type, card.parts.contact) == ("contact", Contact("Ada", vcard))
    other = vcard.replace("Ada", "Grace")
    cards = e2e.ContactsArrayMessage(contacts=[e2e.ContactMessage(displayName="Ada", vcard=vcard), e2e.ContactMessage(displayName="Grace", vcard=other)])
    assert inbound(e2e.Message(contactsArrayMessage=cards)).parts.contact == Contact("Ada", f"{vcard}\n{other}")
    options = [e2e.PollCreationMessage.Option(optionName=name) for name in ("Pizza", "Sushi")]
    poll = inbound(e2e.Message(pollCreationMessageV3=e2e.PollCreationMessage(name="Lunch?", options=options)))
    assert (poll.type, poll.parts.poll) == ("poll", Poll("Lunch?", ["Pizza", "Sushi"]))


def test_a_reply_in_a_group_names_the_quote_and_the_participant() -> None:
    text = e2e.ExtendedTextMessage(text="me too", contextInfo=e2e.ContextInfo(stanzaID="Q9", participant="15550004444@s.whatsapp.net"))
    message = inbound(e2e.Message(extendedTextMessage=text))
    assert (message.chat, message.sender) == ("120363000000000001@g.us", "15550002222:3@s.whatsapp.net")
    assert (message.type, message.text, message.parts) == ("text", "me too", MessageParts(quoted=Quoted("Q9", "15550004444@s.whatsapp.net")))
    unknown = inbound(e2e.Message(buttonsMessage=e2e.ButtonsMessage(contentText="pick one")))
    assert (unknown.type, unknown.media, unknown.text) == ("unknown", None, None)


@pytest.mark.parametrize(
    ("text", "code", "permanent"),
    [
        ("download failed with status code 404", "media_unavailable", True),
        ("download failed with status code 410", "media_unavailable", True),
        ("no url present", "media_unavailable", True),
        ("didn't find any attachments in message", "media_unavailable", True),
        ("failed to refresh media connections: websocket not connected", "media_download_failed", False),
        ("hash of media plaintext doesn't match", "media_download_failed", False),
    ],
)
def test_download_errors_are_classified(text: str, code: str, permanent: bool) -> None:
    error = translate.download_error(text)
    assert (error.code, error.permanent) == (code, permanent) and text in error.message


def test_a_message_event_becomes_an_inbound_message() -> None:
    event = message_event(e2e.Message(conversation="hello"), from_me=True, timestamp=1_700_000_000_000)
    assert translate.inbound_message(event, no_download) == InboundMessage(
        message_id="M1",
        chat="120363000000000001@g.us",
        sender="15550002222:3@s.whatsapp.net",
        from_me=True,
        type="text",
        timestamp=datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
        text="hello",
        ack=None,
    )
    assert translate.inbound_message(message_event(e2e.Message(protocolMessage=e2e.ProtocolMessage())), no_download) is None


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
    assert said(message) == ("text", "hello")


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
    assert said(message) == (kind, caption)


def test_audio_goes_as_a_file_and_documents_carry_their_name() -> None:
    audio = translate.media_message(OutgoingMedia("audio", b"ID3", "audio/mpeg", caption="ignored"), upload_response(3), 1)
    assert audio.audioMessage.HasField("PTT") and not audio.audioMessage.PTT
    assert said(audio) == ("audio", None)  # an audio message has no caption
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
    assert said(message) == ("document", "the figures")


CHAT = "15550002222@s.whatsapp.net"
GROUP = "120363000000000001@g.us"
OWN = "15550009999:7@s.whatsapp.net"


def built(chat: str, message: Outgoing, upload: Any = None) -> Any:
    """As Go receives it: serialized, then parsed."""
    made = translate.outgoing_message(chat, message, own_jid=OWN, now_ms=1_700_000_000_000, upload=upload)
    return e2e.Message.FromString(made.SerializeToString())


def test_a_reply_quotes_its_message_by_id_and_author() -> None:
    theirs = built(CHAT, Outgoing(text="sure", reply_to=MessageRef("Q1", from_me=False)))
    assert [d.name for d, _ in theirs.ListFields()] == ["extendedTextMessage"]
    context = theirs.extendedTextMessage.contextInfo
    assert (context.stanzaID, context.participant) == ("Q1", CHAT)  # in a chat of two: the other one
    ours = built(CHAT, Outgoing(text="as I said", reply_to=MessageRef("Q2", from_me=True)))
    assert ours.extendedTextMessage.contextInfo.participant == "15550009999@s.whatsapp.net"
    in_group = built(GROUP, Outgoing(text="+1", reply_to=MessageRef("Q3", False, "15550004444:2@s.whatsapp.net")))
    assert in_group.extendedTextMessage.contextInfo.participant == "15550004444@s.whatsapp.net"
    unknown_author = built(GROUP, Outgoing(text="+1", reply_to=MessageRef("Q4", from_me=False)))
    assert not unknown_author.extendedTextMessage.contextInfo.HasField("participant")
    # Read back as we read WhatsApp's messages.
    assert translate.message_content(theirs).text == "sure"
    assert translate.inbound_message(message_event(theirs), no_download).parts.quoted == Quoted("Q1", CHAT)  # type: ignore[union-attr]


def test_a_file_that_replies_carries_the_quote_in_its_own_part() -> None:
    photo = OutgoingMedia("image", b"\xff\xd8\xff", "image/jpeg", caption="this one")
    image = built(CHAT, Outgoing(media=photo, reply_to=MessageRef("Q1", from_me=False)), upload_response(3))
    assert image.imageMessage.contextInfo.stanzaID == "Q1" and image.imageMessage.caption == "this one"
    pdf = OutgoingMedia("document", b"%PDF-", "application/pdf", filename="a.pdf", caption="see")
    document = built(CHAT, Outgoing(media=pdf, reply_to=MessageRef("Q2", from_me=True)), upload_response(5))
    assert document.documentWithCaptionMessage.message.documentMessage.contextInfo.stanzaID == "Q2"


def test_reactions_are_keyed_to_their_target_as_whatsmeow_keys_them() -> None:
    on_theirs = built(CHAT, Outgoing(parts=SendableParts(reaction=Reaction("T1", "❤️")), target=MessageRef("T1", from_me=False)))
    key = on_theirs.reactionMessage.key
    assert (key.remoteJID, key.ID, key.fromMe, key.HasField("participant")) == (CHAT, "T1", False, False)
    assert (on_theirs.reactionMessage.text, on_theirs.reactionMessage.senderTimestampMS) == ("❤️", 1_700_000_000_000)
    in_group = built(GROUP, Outgoing(parts=SendableParts(reaction=Reaction("T2", "")), target=MessageRef("T2", False, "15550004444:2@s.whatsapp.net")))
    assert (in_group.reactionMessage.key.participant, in_group.reactionMessage.text) == ("15550004444@s.whatsapp.net", "")
    on_ours = built(GROUP, Outgoing(parts=SendableParts(reaction=Reaction("T3", "👍")), target=MessageRef("T3", from_me=True)))
    assert on_ours.reactionMessage.key.fromMe and not on_ours.reactionMessage.key.HasField("participant")
    assert inbound(on_theirs).parts.reaction == Reaction("T1", "❤️")


def test_edits_and_revokes_are_protocol_messages_about_their_target() -> None:
    edit = built(CHAT, Outgoing(parts=SendableParts(edit=Edit("T1", "fixed typo")), target=MessageRef("T1", from_me=True)))
    protocol = edit.editedMessage.message.protocolMessage
    assert (protocol.type, protocol.key.ID, protocol.key.fromMe, protocol.key.remoteJID) == (e2e.ProtocolMessage.MESSAGE_EDIT, "T1", True, CHAT)
    assert (protocol.editedMessage.conversation, protocol.timestampMS) == ("fixed typo", 1_700_000_000_000)
    revoke = built(CHAT, Outgoing(parts=SendableParts(revoke=Revoke("T2")), target=MessageRef("T2", from_me=True)))
    assert (revoke.protocolMessage.type, revoke.protocolMessage.key.ID) == (e2e.ProtocolMessage.REVOKE, "T2")
    assert revoke.protocolMessage.HasField("type")  # REVOKE is 0: it must be set, not left unset
    admin = built(GROUP, Outgoing(parts=SendableParts(revoke=Revoke("T3")), target=MessageRef("T3", False, "15550004444@s.whatsapp.net")))
    assert (admin.protocolMessage.key.fromMe, admin.protocolMessage.key.participant) == (False, "15550004444@s.whatsapp.net")
    assert (inbound(edit).type, inbound(edit).parts.edit) == ("edit", Edit("T1", "fixed typo"))
    assert (inbound(revoke).type, inbound(revoke).parts.revoke) == ("revoke", Revoke("T2"))


def test_locations_and_contacts_are_sent_as_whatsapp_shows_them() -> None:
    place = built(CHAT, Outgoing(parts=SendableParts(location=Location(52.52, 13.405, "Office", "Unter den Linden 1"))))
    assert (place.locationMessage.degreesLatitude, place.locationMessage.degreesLongitude) == (52.52, 13.405)
    assert inbound(place).parts.location == Location(52.52, 13.405, "Office", "Unter den Linden 1")
    bare = built(CHAT, Outgoing(parts=SendableParts(location=Location(0.0, 0.0))))
    assert not bare.locationMessage.HasField("name") and inbound(bare).parts.location == Location(0.0, 0.0)
    vcard = "BEGIN:VCARD\nVERSION:3.0\nFN:Ada\nEND:VCARD"
    card = built(CHAT, Outgoing(parts=SendableParts(contact=Contact("Ada", vcard))))
    assert (card.contactMessage.displayName, card.contactMessage.vcard) == ("Ada", vcard)
    assert inbound(card).parts.contact == Contact("Ada", vcard)


def test_a_reaction_without_its_resolved_target_is_refused_for_good() -> None:
    with pytest.raises(SendError) as refused:
        translate.outgoing_message(CHAT, Outgoing(parts=SendableParts(reaction=Reaction("T1", "👍"))), own_jid=OWN, now_ms=1)
    assert refused.value.permanent


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
