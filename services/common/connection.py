"""How every client of ours reaches NATS: one place for the connection options (seed
servers, credentials, TLS), so services, wactl and the harness connect alike. Light to
import: wactl starts with it.

Secrets are read here, at connect time, from the settings or the files they name; they are
handed to nats-py and never logged.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NatsClient

from services.common.config import Settings


def connection_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for nats-py's connect: the seed servers (any one that answers),
    the one way of authenticating the settings name, and TLS."""
    options: dict[str, Any] = {"servers": settings.nats_servers}
    if settings.nats_user is not None:
        options["user"] = settings.nats_user
        options["password"] = _secret(settings.nats_password.get_secret_value(), settings.nats_password_file)
    token = _secret(settings.nats_token.get_secret_value(), settings.nats_token_file)
    if token:
        options["token"] = token
    if settings.nats_nkey_seed_file is not None:
        options["nkeys_seed"] = str(settings.nats_nkey_seed_file)
    if settings.nats_creds_file is not None:
        options["user_credentials"] = str(settings.nats_creds_file)
    tls = tls_context(settings)
    if tls is not None:
        options["tls"] = tls
    return options


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for NATS: the given CA (else the system's) and, for mutual TLS, the
    client certificate; None when nothing asks for TLS (nats-py then follows the URL)."""
    if settings.nats_tls_ca_file is None and settings.nats_tls_cert_file is None:
        return None
    context = ssl.create_default_context(
        cafile=None if settings.nats_tls_ca_file is None else str(settings.nats_tls_ca_file)
    )
    if settings.nats_tls_cert_file is not None and settings.nats_tls_key_file is not None:
        context.load_cert_chain(str(settings.nats_tls_cert_file), str(settings.nats_tls_key_file))
    return context


def _secret(value: str, file: Path | None) -> str:
    """A secret given directly, or the content of the file that holds it (a mounted Secret)."""
    return file.read_text().strip() if file is not None else value


async def connect_nats(settings: Settings, **options: Any) -> NatsClient:
    return await nats.connect(**connection_options(settings), **options)


class Reconnections:
    """Tells waiters that the connection came back: the server forgets a pull request whose
    client went away, so a long poll issued before must be issued again (nats-py would wait
    for its own timeout). Passed to the broker as its `reconnected_cb`."""

    def __init__(self) -> None:
        self._next = asyncio.Event()

    def next(self) -> asyncio.Event:
        """Set at the next reconnection."""
        return self._next

    async def happened(self) -> None:
        came_back, self._next = self._next, asyncio.Event()
        came_back.set()
