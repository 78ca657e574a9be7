"""`wactl send`: a text or a file (maybe replying to a message), a reaction, an edit, a
revoke, a location or a contact, checked here as the server would, and with --wait each
further state of the send until the one asked for (--until) or a failure."""

import asyncio
import base64
import re
import uuid
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from contracts.envelope import ContractError, decode
from contracts.events import OutboundEvent
from contracts.history import OutboundQuery, OutboundRecord
from contracts.sending import SendAccepted, SendText, check_body
from contracts.types import TERMINAL_OUTBOUND_STATES
from services.common.config import Settings
from services.common.media import MediaLimits, check_send, size_text
from services.wactl import render
from services.wactl.arguments import Json, Sid, given
from services.wactl.exits import EXIT_TIMEOUT, Failure, fail
from services.wactl.gateway import Feed, Gateway, convert, decode_event
from services.wactl.running import with_nats

# How far a send got; the final states rank last.
PROGRESS = {"queued": 0, "sent": 1, "delivered": 2, "read": 3, "failed": 4, "expired": 4}
FAILED = ("failed", "expired")


class Until(StrEnum):
    """The states --wait can wait for. `read` needs the recipient to open the message."""

    sent = "sent"
    delivered = "delivered"
    read = "read"


def send(
    ctx: typer.Context,
    sid: Sid,
    to: Annotated[str, typer.Argument(help="digits of an E.164 number, or a full JID")],
    text: Annotated[
        str | None,
        typer.Argument(
            help="message text; with a file, its caption (optional); with --react the emoji, with "
            "--edit the new text, with --location the place's name, with --contact the name shown"
        ),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option("--image", metavar="PATH|URL", help="send an image: a local file or an http(s) URL"),
    ] = None,
    document: Annotated[
        str | None, typer.Option("--document", metavar="PATH|URL", help="send a document (file or URL)")
    ] = None,
    audio: Annotated[
        str | None,
        typer.Option("--audio", metavar="PATH|URL", help="send an audio file (file or URL; no caption)"),
    ] = None,
    video: Annotated[
        str | None, typer.Option("--video", metavar="PATH|URL", help="send a video (file or URL)")
    ] = None,
    filename: Annotated[
        str | None, typer.Option(help="file name shown for a document (default: the file's own)")
    ] = None,
    mime: Annotated[str | None, typer.Option(help="MIME type of the file (default: guessed)")] = None,
    reply_to: Annotated[
        str | None, typer.Option(metavar="MESSAGE_ID", help="quote this message (with a text or a file)")
    ] = None,
    react: Annotated[
        str | None, typer.Option(metavar="MESSAGE_ID", help="react to this message with TEXT ('' takes it back)")
    ] = None,
    edit: Annotated[
        str | None, typer.Option(metavar="MESSAGE_ID", help="replace the text of a message the session sent")
    ] = None,
    revoke: Annotated[
        str | None, typer.Option(metavar="MESSAGE_ID", help="delete a message the session sent, for everyone")
    ] = None,
    location: Annotated[str | None, typer.Option(metavar="LAT,LON", help="send a location")] = None,
    address: Annotated[str | None, typer.Option(help="the address of --location")] = None,
    contact: Annotated[
        str | None, typer.Option(metavar="VCF", help="send the contact card of a .vcf file")
    ] = None,
    send_id: Annotated[str | None, typer.Option("--id", help="idempotency key (default: a new uuid)")] = None,
    send_at: Annotated[str | None, typer.Option(help="send no earlier than this RFC 3339 time")] = None,
    expires_at: Annotated[str | None, typer.Option(help="give up after this RFC 3339 time")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="follow the send until it is --until, or failed or expired")
    ] = False,
    until: Annotated[Until, typer.Option(help="with --wait: the state to wait for")] = Until.delivered,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits")] = 60.0,
    as_json: Json = False,
) -> None:
    """Send a text message, or a file with an optional caption, or a reaction, an edit, a
    revoke, a location or a contact (queued durably; sent to WhatsApp at most once per id).
    A local file goes inline (up to WA_MEDIA_INLINE_MAX, 700 KiB by default); put larger
    ones at a URL the gateway can reach."""
    sources = given(image=image, document=document, audio=audio, video=video)
    raw = given(id=send_id or str(uuid.uuid4()), to=to, send_at=send_at, expires_at=expires_at, reply_to=reply_to)
    raw.update(message_body(text, react=react, edit=edit, revoke=revoke, location=location, address=address, contact=contact))
    message = checked_send(raw, sources, filename, mime, ctx.obj.settings)
    with_nats(ctx, lambda gateway: send_and_follow(gateway, sid, message, until if wait else None, timeout, as_json))


def checked_send(
    raw: dict[str, Any], sources: dict[str, str], filename: str | None, mime: str | None, settings: Settings
) -> SendText:
    """The send request, with its file if one was given, checked before anything is sent."""
    if len(sources) > 1:
        fail("give at most one of --image, --document, --audio, --video")
    if not sources and (filename is not None or mime is not None):
        fail("--filename and --mime go with --image, --document, --audio or --video")
    if sources:
        ((kind, source),) = sources.items()
        raw["media"] = media_body(kind, source, filename, mime, settings)
    try:  # checked here as the server would, with the same messages
        message = decode(render.to_json(raw).encode(), SendText)
        check_body(message)
        check_send(message, MediaLimits.from_settings(settings))
    except ContractError as exc:
        fail(f"error {exc.code}: {exc.message}")
    return message


