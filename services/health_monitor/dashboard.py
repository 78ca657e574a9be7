"""The dashboard: server-rendered pages (Jinja2), kept live by server-sent events that carry
rendered fragments (htmx and its SSE extension swap them in, no reload).

    GET  /                               the board: nodes, counts, sessions (filterable)
    GET  /ui/stream/overview             SSE: `summary` and `nodes` fragments
    GET  /ui/stream/sessions?state&node&q  SSE: the `sessions` rows under that filter
    GET  /ui/sessions/<sid>              a session's page
    GET  /ui/sessions/<sid>/stream       SSE: its `live` state (the QR code as it rotates)
    GET  /ui/sessions/<sid>/history      fragment: recent status changes, sends, queue
    POST /ui/sessions                    create a session and start pairing it
    POST /ui/sessions/<sid>/<action>     pair, reconnect, logout, delete
    GET|POST /ui/login, POST /ui/logout

Every action is a request of the public contract (wa.session.*), answered by the session
API like any client's; nothing about sessions is decided here. History comes from the
persistence service's history queries, the queue from the outbound-queue's stats.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import jinja2
import msgspec
import nats.errors
from fastapi import APIRouter, Depends, Form, Query
from fastapi import Path as InPath
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from contracts.envelope import ContractError
from contracts.history import OutboundPage, StatusPage
from contracts.queue import QueueStats
from contracts.types import SESSION_ID_PATTERN, utcnow
from services.common.bus import request
from services.health_monitor import board
from services.health_monitor.api import MongoUnavailable, mongo_read, session_rows
from services.health_monitor.auth import COOKIE, Gate
from services.health_monitor.monitor import HealthMonitor
from services.sending.queue_reads import queue_depths

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
# A live stream renders at least this often (ages move) ...
REFRESH = 2.0
# ... and this long after a change, so a burst of events renders once.
SETTLE = 0.2
HISTORY_ROWS = 15
# Pairing waits for the session's owner, which may be moving (up to 2 x lease TTL + 2 s).
ACTION_TIMEOUT = 30.0
Sid = Annotated[str, InPath(pattern=SESSION_ID_PATTERN)]
Action = Literal["pair", "reconnect", "logout", "delete"]
Fragments = dict[str, str]  # SSE event name -> rendered HTML
# Requests nobody answered (the service that would is not running, or too slow).
UNANSWERED = (nats.errors.NoRespondersError, nats.errors.TimeoutError, TimeoutError)

# Where a login may send the browser back to: a path of this site (not `//host` or `/\host`,
# which browsers read as another site).
_LOCAL_PATH = re.compile(r"^/(?![/\\])[^\s\\]*$")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(["html"])
    )
    env.filters["age"] = board.age
    env.filters["qr_svg"] = board.qr_svg
    env.globals["STATES"] = board.STATES
    return env


class Dashboard:
    def __init__(self, monitor: HealthMonitor) -> None:
        self.monitor = monitor
        self.env = environment()

    def render(self, template: str, **context: Any) -> str:
        return self.env.get_template(template).render(**context)

    def page(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(self.render(template, **context), status)

    # -- what the pages show ------------------------------------------------------------
    async def overview(self) -> Fragments:
        now = time.monotonic()
        nodes = self.monitor.view.nodes(now)
        counts = self.monitor.view.states()
        return {
            "summary": self.render("_summary.html", counts=counts, nodes=nodes),
            "nodes": self.render("_nodes.html", nodes=nodes, now=utcnow()),
        }

    async def sessions(self, filters: board.Filters) -> str:
        try:
            rows = board.rows(await session_rows(self.monitor), await self.queue_depths())
        except MongoUnavailable as exc:
            return self.render("_sessions.html", error=str(exc))
        return self.render("_sessions.html", selection=board.select(rows, filters), now=utcnow())

    async def queue_depths(self) -> dict[str, int]:
        try:
            return await queue_depths(self.monitor.nc.jetstream(), self.monitor.subjects)
        except Exception:  # NATS away: the rows still show, without depths
            return {}

    def live(self, sid: str, pair_code: str | None = None) -> str:
        """The session's state as its latest status event says, with the QR code or pair
        code while it pairs."""
        status = self.monitor.view.last_status.get(sid)
        if pair_code is None and status is not None:
            pair_code = status.pair_code
        return self.render("_live.html", sid=sid, status=status, pair_code=pair_code)

    async def history(self, sid: str) -> str:
        s = self.monitor.subjects
        statuses = await self._ask(s.history(sid, "status"), {"limit": HISTORY_ROWS}, StatusPage)
        sends = await self._ask(s.history(sid, "outbound"), {"limit": HISTORY_ROWS}, OutboundPage)
        queue = await self._ask(s.queue(sid, "stats"), {}, QueueStats)
        return self.render("_history.html", statuses=statuses, sends=sends, queue=queue)

    async def _ask(self, subject: str, body: Any, answer: type[Any]) -> Any:
        """A contract request's answer, or the text of why there is none."""
        try:
            return msgspec.convert(await self.call(subject, body), answer)
        except ContractError as exc:
            return f"{exc.code}: {exc.message}"
        except UNANSWERED:
            return "the service that answers this is not running"

    async def call(self, subject: str, body: Any) -> Any:
        return await request(self.monitor.nc, subject, body, timeout=ACTION_TIMEOUT)

    # -- live streams --------------------------------------------------------------------
    async def stream(self, render: Callable[[], Awaitable[Fragments]]) -> AsyncIterator[ServerSentEvent]:
        """Each fragment `render()` returns, whenever it changed, until the server stops."""
        changes = self.monitor.changes
        sent: Fragments = {}
        while not changes.closed:
            version = changes.version
            for event, html in (await render()).items():
                if sent.get(event) != html:
                    sent[event] = html
                    yield ServerSentEvent(raw_data=html, event=event)
            await changes.after(version, REFRESH)
            await asyncio.sleep(SETTLE)

    # -- actions ---------------------------------------------------------------------------
    async def act(self, sid: str, action: Action, method: str = "qr", phone: str = "") -> HTMLResponse:
        """Carry out one action through the contract; the answer is a fragment to show."""
        s = self.monitor.subjects
        try:
            if action == "pair":
                body = {"method": "code", "phone": phone} if method == "code" else {"method": "qr"}
                started = await self.call(s.session(sid, "pair"), body)
                return self.page("_pairing.html", sid=sid, live=self.live(sid, started.get("pair_code")))
            result = await self.call(s.session(sid, action), {})
        except (ContractError, *UNANSWERED) as exc:
            return self.refused(f"{action} {sid}", exc)
        done = "deleted" if action == "delete" else f"now {result.get('state', '?')}"
        return self.page("_flash.html", message=f"{action} {sid}: {done}")

    async def create(self, sid: str, label: str, method: str, phone: str) -> HTMLResponse:
        try:
            await self.call(self.monitor.subjects.session_create, {"session_id": sid, "label": label})
        except (ContractError, *UNANSWERED) as exc:
            return self.refused(f"create {sid}", exc)
        return await self.act(sid, "pair", method, phone)

    def refused(self, what: str, exc: Exception) -> HTMLResponse:
        """The contract's error, or that no service answered, as a fragment to show."""
        why = f"{exc.code}: {exc.message}" if isinstance(exc, ContractError) else "no session-actor node answered"
        return self.page("_flash.html", error=f"{what}: {why}")


