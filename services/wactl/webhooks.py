"""`wactl webhook`: webhook subscriptions, through the contract (`<prefix>.webhook.*`,
answered by the http-gateway)."""

from typing import Annotated

import typer

from contracts.sessions import Empty
from contracts.webhooks import EventKind, Webhook, WebhookCreate, WebhookDeleted, WebhookList
from services.wactl import render
from services.wactl.arguments import Json, check_sid
from services.wactl.running import ask, subjects

app = typer.Typer(help="Webhook subscriptions (http-gateway service).", no_args_is_help=True)

Wid = Annotated[str, typer.Argument(help="a subscription's id (wh_...)", show_default=False)]


def _check_sids(values: list[str] | None) -> list[str] | None:
    for value in values or []:
        check_sid(value)
    return values


@app.command("create")
def create(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="where to POST the events (http or https)")],
    session: Annotated[
        list[str] | None, typer.Option(callback=_check_sids, help="only this session's events (repeatable)")
    ] = None,
    kind: Annotated[list[str] | None, typer.Option(help="only this kind: status, message, outbound, alert")] = None,
    description: Annotated[str, typer.Option(help="what it is for")] = "",
    as_json: Json = False,
) -> None:
    """Subscribe a URL to events; prints the signing secret once."""
    kinds: list[EventKind] = list(kind or [])  # type: ignore[arg-type]  # the contract checks them
    body = WebhookCreate(url=url, sessions=session or [], kinds=kinds, description=description)
    ask(ctx, subjects(ctx).webhook_create, body, Webhook, render.webhook_detail, as_json)


@app.command("list")
def list_webhooks(ctx: typer.Context, as_json: Json = False) -> None:
    """Every subscription: state, backlog, failing since."""
    ask(ctx, subjects(ctx).webhook_list, Empty(), WebhookList, lambda r: render.webhook_table(r.webhooks), as_json)


@app.command("get")
def get(ctx: typer.Context, wid: Wid, as_json: Json = False) -> None:
    """One subscription."""
    ask(ctx, subjects(ctx).webhook(wid, "get"), Empty(), Webhook, render.webhook_detail, as_json)


@app.command("pause")
def pause(ctx: typer.Context, wid: Wid, as_json: Json = False) -> None:
    """Stop deliveries; events wait in the stream."""
    ask(ctx, subjects(ctx).webhook(wid, "pause"), Empty(), Webhook, render.webhook_detail, as_json)


@app.command("resume")
def resume(ctx: typer.Context, wid: Wid, as_json: Json = False) -> None:
    """Deliver again, from the first event not delivered."""
    ask(ctx, subjects(ctx).webhook(wid, "resume"), Empty(), Webhook, render.webhook_detail, as_json)


@app.command("delete")
def delete(ctx: typer.Context, wid: Wid, as_json: Json = False) -> None:
    """Delete a subscription and its backlog."""
    show = lambda r: f"deleted {r.webhook_id}"  # noqa: E731
    ask(ctx, subjects(ctx).webhook(wid, "delete"), Empty(), WebhookDeleted, show, as_json)
