"""Media sends (issue #5): the contract addition, intake limits, downloading, and end to end.

The end-to-end tests run the real services (NATS, MongoDB, the simulator) and a small HTTP
server in this process that plays the web server holding the files.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from contracts.envelope import ContractError, decode
from contracts.internal import QueuedSend
from contracts.sending import Media, SendText
from contracts.types import utcnow
from services.common.media import (
    PAYLOAD_HEADROOM,
    MediaLimits,
    check_fits,
    check_send,
    decoded_length,
    size_text,
)
from services.devstack.probes import EventTap, call, call_ok
from services.devstack.processes import REPO_ROOT, Stack, settings_env
from services.devstack.scenarios import start_sending_stack
from services.outbound_queue.intake import Intake
from services.session_actor import media as m
from services.session_actor.adapters.base import SendError
from tests.conftest import make_settings

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40  # 10 KiB that sniff as a JPEG
PNG = b"\x89PNG\r\n\x1a\n" + bytes(500)
PDF = b"%PDF-1.7\n" + b"x" * 2000


# ---------------------------------------------------------------------- a web server


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Answer `status` this many times first, then 200 with the body.
    fail_first: int = 0
    length: bool = True  # send Content-Length (else the body ends when the connection closes)
    delay: float = 0.0  # before the body


class Files:
    """An HTTP server on 127.0.0.1 in a thread, serving `routes` and counting hits."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        files = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = files.routes.get(self.path)
                files.hits[self.path] = files.hits.get(self.path, 0) + 1
                if route is None:
                    self.send_error(404)
                    return
                failing = files.hits[self.path] <= route.fail_first
                status = route.status if failing or not route.fail_first else 200
                self.send_response(status)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                body = b"" if failing else route.body
                if route.length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                time.sleep(route.delay)
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the client stopped reading (over the limit)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def serve(self, path: str, **route: Any) -> str:
        self.routes[path] = Route(**route)
        return self.url(path)


@pytest.fixture
def files() -> Iterator[Files]:
    server = Files()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


# ------------------------------------------------------------------------ the contract


def send_body(**media: Any) -> bytes:
    return msgspec.json.encode({"id": "m1", "to": "15550001111", "media": media})


def contract_error(body: bytes, limits: MediaLimits = MediaLimits()) -> str:
    with pytest.raises(ContractError) as info:
        check_send(decode(body, SendText), limits)
    assert info.value.code == "invalid_request"
    return info.value.message


def test_text_sends_decode_as_before_and_media_is_an_optional_addition() -> None:
    old = decode(b'{"id": "a", "to": "15550001111", "text": "hi"}', SendText)
    assert (old.text, old.media) == ("hi", None)
    assert msgspec.json.encode(old) == b'{"id":"a","to":"15550001111","text":"hi"}'  # unchanged on the wire
    check_send(old, MediaLimits())  # nothing to check
    with pytest.raises(ContractError) as info:
        decode(b'{"id": "a", "to": "15550001111"}', SendText)
    assert info.value.message == "text: required field is missing"
    image = decode(send_body(kind="image", url="https://cdn.example.com/a.jpg"), SendText)
    assert image.text is None and image.media == Media(kind="image", url="https://cdn.example.com/a.jpg")
    check_send(image, MediaLimits())


