"""The work of `wactl creds rotate-key` and `wactl import` (stores, baileys): the vault and
the importer of services/credentials over MongoDB, their failures turned into wactl's
messages and exit statuses. Imported only when one of those commands runs (it loads MongoDB and the crypto
stack)."""

import socket
from pathlib import Path
from typing import Any

import nats.errors
import typer
from nats.js.errors import BucketNotFoundError, NotFoundError

from services.common.bus import EventPublisher
from services.common.config import Settings
from services.common.sessions import SessionStore
from services.credentials import DEVICE_TABLES, importer
from services.credentials.baileys_auth import is_auth_folder, read_evolution_sessions
from services.credentials.linked_device import Unusable
from services.credentials.vault import CredentialVault, Keyring, VaultError
from services.wactl.database import mongo_db
from services.wactl.exits import EXIT_ERROR, EXIT_UNREACHABLE, Failure
from services.wactl.gateway import Gateway


def load_keyring(settings: Settings) -> Keyring:
    """The vault's keys from WA_VAULT_KEYS or WA_VAULT_KEY_FILE; a bad entry ends the command."""
    try:
        return Keyring.load(
            settings.vault_keys.get_secret_value(), settings.vault_key_file, settings.data_dir
        )
    except (VaultError, ValueError) as exc:
        raise Failure(f"vault keys: {exc}") from None


async def rotate_key(settings: Settings) -> None:
    """Re-seal every stored credential version under the keyring's active key."""
    keyring = load_keyring(settings)
    async with mongo_db(settings) as db:
        vault = CredentialVault(db, keyring, DEVICE_TABLES[settings.adapter])
        try:
            sessions, versions = await vault.rotate()
        except VaultError as exc:
            raise Failure(f"rotation stopped: {exc}") from None
    typer.echo(
        f"re-sealed {versions} credential version(s) of {sessions} session(s) with key {keyring.active!r}"
    )


async def import_from(gateway: Gateway, path: Path, adapter: str, label_from_filename: bool) -> int:
    """Import the stores at `path` (one line each): 0 if all were imported, 1 if any was skipped."""
    stores = importer.find_stores(path)
    if not stores:
        hint = "; a Baileys auth folder? use `wactl import baileys`" if is_auth_folder(path) else ""
        raise Failure(f"no store files ({', '.join(importer.STORE_SUFFIXES)}) in {path}{hint}")
    return await _import(gateway, stores, adapter, "store(s)", label_from_filename=label_from_filename)


async def import_baileys(
    gateway: Gateway, folders: list[Path], evolution_sessions: Path | None, label_from_filename: bool
) -> int:
    """Import Baileys auth folders as sessions of the neonize adapter (one line each): 0 if
    all were imported, 1 if any was skipped."""
    try:
        creds = read_evolution_sessions(evolution_sessions) if evolution_sessions else {}
    except (Unusable, OSError) as exc:
        raise Failure(f"{evolution_sessions}: {exc}") from None
    return await _import(
        gateway, folders, "neonize", "folder(s)", label_from_filename=label_from_filename, evolution_creds=creds
    )


async def _import(gateway: Gateway, sources: list[Path], adapter: str, what: str, **options: Any) -> int:
    settings = gateway.settings
    keyring = load_keyring(settings)
    js = gateway.nc.jetstream()
    try:
        kv = await js.key_value(settings.subjects.leases_bucket)
    except (NotFoundError, BucketNotFoundError):
        raise Failure(
            f"no bucket {settings.subjects.leases_bucket}: start the services once first (prefix "
            f"{settings.subjects.prefix!r})",
            EXIT_UNREACHABLE,
        ) from None
    async with mongo_db(settings) as db:
        registry = importer.Registry(
            SessionStore(db),
            CredentialVault(db, keyring, DEVICE_TABLES[adapter]),
            kv,
            EventPublisher(js, settings.subjects),
            db[importer.LEDGER],
            f"wactl@{socket.gethostname()}",
        )
        try:
            outcomes = await importer.import_stores(
                registry, sources, report=lambda o: typer.echo(o.line()), **options
            )
        except nats.errors.Error as exc:  # a session being registered resumes at the next import
            raise Failure(
                f"NATS: {exc or type(exc).__name__}; import again in a minute to finish", EXIT_UNREACHABLE
            ) from None
    imported = sum(o.imported for o in outcomes)
    typer.echo(f"{imported} of {len(outcomes)} {what} imported", err=True)
    return 0 if imported == len(outcomes) else EXIT_ERROR
