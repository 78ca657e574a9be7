"""URLs users hand the gateway to reach (media to fetch, webhooks to post to): where they
point, and how to show them in messages.

One rule for every such URL: only public addresses, unless a setting allows others
(`media_fetch_private`, `webhook_private_urls`). Otherwise a user of the API could make the
gateway reach internal services (cloud metadata, admin endpoints) on their behalf. The
rule is `public_address`; `host_addresses` resolves a URL's host for it (a DNS answer
that changes between that check and the HTTP client's own lookup is not caught).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


def public_address(address: str) -> bool:
    """Whether an IP address is one of the public internet (not loopback, private,
    link-local, reserved or multicast; an IPv4-mapped IPv6 address counts as its IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def host_addresses(url: str) -> list[str]:
    """The addresses a URL's host stands for: itself when it is an IP address, else what it
    resolves to. Raises OSError when the name does not resolve."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return sorted({str(info[4][0]) for info in infos})


def shown(url: str) -> str:
    """A URL for messages: no user info, no query (it may hold a token), bounded."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    text = f"{parts.scheme}://{host}{parts.path}" + ("?..." if parts.query else "")
    return text if len(text) <= 200 else text[:197] + "..."