@pytest.mark.parametrize(
    ("media", "message"),
    [
        ({"kind": "image"}, "media: give exactly one of url or base64"),
        ({"kind": "image", "url": "https://a.b/c", "base64": "AAAA"}, "media: give exactly one of url or base64"),
        ({"kind": "sticker", "url": "https://a.b/c"}, "media.kind: invalid enum value 'sticker'"),
        ({"url": "https://a.b/c"}, "media.kind: required field is missing"),
        ({"kind": "image", "url": "ftp://a.b/c"}, "media.url: expected an http:// or https:// URL without spaces, got 'ftp://a.b/c'"),
        ({"kind": "image", "url": "https://a.b/c d"}, "media.url: expected an http:// or https:// URL"),
        ({"kind": "image", "url": "https://a.b:99999/c"}, "media.url: not a valid URL (Port out of range"),
        ({"kind": "image", "url": "https://:80/c"}, "media.url: the URL names no host"),
        ({"kind": "image", "url": "https://a.b/" + "x" * 9000}, "media.url: too long: at most 8192 characters allowed"),
        ({"kind": "image", "base64": "AA\nAA"}, "media.base64: expected standard base64 (A-Z a-z 0-9 + /, = padding, no line breaks)"),
        ({"kind": "image", "base64": "AAA"}, "media.base64: not valid base64 ("),
        ({"kind": "image", "base64": ""}, "media.base64: too short"),
        ({"kind": "image", "base64": "===="}, "media.base64: "),
        ({"kind": "image", "url": "https://a.b/c", "mime": "jpeg"}, "media.mime: expected a MIME type such as image/jpeg"),
        ({"kind": "image", "url": "https://a.b/c", "mime": "application/pdf"}, "media.mime: 'application/pdf' is not an image/* type; send other files as kind document"),
        ({"kind": "video", "url": "https://a.b/c", "mime": "audio/mpeg"}, "media.mime: 'audio/mpeg' is not a video/* type"),
        ({"kind": "document", "url": "https://a.b/c", "filename": ""}, "media.filename: too short"),
        ({"kind": "document", "url": "https://a.b/c", "filename": "x" * 256}, "media.filename: too long: at most 255 characters"),
    ],
)
def test_media_errors_name_the_field(media: dict[str, Any], message: str) -> None:
    assert contract_error(send_body(**media)).startswith(message)


def test_audio_has_no_caption_and_a_document_needs_none() -> None:
    body = {"id": "a", "to": "15550001111", "text": "listen", "media": {"kind": "audio", "url": "https://a.b/c.ogg"}}
    assert contract_error(msgspec.json.encode(body)).startswith("text: an audio message has no caption")
    check_send(decode(send_body(kind="document", url="https://a.b/c.pdf"), SendText), MediaLimits())
    check_send(decode(send_body(kind="audio", base64="T2dnUw=="), SendText), MediaLimits())


def test_inline_files_are_limited_with_a_clear_error() -> None:
    limits = MediaLimits()
    assert limits.inline == 700 * 1024
    fits = base64.b64encode(b"\xff\xd8\xff" + bytes(limits.inline - 3)).decode()
    check_send(decode(send_body(kind="image", base64=fits), SendText), limits)
    over = base64.b64encode(bytes(limits.inline + 1)).decode()
    message = contract_error(send_body(kind="image", base64=over))
    assert message == (
        "media.base64: the file is 716,801 bytes (700.0 KiB); at most 716,800 bytes (700 KiB) can be "
        "sent inline (it travels inside NATS messages, 1 MiB each by default); put larger files at an "
        "http(s) URL the gateway can reach and send `media.url` instead"
    )
    # A kind's own limit applies inline too when it is the smaller one.
    small = MediaLimits(image=1000)
    assert "at most 1,000 bytes" in contract_error(send_body(kind="image", base64=base64.b64encode(bytes(1001)).decode()), small)
    assert contract_error(send_body(kind="image", base64="AAAAA=")).startswith("media.base64: not valid base64")


def test_sizes_and_lengths() -> None:
    for n in (0, 1, 2, 3, 4, 5, 700 * 1024):
        assert decoded_length(base64.b64encode(bytes(n)).decode()) == n
    assert size_text(716_800) == "716,800 bytes (700 KiB)"
    assert size_text(16 * 1024 * 1024) == "16,777,216 bytes (16 MiB)"
    assert size_text(999) == "999 bytes"
    check_fits(1024 * 1024 - PAYLOAD_HEADROOM, 1024 * 1024)
    with pytest.raises(ContractError) as info:
        check_fits(1024 * 1024 - PAYLOAD_HEADROOM + 1, 1024 * 1024)
    assert info.value.message.startswith("body: the send would be 1,040,385 bytes (1016.0 KiB) once queued")