def message_body(
    text: str | None,
    *,
    react: str | None,
    edit: str | None,
    revoke: str | None,
    location: str | None,
    address: str | None,
    contact: str | None,
) -> dict[str, Any]:
    """The body of a send: the text as it is, or what one of the options makes of it."""
    chosen = given(react=react, edit=edit, revoke=revoke, location=location, contact=contact)
    if len(chosen) > 1:
        fail("give at most one of --react, --edit, --revoke, --location, --contact")
    if address is not None and location is None:
        fail("--address goes with --location")
    if react is not None:
        return {"reaction": {"target_id": react, "emoji": text or ""}}
    if edit is not None:
        return {"edit": {"target_id": edit, "text": text or ""}}
    if revoke is not None:
        if text is not None:
            fail("--revoke takes no text")
        return {"revoke": {"target_id": revoke}}
    if location is not None:
        lat, _, lon = location.partition(",")
        try:
            place: dict[str, Any] = {"lat": float(lat), "lon": float(lon)}
        except ValueError:
            fail(f"--location: expected LAT,LON in degrees, e.g. 52.52,13.405; got {location!r}")
        return {"location": {**place, **given(name=text, address=address)}}
    if contact is not None:
        try:
            vcard = Path(contact).expanduser().read_text()
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"--contact: cannot read {contact}: {getattr(exc, 'strerror', None) or exc}")
        return {"contact": {"name": text or vcard_name(vcard), "vcard": vcard}}
    return given(text=text)


def vcard_name(vcard: str) -> str:
    """The formatted name (FN) of a vCard, or "" (the server then says a name is needed)."""
    for line in vcard.splitlines():
        key, _, value = line.partition(":")
        if key.split(";")[0].strip().upper() == "FN":
            return value.strip()
    return ""


def media_body(
    kind: str, source: str, filename: str | None, mime: str | None, settings: Settings
) -> dict[str, Any]:
    """The `media` object of a send: a URL as it is, a local file inline (base64) if it fits."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", source):
        return given(kind=kind, url=source, filename=filename, mime=mime)
    path = Path(source).expanduser()
    try:
        size = path.stat().st_size
        if not path.is_file():
            fail(f"--{kind}: {source} is not a file")
        limit = settings.media_inline_max
        if size > limit:
            fail(
                f"--{kind}: {source} is {size_text(size)}; at most {size_text(limit)} can be sent "
                "from a file (it travels inline, inside NATS messages). Put it at an http(s) URL "
                f"the gateway can reach and pass --{kind} URL instead."
            )
        data = path.read_bytes()
    except OSError as exc:
        fail(f"--{kind}: cannot read {source}: {exc.strerror or exc}")
    if kind == "document" and filename is None:
        filename = path.name
    return given(kind=kind, base64=base64.b64encode(data).decode(), filename=filename, mime=mime)


async def send_and_follow(
    gateway: Gateway, sid: str, message: SendText, until: Until | None, timeout: float, as_json: bool
) -> int:
    """Send, print the reply, and with `until` follow the send until that state."""
    subject = gateway.subjects.event(sid, "outbound")
    feed = await gateway.tail(subject) if until is not None else None
    data = await gateway.call(gateway.subjects.send(sid), message)
    accepted = convert(data, SendAccepted)
    note = " (duplicate: accepted before, sent at most once)" if accepted.duplicate else ""
    typer.echo(render.to_json(data) if as_json else f"{accepted.state} {accepted.id}{note}")
    if feed is None or until is None:
        return 0
    return await follow_send(gateway, feed, sid, accepted, until, timeout, as_json)


async def follow_send(
    gateway: Gateway, feed: Feed, sid: str, accepted: SendAccepted, until: Until, timeout: float, as_json: bool
) -> int:
    """Print each further state of the send until `until` (0) or a failure (1).

    Events of one send can reach the stream out of order (`queued` is published by the
    queue, `sent` by the actor): a state behind one already shown is old news and skipped.
    """
    progress = PROGRESS["queued"]  # the reply said so
    final: OutboundEvent | None = None

    def show(event: OutboundEvent, raw: bytes | None = None) -> None:
        nonlocal progress, final
        if PROGRESS.get(event.state, 0) <= progress:
            return
        progress = PROGRESS[event.state]
        typer.echo(
            (raw.decode() if raw else render.to_json(event))
            if as_json
            else render.event_line("outbound", event)
        )
        if event.state in TERMINAL_OUTBOUND_STATES:
            final = event

    if accepted.duplicate:  # its earlier states happened before we listened: ask the history
        for event in await past_states(gateway, sid, accepted.id):
            show(event)
    deadline = asyncio.get_running_loop().time() + timeout
    while final is None and progress < PROGRESS[until]:
        msg = await feed.next(deadline)
        if msg is None:
            raise Failure(f"timed out after {timeout:g}s waiting for {accepted.id} to be {until}", EXIT_TIMEOUT)
        event = decode_event(msg)
        if isinstance(event, OutboundEvent) and event.id == accepted.id:
            show(event, msg.data)
    if final is not None and final.state in FAILED:
        raise Failure(f"send {accepted.id} {final.state}: {render.error_text(final.error) or 'no reason given'}")
    return 0


async def past_states(gateway: Gateway, sid: str, send_id: str) -> list[OutboundEvent]:
    """The outbound events of an earlier send, from persistence (none if it cannot tell)."""
    try:
        data = await gateway.call(gateway.subjects.history(sid, "outbound"), OutboundQuery(id=send_id))
    except (Failure, ContractError) as exc:
        typer.echo(f"(earlier states unknown: {getattr(exc, 'message', exc)})", err=True)
        return []
    record = convert(data, OutboundRecord)
    return [
        OutboundEvent(
            event_id=s.event_id,
            session_id=sid,
            at=s.at,
            id=send_id,
            state=s.state,
            message_id=s.message_id,
            error=s.error,
        )
        for s in record.history
    ]
