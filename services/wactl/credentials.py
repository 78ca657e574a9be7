"""`wactl creds rotate-key` and `wactl import` (store files, or `wactl import baileys` for
Baileys auth folders): stored WhatsApp credentials, through the admin library
services/credentials (the work is in credential_admin)."""

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

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


STORES = "stores"


class ImportGroup(TyperGroup):
    """`wactl import PATH` (store files, the `stores` command) keeps working beside `wactl
    import baileys DIR...`: a first argument that names no command is the stores' PATH."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [STORES, *args]
        return super().parse_args(ctx, args)


import_app = typer.Typer(
    cls=ImportGroup,
    help="Turn existing WhatsApp credentials into linked sessions, without a new QR scan.",
    no_args_is_help=True,
)
LabelFromName = Annotated[
    bool, typer.Option("--label-from-filename", help="label each session with its file or folder name")
]


@import_app.command(STORES)
def import_stores(
    ctx: typer.Context,
    path: Annotated[
        Path, typer.Argument(exists=True, help="a store file, or a folder of *.db, *.sqlite, *.sqlite3")
    ],
    adapter: Annotated[
        Adapter | None, typer.Option(help="whose stores these are (default: WA_ADAPTER)")
    ] = None,
    label_from_filename: LabelFromName = False,
) -> None:
    """Turn existing neonize/whatsmeow (or simulator) SQLite stores into linked sessions.

    `wactl import PATH` for short. The session id comes from the file name. Never replaces an existing session or its
    credentials; live stores of a running process are copied safely. One line per store;
    exit status 1 if any was skipped.
    """
    from services.wactl import credential_admin

    name = adapter.value if adapter else ctx.obj.settings.adapter
    with_nats(ctx, lambda gateway: credential_admin.import_from(gateway, path, name, label_from_filename))


@import_app.command("baileys")
def import_baileys(
    ctx: typer.Context,
    folders: Annotated[
        list[Path],
        typer.Argument(
            exists=True,
            file_okay=False,
            help="Baileys multi-file auth folders (creds.json, pre-key-*.json, ...): Baileys, "
            "WAHA NOWEB (.sessions/noweb/*), Evolution API (instances/*)",
        ),
    ],
    evolution_sessions: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Evolution API v2: its Session table exported as JSON, the creds of folders "
            "without creds.json (by instance id)",
        ),
    ] = None,
    label_from_filename: LabelFromName = False,
) -> None:
    """Turn Baileys auth folders into linked sessions of the neonize adapter.

    The session id comes from the folder name. Before anything is stored, the keys must
    match and every signature verify; a folder that fails is skipped with the reason.
    Signal sessions are left out (whatsmeow re-establishes them). One line per folder;
    exit status 1 if any was skipped.
    """
    from services.wactl import credential_admin

    with_nats(
        ctx,
        lambda gateway: credential_admin.import_baileys(gateway, folders, evolution_sessions, label_from_filename),
    )