async def test_intake_refuses_a_send_whose_queued_message_would_not_fit_nats(nc, settings) -> None:
    """With the default limits: the largest inline image and a caption of 30,000 three-byte
    characters make a request NATS still carries, but too big to queue with headroom."""
    intake = Intake(
        settings,
        nc.jetstream(),
        ledger=None,  # type: ignore[arg-type] - refused before the journal is asked
        cluster=SimpleNamespace(sessions={"s1"}),  # type: ignore[arg-type]
        states={"s1": "connected"},
        max_payload=nc.max_payload,
    )
    data = base64.b64encode(b"\xff\xd8\xff" + bytes(settings.media_inline_max - 3)).decode()
    body = {"id": "big", "to": "15550001111", "text": "€" * 30_000, "media": {"kind": "image", "base64": data}}
    raw = msgspec.json.encode(body)
    assert len(raw) < nc.max_payload  # it did arrive
    with pytest.raises(ContractError) as info:
        await intake.accept("s1", decode(raw, SendText))
    assert info.value.code == "invalid_request"
    assert "once queued, more than the" in info.value.message and "send the media by url" in info.value.message


# ------------------------------------------------------------------- content types


def test_sniffing_and_the_type_sent() -> None:
    assert m.sniff(JPEG) == "image/jpeg" and m.sniff(PNG) == "image/png" and m.sniff(PDF) == "application/pdf"
    assert m.sniff(b"GIF89a...") == "image/gif"
    assert m.sniff(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert m.sniff(b"OggS" + bytes(24) + b"OpusHead") == "audio/ogg; codecs=opus"
    assert m.sniff(b"ID3\x04") == "audio/mpeg"
    assert m.sniff(b"\0\0\0\x20ftypisom") == "video/mp4"
    assert m.sniff(b"\0\0\0\x20ftypM4A ") == "audio/mp4"
    assert m.sniff(b"\x1a\x45\xdf\xa3") == "video/webm"
    assert m.sniff(b"hello") is None

    assert m.resolve_mime("image", JPEG) == "image/jpeg"
    assert m.resolve_mime("image", JPEG, given="image/pjpeg") == "image/pjpeg"  # the caller knows best
    assert m.resolve_mime("document", b"plain", served="text/csv; charset=utf-8") == "text/csv"
    assert m.resolve_mime("document", b"plain", served="application/octet-stream", filename="a.txt") == "text/plain"
    assert m.resolve_mime("document", b"plain") == "application/octet-stream"
    assert m.resolve_mime("image", b"???") == "image/jpeg"  # nothing said better
    assert m.resolve_mime("audio", b"\0\0\0\x20ftypisom") == "audio/mp4"
    docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    assert m.resolve_mime("document", b"PK\x03\x04", filename="report.docx") == docx
    with pytest.raises(SendError) as info:
        m.resolve_mime("image", PDF)
    assert info.value.code == m.MEDIA_INVALID and info.value.permanent
    assert info.value.message == "the file is application/pdf, not an image; send it as a document"

    assert m.url_filename("https://x.y/files/Q3%20report.pdf?sig=1") == "Q3 report.pdf"
    assert m.url_filename("https://x.y/download") is None
    assert m.clean_filename("../../etc/passwd") == "passwd"
    assert m.clean_filename("a\x00b\n.pdf") == "ab.pdf"
    assert m.default_filename("document", "application/pdf") == "document.pdf"


def test_answers_and_addresses_are_classified() -> None:
    gone = m.status_error("https://u:p@x.y/a.jpg?token=secret", 404, "Not Found")
    assert gone.code == m.MEDIA_UNAVAILABLE and gone.permanent
    assert gone.message == "GET https://x.y/a.jpg?... answered 404 Not Found"  # no credentials, no token
    for status in (500, 502, 503, 408, 429):
        busy = m.status_error("https://x.y/a", status, "")
        assert busy.code == m.MEDIA_FETCH_FAILED and not busy.permanent and not busy.ambiguous
    assert m.status_error("https://x.y/a", 403, "Forbidden").permanent
    for private in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "fe80::1", "::ffff:127.0.0.1", "100.64.0.1", "0.0.0.0"):
        assert not m.public_address(private), private
    for public in ("8.8.8.8", "2606:4700::1111"):
        assert m.public_address(public), public


# ------------------------------------------------------------------------ downloading

FAST = MediaLimits(image=64 * 1024, document=64 * 1024, connect_timeout=2, read_timeout=0.5, download_timeout=5, fetch_private=True)


async def fetch_error(url: str, kind: str = "image", limits: MediaLimits = FAST) -> SendError:
    with pytest.raises(SendError) as info:
        await m.fetch(url, kind, limits)
    return info.value


