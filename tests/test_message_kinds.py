"""Everything a WhatsApp message can be (issue #12): the contract additions, and every kind
end to end on the processes `make run` starts (NATS, MongoDB, the simulator): inbound from
the simulator through the actor to the media bucket, the events and history; outbound from
the contract through the queue and the actor to the simulator; read marks."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import msgspec
import pytest

from contracts.envelope import ContractError, decode
from contracts.messages import Location
from contracts.sending import SendText, check_body
from services.devstack.probes import EventTap, call, call_ok, wait_until
from services.devstack.processes import Stack
from services.devstack.scenarios import start_sending_stack
from tests.conftest import make_settings

BOB = "15550001111"
CAROL = "15550002222"
VCARD = "BEGIN:VCARD\nVERSION:3.0\nFN:Ada Lovelace\nTEL:+15550003333\nEND:VCARD"
PHOTO = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 400  # 100 KiB
VOICE = b"OggS" + bytes(3000)
PDF = b"%PDF-1.7\n" + b"x" * 5000


# ---------------------------------------------------------------------------- contract


def send(**body: Any) -> SendText:
    """A send request as intake decodes and checks it."""
    request = decode(msgspec.json.encode({"id": "x", "to": BOB, **body}), SendText)
    check_body(request)
    return request


def refused(**body: Any) -> str:
    with pytest.raises(ContractError) as info:
        send(**body)
    assert info.value.code == "invalid_request"
    return info.value.message


def test_a_send_is_exactly_one_message() -> None:
    assert send(text="hi").text == "hi"
    assert send(reaction={"target_id": "3EB0AA", "emoji": ""}).reaction is not None  # taking a reaction back
    assert send(text="the caption", media={"kind": "image", "url": "https://a.b/c.jpg"}, reply_to="3EB0AA").reply_to
    assert send(location={"lat": -33.9, "lon": 18.4}).location == Location(-33.9, 18.4)
    assert refused() == "text: required field is missing"  # as it always read
    assert refused(text="hi", reaction={"target_id": "T", "emoji": "x"}).startswith(
        "body: give exactly one of text, media, reaction, edit, revoke, location, contact (got text and reaction)"
    )
    assert refused(location={"lat": 1, "lon": 2}, contact={"name": "A", "vcard": VCARD}).endswith(
        "(got location and contact); `text` goes with `media` as its caption"
    )
    assert refused(reaction={"target_id": "T", "emoji": "x"}, reply_to="Q") == (
        "body: reply_to goes with a text or a file, not with a reaction"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"reaction": {"target_id": "", "emoji": "x"}}, "reaction.target_id: expected a WhatsApp message id of 1-128 characters"),
        ({"reaction": {"target_id": "T", "emoji": "x" * 33}}, "reaction.emoji: one emoji, at most 32 characters"),
        ({"edit": {"target_id": "T", "text": ""}}, "edit.text: expected 1-65536 characters"),
        ({"revoke": {"target_id": "T" * 129}}, "revoke.target_id: expected a WhatsApp message id"),
        ({"location": {"lat": 91, "lon": 0}}, "location.lat: expected degrees between -90 and 90, got 91.0"),
        ({"location": {"lat": 0, "lon": -180.5}}, "location.lon: expected degrees between -180 and 180"),
        ({"location": {"lat": 0, "lon": 0, "name": ""}}, "location.name: expected 1-1024 characters"),
        ({"contact": {"name": "Ada", "vcard": "Ada, +1555"}}, "contact.vcard: expected a vCard (BEGIN:VCARD"),
        ({"contact": {"name": "", "vcard": VCARD}}, "contact.name: expected 1-256 characters"),
        ({"reaction": {"target_id": 7, "emoji": "x"}}, "reaction.target_id: expected str, got int"),
    ],
)
def test_what_whatsapp_would_not_take_is_refused_with_the_field_named(body: dict[str, Any], message: str) -> None:
    assert refused(**body).startswith(message)


# ---------------------------------------------------------------------- end to end


@pytest.fixture
async def system(stack: Stack, nc: Any, tmp_path: Any, infra: Any) -> Any:
    settings = make_settings(
        infra,
        tmp_path,
        inbound_media_max_image=200 * 1024,  # a 300 KiB photo is over it
        inbound_media_attempts=2,
        inbound_media_retry_base=0.05,
        inbound_media_retry_cap=0.1,
    )
    stack.settings = settings
    tap = await start_sending_stack(stack, nc, settings, ["kinds"])
    yield settings, tap
    await tap.stop()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def message_of(tap: EventTap, message_id: str) -> dict[str, Any]:
    return await tap.wait_for("kinds", "message", lambda e: e["message_id"] == message_id, timeout=30)


@pytest.mark.slow
async def test_every_inbound_kind_reaches_the_events_the_media_bucket_and_history(system: Any, nc: Any) -> None:
    settings, tap = system
    s = settings.subjects

    async def contact_sends(**body: Any) -> str:
        return (await call_ok(nc, s.sim("kinds", "inbound"), {"from": CAROL, **body}))["message_id"]

    photo = await contact_sends(type="image", text="the damage", media={"base64": b64(PHOTO), "mime": "image/png", "width": 320, "height": 240})
    voice = await contact_sends(type="voice", media={"base64": b64(VOICE), "mime": "audio/ogg; codecs=opus", "seconds": 4})
    pdf = await contact_sends(type="document", media={"base64": b64(PDF), "mime": "application/pdf", "filename": "invoice.pdf"})
    reply = await contact_sends(text="see above", quoted_id=photo)
    group = await contact_sends(text="hi all @bob", group="120363000000000001@g.us", mentions=[f"{BOB}@s.whatsapp.net"])
    react = await contact_sends(reaction={"target_id": photo, "emoji": "😢"})
    edit = await contact_sends(edit={"target_id": reply, "text": "see the photo above"})
    revoke = await contact_sends(revoke={"target_id": group})
    place = await contact_sends(location={"lat": 52.52, "lon": 13.405, "name": "Workshop", "address": "Hauptstr. 1"})
    card = await contact_sends(contact={"name": "Ada Lovelace", "vcard": VCARD})
    poll = await contact_sends(poll={"name": "When?", "options": ["Mon", "Tue"]})
    unknown = await contact_sends(type="unknown")
    # Over the image limit: put on the media servers beforehand (larger than a NATS message).
    servers = await nc.jetstream().object_store(s.sim_media_bucket)
    await servers.put("large.png", PHOTO * 3)
    large = await contact_sends(type="image", media={"object": "large.png", "mime": "image/png"})

    bucket = await nc.jetstream().object_store(s.media_bucket)
    for message_id, data, kind in ((photo, PHOTO, "image"), (voice, VOICE, "voice"), (pdf, PDF, "document")):
        event = await message_of(tap, message_id)
        assert event["type"] == kind and event["media"]["size"] == len(data), event
        assert event["media"]["sha256"] == hashlib.sha256(data).hexdigest()
        stored = await bucket.get(event["media"]["media_id"])  # as any NATS client reads it
        assert hashlib.sha256(stored.data).hexdigest() == event["media"]["sha256"]
    assert (await message_of(tap, photo))["media"] | {"media_id": "", "sha256": ""} == {
        "media_id": "", "sha256": "", "mime": "image/png", "size": len(PHOTO), "width": 320, "height": 240,
    }  # fmt: skip
    assert (await message_of(tap, photo))["text"] == "the damage"
    assert (await message_of(tap, voice))["media"]["seconds"] == 4
    assert (await message_of(tap, pdf))["media"]["filename"] == "invoice.pdf"
    assert (await message_of(tap, reply))["quoted"] == {"message_id": photo, "sender": f"{CAROL}@s.whatsapp.net"}
    in_group = await message_of(tap, group)
    assert (in_group["chat"], in_group["sender"], in_group["mentions"]) == (
        "120363000000000001@g.us", f"{CAROL}@s.whatsapp.net", [f"{BOB}@s.whatsapp.net"],
    )  # fmt: skip
    assert (await message_of(tap, react))["reaction"] == {"target_id": photo, "emoji": "😢"}
    assert (await message_of(tap, edit))["edit"] == {"target_id": reply, "text": "see the photo above"}
    assert (await message_of(tap, revoke))["revoke"] == {"target_id": group}
    assert (await message_of(tap, place))["location"] == {"lat": 52.52, "lon": 13.405, "name": "Workshop", "address": "Hauptstr. 1"}
    assert (await message_of(tap, card))["contact"] == {"name": "Ada Lovelace", "vcard": VCARD}
    assert (await message_of(tap, poll))["poll"] == {"name": "When?", "options": ["Mon", "Tue"]}
    assert (await message_of(tap, unknown))["type"] == "unknown"
    too_large = (await message_of(tap, large))["media"]
    assert too_large["error"]["code"] == "media_too_large" and "media_id" not in too_large

    # WhatsApp's media servers fail every download: the event still comes, with the reason.
    await call_ok(nc, s.sim("kinds", "faults"), {"download_errors": 100})
    failing = await contact_sends(type="sticker", media={"base64": b64(PHOTO), "mime": "image/webp"})
    after = await contact_sends(text="did you get it?")
    failed = (await message_of(tap, failing))["media"]
    assert failed["error"]["code"] == "media_download_failed" and failed["error"]["message"].startswith("gave up after 2 attempts")
    await message_of(tap, after)
    await call_ok(nc, s.sim("kinds", "faults"), {"download_errors": 0})
    events = tap.of("kinds", "message")
    assert len(events) == len({e["message_id"] for e in events}) == 15  # each message once, none lost

    # History returns the new fields as the events carried them.
    async def history() -> list[dict[str, Any]]:
        page = await call_ok(nc, s.history("kinds", "messages"), {"limit": 50})
        return page["messages"] if len(page["messages"]) == 15 else []

    def without_times(message: dict[str, Any]) -> dict[str, Any]:  # MongoDB keeps milliseconds
        return {k: v for k, v in message.items() if k not in ("at", "timestamp")}

    stored = {m["message_id"]: m for m in await wait_until(history, timeout=30, what="15 messages in history")}
    for message_id in (photo, reply, group, react, edit, place, card, poll, failing):
        event = next(e for e in events if e["message_id"] == message_id)
        assert without_times(stored[message_id]) == without_times(event)


@pytest.mark.slow
async def test_every_outbound_kind_goes_through_the_queue_to_whatsapp_and_read_marks_at_once(system: Any, nc: Any) -> None:
    settings, tap = system
    s = settings.subjects

    async def sent(send_id: str, **body: Any) -> dict[str, Any]:
        await call_ok(nc, s.send("kinds"), {"id": send_id, "to": BOB, **body})
        return await tap.wait_for("kinds", "outbound", lambda e: e["id"] == send_id and e["state"] in ("sent", "failed"), 30)

    first = (await sent("t1", text="your invoice is ready"))["message_id"]
    theirs = (await call_ok(nc, s.sim("kinds", "inbound"), {"from": BOB, "text": "thanks!"}))["message_id"]
    await message_of(tap, theirs)
    outcomes = {
        "reply": await sent("reply", text="you're welcome", reply_to=theirs),
        "react": await sent("react", reaction={"target_id": theirs, "emoji": "👍"}),
        "edit": await sent("edit", edit={"target_id": first, "text": "your invoice (corrected) is ready"}),
        "place": await sent("place", location={"lat": 52.52, "lon": 13.405, "name": "Shop"}),
        "card": await sent("card", contact={"name": "Ada Lovelace", "vcard": VCARD}),
        "photo": await sent("photo", text="this one", reply_to=theirs, media={"kind": "image", "base64": b64(PHOTO[:2000])}),
        "revoke": await sent("revoke", revoke={"target_id": first}),
    }
    assert {send_id: o["state"] for send_id, o in outcomes.items()} == dict.fromkeys(outcomes, "sent")
    # WhatsApp takes no edit of a message this session did not send: failed, not retried.
    foreign = await sent("foreign-edit", edit={"target_id": theirs, "text": "x"})
    assert foreign["state"] == "failed" and foreign["error"]["code"] == "invalid_request"

    done = await call_ok(nc, s.session("kinds", "read"), {"chat": BOB, "message_ids": [theirs]})
    assert done == {"chat": f"{BOB}@s.whatsapp.net", "message_ids": [theirs]}
    stats = (await call_ok(nc, s.sim_stats, {"session_id": "kinds"}))["sessions"]["kinds"]
    assert stats["kinds"] == {
        "text": 2, "reply": 2, "reaction": 1, "edit": 1, "location": 1, "contact": 1, "media": 1, "revoke": 1, "read": 1,
    }  # fmt: skip
    assert stats["targets"] == {"reply": theirs, "react": theirs, "edit": first, "photo": theirs, "revoke": first}
    assert all(count == 1 for count in stats["received"].values())  # each at most once

    # A reaction that ends in the dead-letter queue is still a reaction when sent again from there.
    await call_ok(nc, s.sim("kinds", "faults"), {"send_errors": settings.send_max_attempts})
    assert (await sent("doomed", reaction={"target_id": theirs, "emoji": "🙏"}))["state"] == "failed"
    (entry,) = (await call_ok(nc, s.dlq("list"), {"session_id": "kinds"}))["entries"]
    (retried,) = (await call_ok(nc, s.dlq("retry"), {"seq": entry["seq"]}))["retried"]
    await tap.wait_for("kinds", "outbound", lambda e: e["id"] == retried["new_id"] and e["state"] == "sent", 30)
    again = (await call_ok(nc, s.sim_stats, {"session_id": "kinds"}))["sessions"]["kinds"]
    assert again["kinds"]["reaction"] == 2 and again["targets"][retried["new_id"]] == theirs

    reply = await call(nc, s.send("kinds"), {"id": "two", "to": BOB, "text": "hi", "location": {"lat": 0, "lon": 0}})
    assert reply.error is not None and reply.error.code == "invalid_request" and "got text and location" in reply.error.message
    unknown = await call(nc, s.session("ghost", "read"), {"chat": BOB, "message_ids": ["X"]})
    assert unknown.error is not None and unknown.error.code == "not_found"
