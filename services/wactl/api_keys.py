"""`wactl apikey`: the HTTP API's keys of this tenant (WA_TENANT), in its MongoDB database
(WA_MONGO_URL, WA_MONGO_DB), through the admin library services/api_keys."""

from typing import Annotated, Any

import typer

from contracts.types import utcnow
from services.wactl import render
from services.wactl.exits import Failure
from services.wactl.running import run


def _admin() -> tuple[Any, Any]:
    """The admin library and MongoDB, imported when a key command runs (pymongo would add a
    quarter of a second to every other wactl command)."""
    from services.api_keys.store import ApiKeyStore
    from services.wactl.database import mongo_db

    return ApiKeyStore, mongo_db


app = typer.Typer(help="API keys of the HTTP API (MongoDB, WA_MONGO_URL).", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context, label: Annotated[str, typer.Option(help="what the key is for, shown by list")] = ""
) -> None:
    """Make a key for this tenant. It is printed once: only its hash is kept."""
    settings = ctx.obj.settings
    ApiKeyStore, mongo_db = _admin()

    async def work() -> None:
        async with mongo_db(settings) as db:
            key, token = await ApiKeyStore(db).create(settings.tenant, label, utcnow())
        typer.echo(token)
        typer.echo(f"key {key.key_id} of tenant {key.tenant!r}: shown once, keep it", err=True)

    run(work())


@app.command("list")
def list_keys(ctx: typer.Context) -> None:
    """Every key (ids and labels; the keys themselves are not kept)."""
    settings = ctx.obj.settings
    ApiKeyStore, mongo_db = _admin()

    async def work() -> None:
        async with mongo_db(settings) as db:
            keys = await ApiKeyStore(db).list()
        rows = [(k.key_id, k.tenant, k.label or None, render.when(k.created_at), render.when(k.revoked_at)) for k in keys]
        typer.echo(render.table(["KEY", "TENANT", "LABEL", "CREATED", "REVOKED"], rows) if keys else "no keys")

    run(work())


@app.command("revoke")
def revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="the KEY of `wactl apikey list`")]) -> None:
    """Refuse a key from now on."""
    settings = ctx.obj.settings
    ApiKeyStore, mongo_db = _admin()

    async def work() -> None:
        async with mongo_db(settings) as db:
            if not await ApiKeyStore(db).revoke(key_id, utcnow()):
                raise Failure(f"no key {key_id!r}")
        typer.echo(f"revoked {key_id}")

    run(work())
