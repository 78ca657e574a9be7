"""`wactl creds rotate-key` and `wactl import`: stored WhatsApp credentials, through the admin
library services/credentials (the work is in credential_admin)."""

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from services.wactl.running import run, with_nats

app = typer.Typer(help="Stored WhatsApp credentials (MongoDB, WA_MONGO_URL).", no_args_is_help=True)


@app.command("rotate-key")
def creds_rotate_key(ctx: typer.Context) -> None:
    """Re-seal every stored credential version under the first key of the keyring.

    Set WA_VAULT_KEYS (or WA_VAULT_KEY_FILE) to the new key first and the old keys after it;
    once this is done, the old keys can be removed. Safe while the system runs.
    """
    # Imported here (and in `import`): only these two commands need MongoDB and the crypto
    # stack, a quarter of a second at every start of wactl otherwise.
    from services.wactl import credential_admin

    run(credential_admin.rotate_key(ctx.obj.settings))


class Adapter(StrEnum):
    neonize = "neonize"
    sim = "sim"


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
    from services.wactl import credential_admin

    name = adapter.value if adapter else ctx.obj.settings.adapter
    with_nats(ctx, lambda gateway: credential_admin.import_from(gateway, path, name, label_from_filename))