def router(monitor: HealthMonitor, gate: Gate) -> APIRouter:
    ui = Dashboard(monitor)
    page_auth = [Depends(gate.check_page)]
    data_auth = [Depends(gate.check_data)]
    pages = APIRouter(dependencies=page_auth, default_response_class=HTMLResponse)
    data = APIRouter(dependencies=data_auth)
    open_ = APIRouter()

    @pages.get("/")
    async def board_page(
        state: Annotated[str | None, Query()] = None,
        node: Annotated[str | None, Query()] = None,
        q: Annotated[str | None, Query()] = None,
    ) -> HTMLResponse:
        filters = board.Filters.of(state, node, q)
        return ui.page(
            "board.html", overview=await ui.overview(), sessions=await ui.sessions(filters), filters=filters,
            nodes=[n.node_id for n in monitor.view.nodes(time.monotonic())],
        )  # fmt: skip

    @pages.get("/ui/sessions/{sid}")
    async def session_page(sid: Sid) -> HTMLResponse:
        try:
            with mongo_read():
                doc = await monitor.store.get(sid)
        except MongoUnavailable as exc:
            return ui.page("error.html", 503, message=str(exc))
        if doc is None:
            return ui.page("error.html", 404, message=f"no session {sid!r}")
        session = monitor.view.session(doc)
        return ui.page("session.html", session=session, actions=board.actions_for(session.state), live=ui.live(sid))

    @data.get("/ui/stream/overview", response_class=EventSourceResponse)
    async def overview_stream() -> AsyncIterator[ServerSentEvent]:
        async for event in ui.stream(ui.overview):
            yield event

    @data.get("/ui/stream/sessions", response_class=EventSourceResponse)
    async def sessions_stream(
        state: Annotated[str | None, Query()] = None,
        node: Annotated[str | None, Query()] = None,
        q: Annotated[str | None, Query()] = None,
    ) -> AsyncIterator[ServerSentEvent]:
        filters = board.Filters.of(state, node, q)

        async def render() -> Fragments:
            return {"sessions": await ui.sessions(filters)}

        async for event in ui.stream(render):
            yield event

    @data.get("/ui/sessions/{sid}/stream", response_class=EventSourceResponse)
    async def session_stream(sid: Sid) -> AsyncIterator[ServerSentEvent]:
        async def render() -> Fragments:
            return {"live": ui.live(sid)}

        async for event in ui.stream(render):
            yield event

    @data.get("/ui/sessions/{sid}/history", response_class=HTMLResponse)
    async def history(sid: Sid) -> HTMLResponse:
        return HTMLResponse(await ui.history(sid))

    @data.post("/ui/sessions", response_class=HTMLResponse)
    async def create(
        session_id: Annotated[str, Form()],
        label: Annotated[str, Form()] = "",
        method: Annotated[str, Form()] = "qr",
        phone: Annotated[str, Form()] = "",
    ) -> HTMLResponse:
        return await ui.create(session_id.strip(), label.strip(), method, phone.strip())

    @data.post("/ui/sessions/{sid}/{action}", response_class=HTMLResponse)
    async def action(
        sid: Sid,
        action: Action,
        method: Annotated[str, Form()] = "qr",
        phone: Annotated[str, Form()] = "",
    ) -> HTMLResponse:
        return await ui.act(sid, action, method, phone.strip())

    @open_.get("/ui/login", response_class=HTMLResponse)
    async def login_form(
        token: Annotated[str | None, Query()] = None, next: Annotated[str, Query()] = "/"
    ) -> Response:
        if token is not None:
            return login(token, next)
        return ui.page("login.html", next=next, enabled=gate.enabled)

    @open_.post("/ui/login", response_class=HTMLResponse)
    async def login_post(token: Annotated[str, Form()], next: Annotated[str, Form()] = "/") -> Response:
        return login(token, next)

    def login(token: str, next: str) -> Response:
        if not gate.accepts_token(token):
            return ui.page("login.html", 401, next=next, enabled=gate.enabled, error="wrong token")
        response = RedirectResponse(next if _LOCAL_PATH.match(next) else "/", status_code=303)
        response.set_cookie(COOKIE, gate.cookie_value(), httponly=True, samesite="strict")
        return response

    @open_.post("/ui/logout")
    async def logout() -> Response:
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    combined = APIRouter()
    for part in (pages, data, open_):
        combined.include_router(part)
    return combined