async def test_fetch_streams_within_limits(files: Files) -> None:
    ok = await m.fetch(files.serve("/a.jpg", body=JPEG, headers={"Content-Type": "image/jpeg"}), "image", FAST)
    assert ok.data == JPEG and ok.content_type == "image/jpeg"
    # Redirects are followed (relative too), and the final URL names the file.
    files.serve("/moved", status=302, headers={"Location": "/a.jpg"})
    assert (await m.fetch(files.url("/moved"), "image", FAST)).url == files.url("/a.jpg")
    files.serve("/away", status=301, headers={"Location": "ftp://x.y/a.jpg"})
    assert (await fetch_error(files.url("/away"))).code == m.MEDIA_UNAVAILABLE
    files.serve("/loop", status=302, headers={"Location": "/loop"})
    loop = await fetch_error(files.url("/loop"))
    assert loop.permanent and "redirects" in loop.message

    missing = await fetch_error(files.url("/nothing.jpg"))
    assert (missing.code, missing.permanent) == (m.MEDIA_UNAVAILABLE, True)
    assert "answered 404" in missing.message
    files.serve("/busy", status=503)
    busy = await fetch_error(files.url("/busy"))
    assert (busy.code, busy.permanent) == (m.MEDIA_FETCH_FAILED, False)
    files.serve("/empty", body=b"")
    assert (await fetch_error(files.url("/empty"))).code == m.MEDIA_UNAVAILABLE

    # Over the limit: refused on the declared length, or cut off while streaming.
    big = b"\xff\xd8\xff" + bytes(FAST.image)
    declared = await fetch_error(files.serve("/big.jpg", body=big))
    assert (declared.code, declared.permanent) == (m.MEDIA_TOO_LARGE, True)
    assert declared.message == "the image is 65,539 bytes (64.0 KiB); at most 65,536 bytes (64 KiB) (WA_MEDIA_MAX_IMAGE)"
    streamed = await fetch_error(files.serve("/stream.jpg", body=big * 100, length=False))
    assert streamed.code == m.MEDIA_TOO_LARGE and "larger than 65,536 bytes" in streamed.message

    # Network trouble is transient: a slow body, a closed port.
    slow = await fetch_error(files.serve("/slow", body=JPEG, delay=1.5))
    assert (slow.code, slow.permanent) == (m.MEDIA_FETCH_FAILED, False) and "timed out" in slow.message
    closed = files.url("/a.jpg").replace(str(files.server.server_port), "1")
    assert (await fetch_error(closed)).code == m.MEDIA_FETCH_FAILED


