"""wactl: the command line of the WhatsApp session gateway (public NATS contract v1).

This module assembles the app: its global options, and the commands of the modules beside
it (one per command group). Exit status: 0 done, 1 an error reply or a failed outcome
(pairing stopped, send failed), 2 bad usage, 3 NATS or MongoDB unreachable or no service
answered, 4 a wait timed out, 130 interrupted.
"""

import socket
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import nats.errors
import typer
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from services.common.config import Settings
from services.credentials import DEVICE_TABLES
from services.wactl import events, history, queues, send, sessions, sim
from services.wactl.arguments import given
from services.wactl.exits import EXIT_ERROR, EXIT_UNREACHABLE, Failure, fail
from services.wactl.gateway import Gateway, redact
from services.wactl.running import Options, run, with_nats

HELP = (
    "The command line of the WhatsApp session gateway (public NATS contract v1).\n\n"
    "Exit status: 0 done, 1 an error reply or a failed outcome, 2 bad usage, 3 NATS or MongoDB "
    "unreachable or no service answered, 4 a wait timed out, 130 interrupted."
)
app = typer.Typer(
    name="wactl",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold credentials
)
# The order of registration is the order of `wactl --help`.
app.add_typer(sessions.app, name="session")
app.add_typer(queues.queue_app, name="queue")
app.add_typer(queues.dlq_app, name="dlq")
app.add_typer(history.app, name="history")
app.add_typer(sim.app, name="sim")
app.command()(send.send)
app.command()(events.events)
creds_app = typer.Typer(help="Stored WhatsApp credentials (MongoDB, WA_MONGO_URL).", no_args_is_help=True)
app.add_typer(creds_app, name="creds")


@app.callback()
def main(
    ctx: typer.Context,
    nats_url: Annotated[str | None, typer.Option(help="NATS server URL (default: WA_NATS_URL)")] = None,
    prefix: Annotated[str | None, typer.Option(help="subject prefix (default: WA_PREFIX, or wa)")] = None,
    sim_prefix: Annotated[
        str | None, typer.Option(help="simulator prefix (default: WA_SIM_PREFIX, or wasim)")
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds to wait for a reply")] = 10.0,
) -> None:
    try:
        settings = Settings(**given(nats_url=nats_url, prefix=prefix, sim_prefix=sim_prefix))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        fail(f"invalid configuration: {problems}", 2)
    ctx.obj = Options(settings, timeout)


# ---------------------------------------------------------------------- credentials


@creds_app.command("rotate-key")
def creds_rotate_key(ctx: typer.Context) -> None:
    """Re-seal every stored credential version under the first key of the keyring.

    Set WA_VAULT_KEYS (or WA_VAULT_KEY_FILE) to the new key first and the old keys after it;
    once this is done, the old keys can be removed. Safe while the system runs.
    """
    run(rotate_key(ctx.obj.settings))


async def rotate_key(settings: Settings) -> None:
    # Imported here: only this command needs MongoDB and the crypto stack.
    from pymongo.errors import PyMongoError

    from services.common import mongo
    from services.credentials.vault import CredentialVault, Keyring, VaultError

    try:
        keyring = Keyring.load(
            settings.vault_keys.get_secret_value(), settings.vault_key_file, settings.data_dir
        )
    except (VaultError, ValueError) as exc:
        raise Failure(f"vault keys: {exc}") from None
    client, db = mongo.connect(settings, "wactl")
    try:
        vault = CredentialVault(db, keyring, DEVICE_TABLES[settings.adapter])
        sessions, versions = await vault.rotate()
    except VaultError as exc:
        raise Failure(f"rotation stopped: {exc}") from None
    except PyMongoError as exc:
        message = str(exc).split(", Timeout:")[0]
        raise Failure(f"MongoDB at {redact(settings.mongo_url)}: {message}", EXIT_UNREACHABLE) from None
    finally:
        await client.close()
    typer.echo(
        f"re-sealed {versions} credential version(s) of {sessions} session(s) with key {keyring.active!r}"
    )


# ------------------------------------------------------------------------- migration


class Adapter(StrEnum):
    neonize = "neonize"
    sim = "sim"


@app.command("import")
def import_stores(
    ctx: typer.Context,
    path: Annotated[
        Path, typer.Argument(exists=True, help="a store file, or a folder of *.db, *.sqlite, *.sqlite3")
    ],
    adapter: Annotated[
        Adapter | None, typer.Option(help="whose stores these are (default: WA_ADAPTER)")
    ] = None,
    label_from_filename: Annotated[
        bool, typer.Option("--label-from-filename", help="label each session with its file name")
    ] = False,
) -> None:
    """Turn existing neonize/whatsmeow (or simulator) SQLite stores into linked sessions.

    The session id comes from the file name. Never replaces an existing session or its
    credentials; live stores of a running process are copied safely. One line per store;
    exit status 1 if any was skipped.
    """
    table = DEVICE_TABLES[adapter.value if adapter else ctx.obj.settings.adapter]
    with_nats(ctx, lambda gateway: import_from(gateway, path, table, label_from_filename))


async def import_from(gateway: Gateway, path: Path, device_table: str, label_from_filename: bool) -> int:
    from nats.js.errors import BucketNotFoundError
    from pymongo.errors import PyMongoError

    from services.common import mongo
    from services.common.bus import EventPublisher
    from services.common.sessions import SessionStore
    from services.credentials import importer
    from services.credentials.vault import CredentialVault, Keyring, VaultError

    settings = gateway.settings
    try:
        keyring = Keyring.load(
            settings.vault_keys.get_secret_value(), settings.vault_key_file, settings.data_dir
        )
    except (VaultError, ValueError) as exc:
        raise Failure(f"vault keys: {exc}") from None
    js = gateway.nc.jetstream()
    try:
        kv = await js.key_value(settings.subjects.leases_bucket)
    except (NotFoundError, BucketNotFoundError):
        raise Failure(
            f"no bucket {settings.subjects.leases_bucket}: start the services once first (prefix "
            f"{settings.subjects.prefix!r})",
            EXIT_UNREACHABLE,
        ) from None
    stores = importer.find_stores(path)
    if not stores:
        raise Failure(f"no store files ({', '.join(importer.STORE_SUFFIXES)}) in {path}")
    client, db = mongo.connect(settings, "wactl")
    registry = importer.Registry(
        SessionStore(db),
        CredentialVault(db, keyring, device_table),
        kv,
        EventPublisher(js, settings.subjects),
        db[importer.LEDGER],
        f"wactl@{socket.gethostname()}",
    )
    try:
        outcomes = await importer.import_stores(
            registry, stores, label_from_filename=label_from_filename, report=lambda o: typer.echo(o.line())
        )
    except PyMongoError as exc:
        message = str(exc).split(", Timeout:")[0]
        raise Failure(f"MongoDB at {redact(settings.mongo_url)}: {message}", EXIT_UNREACHABLE) from None
    except nats.errors.Error as exc:  # a store being registered resumes at the next import
        raise Failure(
            f"NATS: {exc or type(exc).__name__}; import again in a minute to finish", EXIT_UNREACHABLE
        ) from None
    finally:
        await client.close()
    imported = sum(o.imported for o in outcomes)
    typer.echo(f"{imported} of {len(outcomes)} store(s) imported", err=True)
    return 0 if imported == len(outcomes) else EXIT_ERROR
