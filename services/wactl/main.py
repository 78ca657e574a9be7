"""wactl: the command line of the WhatsApp session gateway (public NATS contract v1).

This module assembles the app: its global options, and the commands of the modules beside
it (one per command group). Exit status: 0 done, 1 an error reply or a failed outcome
(pairing stopped, send failed), 2 bad usage, 3 NATS or MongoDB unreachable or no service
answered, 4 a wait timed out, 130 interrupted.
"""

from typing import Annotated

import typer
from pydantic import ValidationError

from services.common.config import Settings
from services.devstack.tenants import tenant_db, tenant_folder, tenant_url_file
from services.wactl import (
    api_keys,
    credentials,
    events,
    history,
    media,
    queues,
    send,
    sessions,
    sim,
    webhooks,
)
from services.wactl.arguments import given
from services.wactl.exits import fail
from services.wactl.running import Options

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
app.add_typer(media.app, name="media")
app.add_typer(sim.app, name="sim")
app.add_typer(webhooks.app, name="webhook")
app.add_typer(api_keys.app, name="apikey")
app.add_typer(credentials.app, name="creds")
app.command()(send.send)
app.command()(events.events)
app.add_typer(credentials.import_app, name="import")


@app.callback()
def main(
    ctx: typer.Context,
    nats_url: Annotated[str | None, typer.Option(help="NATS server URL (default: WA_NATS_URL)")] = None,
    prefix: Annotated[str | None, typer.Option(help="subject prefix (default: WA_PREFIX, or wa)")] = None,
    sim_prefix: Annotated[
        str | None, typer.Option(help="simulator prefix (default: WA_SIM_PREFIX, or wasim)")
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds to wait for a reply")] = 10.0,
    tenant: Annotated[
        str | None,
        typer.Option(help="act as this tenant of the dev stack (WA_TENANTS): its URL from <data dir>/tenants/<tenant>.url"),
    ] = None,
) -> None:
    try:
        settings = Settings(**given(nats_url=nats_url, prefix=prefix, sim_prefix=sim_prefix))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        fail(f"invalid configuration: {problems}", 2)
    ctx.obj = Options(settings if tenant is None else as_tenant(settings, tenant), timeout)


def as_tenant(settings: Settings, tenant: str) -> Settings:
    """The settings of a tenant's client: its URL (user and password in it), its database
    and data folder (for the admin commands that read them)."""
    url_file = tenant_url_file(settings.data_dir, tenant)
    try:
        url = url_file.read_text().strip()
    except OSError:
        fail(f"no tenant {tenant!r}: {url_file} is missing (start the dev stack with WA_TENANTS)", 2)
    update = {"nats_url": url, "mongo_db": tenant_db(tenant), "data_dir": tenant_folder(settings.data_dir, tenant)}
    return settings.model_copy(update=update)