async def test_fetch_refuses_non_public_addresses_unless_allowed(files: Files, monkeypatch: pytest.MonkeyPatch) -> None:
    url = files.serve("/a.jpg", body=JPEG)
    guarded = MediaLimits(fetch_private=False)
    refused = await fetch_error(url, limits=guarded)
    assert (refused.code, refused.permanent) == (m.MEDIA_FORBIDDEN, True)
    assert "non-public address (127.0.0.1)" in refused.message and "WA_MEDIA_FETCH_PRIVATE" in refused.message
    assert files.hits.get("/a.jpg") is None  # never asked
    assert (await fetch_error(url.replace("127.0.0.1", "localhost"), limits=guarded)).code == m.MEDIA_FORBIDDEN
    # Each hop is checked: a redirect from an allowed host to a metadata endpoint is refused.
    # (Offline there is no public first hop, so 127.0.0.1 stands in for one.)
    files.serve("/inside", status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    checked: list[str] = []
    real_check = m.check_host

    async def local_counts_as_public(url: str) -> None:
        checked.append(url)
        if "127.0.0.1" not in url:
            await real_check(url)

    monkeypatch.setattr(m, "check_host", local_counts_as_public)
    inside = await fetch_error(files.url("/inside"), limits=guarded)
    assert inside.code == m.MEDIA_FORBIDDEN and "169.254.169.254" in inside.message
    assert checked == [files.url("/inside"), "http://169.254.169.254/latest/meta-data/"]


async def test_prepare_decodes_or_downloads_and_settles_the_type(files: Files) -> None:
    inline = Media(kind="image", base64=base64.b64encode(PNG).decode())
    photo = await m.prepare(inline, "a caption", FAST)
    assert (photo.kind, photo.data, photo.mime, photo.caption, photo.filename) == ("image", PNG, "image/png", "a caption", None)
    url = files.serve("/files/Q3%20report.pdf", body=PDF, headers={"Content-Type": "application/octet-stream"})
    doc = await m.prepare(Media(kind="document", url=url), None, FAST)
    assert (doc.mime, doc.filename, doc.data) == ("application/pdf", "Q3 report.pdf", PDF)
    named = await m.prepare(Media(kind="document", url=url, filename="dir/Budget.pdf", mime="application/x-pdf"), "see", FAST)
    assert (named.mime, named.filename, named.caption) == ("application/x-pdf", "Budget.pdf", "see")
    files.serve("/blob", body=b"\x00\x01", headers={"Content-Type": "application/octet-stream"})
    blob = await m.prepare(Media(kind="document", url=files.url("/blob")), None, FAST)
    assert (blob.mime, blob.filename) == ("application/octet-stream", "document.bin")
    with pytest.raises(SendError) as info:
        await m.prepare(Media(kind="image", url=url), None, FAST)
    assert info.value.code == m.MEDIA_INVALID


# -------------------------------------------------------------------------- end to end

def lifecycle(tap: EventTap, sid: str, send_id: str) -> list[str]:
    return [e["state"] for e in tap.of(sid, "outbound") if e["id"] == send_id]


async def final(tap: EventTap, sid: str, send_id: str, states: tuple[str, ...] = ("delivered", "failed")) -> dict[str, Any]:
    return await tap.wait_for(sid, "outbound", lambda e: e["id"] == send_id and e["state"] in states, 30)


@pytest.mark.slow
async def test_media_sends_end_to_end(stack: Stack, nc: Any, tmp_path: Any, infra: Any, files: Files) -> None:
    settings = make_settings(
        infra,
        tmp_path,
        media_fetch_private=True,  # the files are on 127.0.0.1
        media_inline_max=64 * 1024,
        media_max_image=256 * 1024,
        send_max_attempts=4,
        send_retry_cap=0.5,
    )
    stack.settings = settings
    tap = await start_sending_stack(stack, nc, settings, ["media"])
    s = settings.subjects

    async def send(send_id: str, text: str | None = None, **media: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"id": send_id, "to": "15550001111", "media": media}
        if text is not None:
            body["text"] = text
        return await call_ok(nc, s.send("media"), body)

    photo = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 100
    await send("inline-1", "look", kind="image", base64=base64.b64encode(photo).decode())
    await final(tap, "media", "inline-1")
    assert lifecycle(tap, "media", "inline-1") == ["queued", "sent", "delivered"]

    jpeg = b"\xff\xd8\xff\xe0" + bytes(200 * 1024)
    await send("url-1", kind="image", url=files.serve("/cat.jpg", body=jpeg, headers={"Content-Type": "image/jpeg"}))
    await send("doc-1", "the report", kind="document", url=files.serve("/q3.pdf", body=PDF))
    await send("gone-1", kind="image", url=files.url("/missing.jpg"))
    await send("big-1", kind="image", url=files.serve("/big.jpg", body=jpeg + bytes(100 * 1024)))
    await send("big-2", kind="image", url=files.serve("/big-stream.jpg", body=jpeg * 3, length=False))
    await send("pdf-as-image", kind="image", url=files.url("/q3.pdf"))
    # WhatsApp's web server falters three times, the fourth attempt gets the file.
    await send("flaky-1", kind="video", url=files.serve("/clip.mp4", status=503, fail_first=3, body=b"\0\0\0\x20ftypisom" + bytes(5000)))
    await call_ok(nc, s.send("media"), {"id": "text-1", "to": "15550001111", "text": "plain as ever"})

    for send_id in ("url-1", "doc-1", "flaky-1", "text-1"):
        done = await final(tap, "media", send_id)
        assert done["state"] == "delivered", done
    assert lifecycle(tap, "media", "flaky-1") == ["queued", "sent", "delivered"]  # retries are no events
    assert files.hits["/clip.mp4"] == 4
    expected = {
        "gone-1": ("media_unavailable", "answered 404"),
        "big-1": ("media_too_large", "at most 262,144 bytes (256 KiB) (WA_MEDIA_MAX_IMAGE)"),
        "big-2": ("media_too_large", "larger than 262,144 bytes"),
        "pdf-as-image": ("media_invalid", "the file is application/pdf, not an image"),
    }
    for send_id, (code, text) in expected.items():
        failed = await final(tap, "media", send_id)
        assert failed["state"] == "failed" and failed["error"]["code"] == code, failed
        assert text in failed["error"]["message"], failed
        assert lifecycle(tap, "media", send_id) == ["queued", "failed"]
    assert files.hits["/missing.jpg"] == 1  # a permanent failure is not retried

    stats = (await call_ok(nc, s.sim_stats, {"session_id": "media"}))["sessions"]["media"]
    assert stats["received"] == {"inline-1": 1, "url-1": 1, "doc-1": 1, "flaky-1": 1, "text-1": 1}
    assert stats["media"] == {"image": 2, "document": 1, "video": 1}
    assert stats["media_sha256"]["inline-1"] == hashlib.sha256(photo).hexdigest()
    assert stats["media_sha256"]["url-1"] == hashlib.sha256(jpeg).hexdigest()
    assert stats["media_bytes"] == len(photo) + len(jpeg) + len(PDF) + 5012

    # Intake refuses what cannot be sent, before anything is queued.
    bad: list[tuple[dict[str, Any], str]] = [
        ({"id": "x1", "to": "15550001111"}, "text: required field is missing"),
        ({"id": "x2", "to": "15550001111", "media": {"kind": "image"}}, "media: give exactly one of url or base64"),
        ({"id": "x3", "to": "15550001111", "media": {"kind": "image", "url": "file:///etc/passwd"}}, "media.url: expected an http:// or https:// URL"),
        ({"id": "x4", "to": "15550001111", "media": {"kind": "gif", "url": "https://a.b/c"}}, "media.kind: invalid enum value 'gif'"),
        ({"id": "x5", "to": "15550001111", "media": {"kind": "image", "base64": "not base64!"}}, "media.base64: expected standard base64"),
        ({"id": "x6", "to": "15550001111", "media": {"kind": "image", "base64": "AAA"}}, "media.base64: not valid base64"),
        ({"id": "x7", "to": "15550001111", "media": {"kind": "image", "base64": base64.b64encode(bytes(64 * 1024 + 1)).decode()}}, "media.base64: the file is 65,537 bytes"),
        ({"id": "x8", "to": "15550001111", "text": "hi", "media": {"kind": "audio", "url": "https://a.b/c.mp3"}}, "text: an audio message has no caption"),
        ({"id": "x9", "to": "15550001111", "media": {"kind": "image", "url": "https://a.b/c", "mime": "text/html"}}, "media.mime: 'text/html' is not an image/* type"),
        ({"id": "x10", "to": "15550001111", "media": {"kind": "image", "url": "https://a.b:0/c"}}, "media.url: port 0"),
    ]
    for body, message in bad:
        reply = await call(nc, s.send("media"), body)
        assert reply.error is not None and reply.error.code == "invalid_request", (body["id"], reply)
        assert reply.error.message.startswith(message), (body["id"], reply.error.message)
    queue = await call_ok(nc, s.queue("media", "stats"))
    assert queue["depth"] == 0
    assert not [e for e in tap.of("media", "outbound") if e["id"].startswith("x")]
    # The same id, now valid, is a new send: refusals are not remembered.
    await send("x2", kind="document", base64=base64.b64encode(PDF).decode(), filename="x2.pdf")
    assert (await final(tap, "media", "x2"))["state"] == "delivered"



async def wactl(settings: Any, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.wactl", *args, cwd=REPO_ROOT, env=settings_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_queued_media_sends_round_trip() -> None:
    item = QueuedSend(
        id="a", session_id="s", to="1555", accepted_at=utcnow(), media=Media(kind="image", url="https://a.b/c"),
        expires_at=utcnow() + timedelta(seconds=5),
    )  # fmt: skip
    again = msgspec.json.decode(msgspec.json.encode(item), type=QueuedSend)
    assert again == item and again.text is None
    old = msgspec.json.decode(b'{"id":"a","session_id":"s","to":"1555","text":"hi","accepted_at":"2026-01-01T00:00:00Z"}', type=QueuedSend)
    assert (old.text, old.media) == ("hi", None)

