"""The actor's side of media sends: get the file (decode it, or download it), settle its type.

A URL is fetched when the send leaves, by the actor that owns the session, with bounds:

- the body is streamed and the download stops at the kind's size limit (the declared
  Content-Length is checked first); compressed transfer is not asked for (`Accept-Encoding:
  identity`), and what arrives is counted decoded;
- timeouts for the connection, for each read, and for the whole download;
- at most `MAX_REDIRECTS` redirects, each to http(s) and checked like the first URL;
- unless `media_fetch_private` is set, a host that resolves to a loopback, private,
  link-local or otherwise non-public address is refused (the check resolves the name
  itself; a DNS answer that changes between that check and httpx's own lookup is not
  caught).

Failures are SendErrors the executor already knows how to treat: the file is not there or
too large (a 4xx answer, a body over the limit, a refused address) is permanent; a network
error, a timeout, a 5xx (or 408/425/429) is transient and retried with the send's backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import posixpath
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from contracts.sending import Media
from contracts.types import MIME_PATTERN
from services.common.media import MediaLimits, decode_base64, size_text
from services.common.urls import host_addresses, public_address, shown
from services.session_actor.adapters.base import OutgoingMedia, SendError

MAX_REDIRECTS = 5
# Answers worth trying again later; every other 4xx means the file is not to be had.
TRANSIENT_STATUSES = frozenset({408, 425, 429})
USER_AGENT = "wa-gateway media fetch"

# SendError codes of media sends.
MEDIA_UNAVAILABLE = "media_unavailable"  # permanent: the URL does not give the file
MEDIA_TOO_LARGE = "media_too_large"  # permanent: over the kind's limit
MEDIA_FORBIDDEN = "media_forbidden"  # permanent: the URL points at a non-public address
MEDIA_INVALID = "media_invalid"  # permanent: the content is not what `kind` says
MEDIA_FETCH_FAILED = "media_fetch_failed"  # transient: network trouble, 5xx, timeout

# Types WhatsApp clients render for each kind, when nothing says better.
DEFAULT_MIME = {
    "image": "image/jpeg",
    "video": "video/mp4",
    "audio": "audio/mpeg",
    "document": "application/octet-stream",
}
# Content-Types that say nothing.
GENERIC_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", "application/unknown"})
_MIME = re.compile(MIME_PATTERN)
# What a sniffed type may be for each kind (documents take anything).
KIND_FAMILIES = {
    "image": ("image/",),
    "video": ("video/", "audio/ogg"),  # an Ogg or MP4 container may hold either
    "audio": ("audio/", "video/mp4", "video/webm", "video/3gpp"),
}


# ------------------------------------------------------------------------ content types


def sniff(data: bytes) -> str | None:
    """The type of a file from its first bytes, for the formats WhatsApp carries."""
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"OggS"):
        return "audio/ogg; codecs=opus" if b"OpusHead" in head else "audio/ogg"
    if head.startswith(b"#!AMR"):
        return "audio/amr"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if head[:2] in (b"\xff\xf1", b"\xff\xf9"):
        return "audio/aac"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B ", b"M4P "):
            return "audio/mp4"
        if brand == b"qt  ":
            return "video/quicktime"
        if brand.startswith(b"3gp") or brand.startswith(b"3g2"):
            return "video/3gpp"
        return "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if head.startswith(b"PK\x03\x04"):
        return "application/zip"  # also docx/xlsx/...: the file name tells those apart
    return None


def _essence(mime: str) -> str:
    return mime.split(";", 1)[0].strip().lower()


def resolve_mime(
    kind: str, data: bytes, given: str | None = None, served: str | None = None, filename: str | None = None
) -> str:
    """The MIME type to send: the one given, else the content's, else the server's, else the
    file name's, else the kind's default. Raises SendError (permanent) when the content is
    plainly not of the kind (a PDF sent as an image)."""
    sniffed = sniff(data)
    if sniffed is not None and kind in KIND_FAMILIES and not _essence(sniffed).startswith(KIND_FAMILIES[kind]):
        raise SendError(
            MEDIA_INVALID,
            f"the file is {_essence(sniffed)}, not {'an' if kind[0] in 'aeiou' else 'a'} {kind}; "
            "send it as a document",
            permanent=True,
        )
    if given:
        return given
    by_name = mimetypes.guess_type(filename)[0] if filename else None
    if sniffed == "application/zip" and by_name:
        return by_name  # an office document or the like: its name is more precise
    if sniffed is not None:
        if kind == "audio" and _essence(sniffed).startswith("video/"):
            return "audio/" + _essence(sniffed).split("/", 1)[1]  # an audio-only MP4/WebM
        return sniffed
    if served and _MIME.match(_essence(served)) and _essence(served) not in GENERIC_TYPES:
        return _essence(served)  # parameters (charset...) say nothing about media
    return by_name or DEFAULT_MIME[kind]


def url_filename(url: str) -> str | None:
    """The last path segment of a URL, if it looks like a file name."""
    name = posixpath.basename(unquote(urlsplit(url).path))
    return name if name and "." in name.strip(".") else None


def clean_filename(name: str | None) -> str | None:
    """A file name without directories or control characters (it is shown to the recipient)."""
    if not name:
        return None
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:255] or None


def default_filename(kind: str, mime: str) -> str:
    return kind + (mimetypes.guess_extension(_essence(mime)) or "")


# ------------------------------------------------------------------------ downloading


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str | None
    url: str  # after redirects


def status_error(url: str, status: int, reason: str) -> SendError:
    """The SendError for a non-2xx answer that is not a redirect."""
    text = f"GET {shown(url)} answered {status} {reason}".rstrip()
    if status >= 500 or status in TRANSIENT_STATUSES:
        return SendError(MEDIA_FETCH_FAILED, text + "; trying again later")
    return SendError(MEDIA_UNAVAILABLE, text, permanent=True)


def too_large(kind: str, limit: int, size: int | None = None) -> SendError:
    got = f"is {size_text(size)}" if size is not None else f"is larger than {size_text(limit)}"
    return SendError(
        MEDIA_TOO_LARGE,
        f"the {kind} {got}; at most {size_text(limit)} (WA_MEDIA_MAX_{kind.upper()})",
        permanent=True,
    )


async def check_host(url: str) -> None:
    """Refuse a URL whose host is (or resolves to) a non-public address."""
    try:
        addresses = await host_addresses(url)
    except OSError as exc:
        raise SendError(MEDIA_FETCH_FAILED, f"cannot resolve {urlsplit(url).hostname or ''}: {exc}") from None
    refused = [a for a in addresses if not public_address(a)]
    if refused:
        raise SendError(
            MEDIA_FORBIDDEN,
            f"{shown(url)} points at a non-public address ({refused[0]}); the gateway fetches "
            "only public URLs (WA_MEDIA_FETCH_PRIVATE=true allows others)",
            permanent=True,
        )


async def fetch(url: str, kind: str, limits: MediaLimits) -> Fetched:
    """Download a file of `kind` within its limit; raises SendError."""
    limit = limits.for_kind(kind)
    timeout = httpx.Timeout(
        connect=limits.connect_timeout,
        read=limits.read_timeout,
        write=limits.read_timeout,
        pool=limits.connect_timeout,
    )
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    try:
        async with (
            asyncio.timeout(limits.download_timeout),
            httpx.AsyncClient(timeout=timeout, headers=headers, follow_redirects=False) as client,
        ):
            for _ in range(MAX_REDIRECTS + 1):
                if not limits.fetch_private:
                    await check_host(url)
                async with client.stream("GET", url) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = _redirect(url, response.headers["location"])
                        continue
                    if not response.is_success:
                        raise status_error(url, response.status_code, response.reason_phrase)
                    data = await _read(response, kind, limit)
                    if not data:
                        raise SendError(MEDIA_UNAVAILABLE, f"GET {shown(url)} answered an empty body", permanent=True)
                    return Fetched(data, response.headers.get("content-type"), url)
            raise SendError(MEDIA_UNAVAILABLE, f"more than {MAX_REDIRECTS} redirects from {shown(url)}", permanent=True)
    except TimeoutError:
        raise SendError(
            MEDIA_FETCH_FAILED, f"downloading {shown(url)} took longer than {limits.download_timeout:g} s"
        ) from None
    except httpx.TimeoutException as exc:
        raise SendError(MEDIA_FETCH_FAILED, f"GET {shown(url)} timed out ({type(exc).__name__})") from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise SendError(MEDIA_UNAVAILABLE, f"cannot fetch {shown(url)}: {exc}", permanent=True) from None
    except httpx.HTTPError as exc:  # connection refused/reset, DNS, protocol errors
        raise SendError(MEDIA_FETCH_FAILED, f"GET {shown(url)} failed: {exc or type(exc).__name__}") from None


def _redirect(url: str, location: str) -> str:
    target = urljoin(url, location)
    if urlsplit(target).scheme.lower() not in ("http", "https"):
        raise SendError(MEDIA_UNAVAILABLE, f"{shown(url)} redirects to a non-http(s) URL", permanent=True)
    return target


async def _read(response: httpx.Response, kind: str, limit: int) -> bytes:
    declared = response.headers.get("content-length")
    encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
    if declared is not None and declared.isdigit() and int(declared) > limit and not encoded:
        raise too_large(kind, limit, int(declared))
    body = bytearray()
    # Decoded bytes are counted (a server may compress despite `identity`); one chunk
    # decompresses at a time, so the overshoot past the limit is at most one chunk's worth.
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise too_large(kind, limit)  # stops here: the rest is never read
    return bytes(body)


# ------------------------------------------------------------------------ preparing


async def prepare(media: Media, caption: str | None, limits: MediaLimits) -> OutgoingMedia:
    """The file of a queued media send, ready for the adapter; raises SendError."""
    if media.base64 is not None:
        try:
            data = decode_base64(media.base64)
        except ValueError as exc:  # intake checked it; a hand-made queue entry may not be
            raise SendError(MEDIA_INVALID, f"media.base64: not valid base64 ({exc})", permanent=True) from None
        if len(data) > limits.for_kind(media.kind):
            raise too_large(media.kind, limits.for_kind(media.kind), len(data))
        served, source_name = None, None
    else:
        assert media.url is not None
        fetched = await fetch(media.url, media.kind, limits)
        data, served, source_name = fetched.data, fetched.content_type, url_filename(fetched.url)
    filename = clean_filename(media.filename) or clean_filename(source_name)
    mime = resolve_mime(media.kind, data, media.mime, served, filename)
    if media.kind == "document" and filename is None:
        filename = default_filename(media.kind, mime)
    return OutgoingMedia(
        kind=media.kind,
        data=data,
        mime=mime,
        filename=filename,
        caption=None if media.kind == "audio" else caption,
    )


_slots: dict[int, asyncio.Semaphore] = {}


@contextlib.asynccontextmanager
async def slot(concurrency: int) -> AsyncIterator[None]:
    """One of the node's `concurrency` media sends in preparation (each holds a file in memory)."""
    semaphore = _slots.setdefault(concurrency, asyncio.Semaphore(concurrency))
    async with semaphore:
        yield
