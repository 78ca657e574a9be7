"""health-monitor: the live view (plain code), and the service against real NATS and MongoDB.

Nodes are simulated by driving the leases bucket directly, the way session-actor nodes do:
a `node.<id>` lease with a server-side TTL, renewed by compare-and-set, claims of
`own.<sid>` whose revision is the owner's fencing token, session documents written through
SessionStore, and heartbeats.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from nats.js.api import Header
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from contracts.events import StatusEvent
from contracts.internal import NodeHeartbeat, NodeLease, Ownership, SessionBeat
from contracts.types import utcnow
from services.common.bus import EventPublisher, encode, new_id
from services.common.cluster import NODE, OWN, ClusterView, OwnerEntry, fence_token
from services.common.runtime import make_broker
from services.common.sessions import OWNER_LOST, SessionStore
from services.devstack.probes import EventTap, wait_until
from services.devstack.servers import free_port
from services.health_monitor import api as api_module
from services.health_monitor import monitor as monitor_module
from services.health_monitor.main import asgi_app
from services.health_monitor.monitor import HealthMonitor, needs_owner_lost
from services.health_monitor.view import SILENT_AFTER_BEATS, HealthView

T0 = datetime(2026, 11, 1, tzinfo=UTC)


# -- the view, without servers ------------------------------------------------------------
def lease(node_id: str, capacity: int = 10) -> NodeLease:
    return NodeLease(node_id=node_id, host=f"host-{node_id}", pid=1, capacity=capacity, started_at=T0)


def doc(sid: str, state: str, node: str | None, reason: str | None = None, token: str = "") -> dict:
    return {"_id": sid, "label": "", "state": state, "reason": reason, "node": node, "since": T0, "created_at": T0,
            "owner_token": token}  # fmt: skip


def cluster_of(nodes: list[str], owners: dict[str, str | None]) -> ClusterView:
    return ClusterView(
        nodes={n: lease(n) for n in nodes},
        sessions={
            sid: OwnerEntry(Ownership(node=node), revision)
            for revision, (sid, node) in enumerate(owners.items(), 1)
        },
    )


def test_nodes_report_heartbeats_counts_and_silence() -> None:
    cluster = cluster_of(["a", "b"], {"s1": "a", "s2": "a", "s3": "b"})
    view = HealthView(cluster, heartbeat_interval=1.0)
    for node in ("a", "b"):
        view.cluster_changed("node_up", node, now=100.0)
    beat = NodeHeartbeat(node_id="a", at=T0, capacity=10, lease_ok=True, loop_lag_ms=2.5,
                         sessions=[SessionBeat(session_id="s1", state="connected", since=T0)])  # fmt: skip
    view.heartbeat(beat, now=101.0)

    a, b = view.nodes(now=102.0)
    assert (a.node_id, a.host, a.capacity, a.sessions_owned, a.sessions_running) == ("a", "host-a", 10, 2, 1)
    assert (a.last_heartbeat_age_s, a.loop_lag_ms, a.lease_ok, a.silent) == (1.0, 2.5, True, False)
    # Never heard from: measured from when its lease appeared.
    assert (b.sessions_owned, b.last_heartbeat_age_s, b.lease_ok, b.silent) == (1, None, None, False)

    later = 100.0 + SILENT_AFTER_BEATS + 0.5
    assert view.silent_nodes(now=later) == ["b"]
    assert view.silent_nodes(now=101.0 + SILENT_AFTER_BEATS + 0.5) == ["a", "b"]


def test_a_heartbeat_counts_the_sessions_of_its_node() -> None:
    """Today's nodes send a count: a list of every session outgrew NATS' 1 MiB limit."""
    view = HealthView(cluster_of(["a"], {}), heartbeat_interval=1.0)
    view.cluster_changed("node_up", "a", now=100.0)
    view.heartbeat(NodeHeartbeat(node_id="a", at=T0, capacity=10, lease_ok=True, loop_lag_ms=1.0, running=7), now=101.0)
    assert view.nodes(now=101.0)[0].sessions_running == 7


def test_a_node_that_goes_is_forgotten_and_late_heartbeats_are_pruned() -> None:
    cluster = cluster_of(["a"], {})
    view = HealthView(cluster, heartbeat_interval=1.0)
    view.cluster_changed("node_up", "a", now=0.0)
    del cluster.nodes["a"]
    view.cluster_changed("node_down", "a", now=1.0)
    # A heartbeat sent before the node stopped arrives after its lease went.
    view.heartbeat(NodeHeartbeat(node_id="a", at=T0, capacity=1, lease_ok=False, loop_lag_ms=0), now=1.1)
    assert view.nodes(now=1.2) == []
    view.prune(now=1.2)
    assert "a" in view._heard
    view.prune(now=1.2 + SILENT_AFTER_BEATS)
    assert view._heard == {}


def test_sessions_by_state_come_from_events_with_the_owner_lost_truth() -> None:
    cluster = cluster_of(["alive"], {"s1": "alive", "s2": "dead", "s3": "alive", "s4": "alive"})
    view = HealthView(cluster, heartbeat_interval=1.0)
    for sid, state, node in (("s1", "connected", "alive"), ("s2", "connected", "dead"), ("s3", "banned", "alive")):
        view.status(StatusEvent(event_id=sid, session_id=sid, at=T0, state=state, node=node))
    # s2's owner is gone: disconnected; s4 never reported anything: created.
    assert view.states() == {"connected": 1, "disconnected": 1, "banned": 1, "created": 1}


def test_orphans_are_sessions_whose_owner_has_no_lease() -> None:
    cluster = cluster_of(["alive"], {"s1": "alive", "s2": "dead", "s3": None, "s4": "dead"})
    view = HealthView(cluster, heartbeat_interval=1.0)
    assert sorted(view.orphaned_sessions()) == [("s2", "dead", 2), ("s4", "dead", 4)]


def test_session_rows_tell_the_truth_and_filter() -> None:
    cluster = cluster_of(["alive"], {"s1": "alive", "s2": "dead", "s3": "dead"})
    view = HealthView(cluster, heartbeat_interval=1.0)
    view.status(StatusEvent(event_id="e1", session_id="s1", at=T0, state="connecting", node="alive"))
    view.status(
        StatusEvent(
            event_id="e2", session_id="s1", at=T0 + timedelta(seconds=1), state="connected", node="alive"
        )
    )
    docs = [doc("s1", "connected", "alive"), doc("s2", "connected", "dead"), doc("s3", "logged_out", "dead")]

    s1, s2, s3 = view.sessions(docs)
    assert (s1.state, s1.node, s1.owner, s1.owner_alive) == ("connected", "alive", "alive", True)
    assert s1.last_status is not None
    assert (s1.last_status.event_id, s1.last_status.state) == ("e2", "connected")
    # A live state claimed by a dead owner is shown as lost even before the monitor writes it.
    assert (s2.state, s2.reason, s2.node) == ("disconnected", OWNER_LOST, None)
    assert (s2.owner, s2.owner_alive) == ("dead", False)
    assert (s3.state, s3.owner_alive, s3.last_status) == ("logged_out", False, None)

    assert [r.session_id for r in view.sessions(docs, state="disconnected")] == ["s2"]
    assert [r.session_id for r in view.sessions(docs, node="alive")] == ["s1"]
    assert view.sessions(docs, state="connected", node="dead") == []

    view.status(StatusEvent(event_id="e3", session_id="s1", at=T0, state="deleted"))
    assert view.session(docs[0]).last_status is None
    view.status(StatusEvent(event_id="e4", session_id="s2", at=T0, state="connecting"))
    view.cluster_changed("session_gone", "s2", now=0.0)
    assert view.last_status == {}


T2, T3 = fence_token(1_764_000_000_000, 2), fence_token(1_764_000_000_000, 3)


@pytest.mark.parametrize(
    ("state", "reason", "owner_token", "expected"),
    [
        ("connected", None, T2, True),
        ("pairing", None, T2, True),
        ("disconnected", "connection dropped", T2, True),
        ("connected", None, "", True),  # never fenced (older documents)
        ("connected", None, T3, False),  # a newer owner already wrote
        ("disconnected", OWNER_LOST, T2, False),  # already reported (another replica)
        ("logged_out", "logged_out: by request", T2, False),  # describes the session, not the owner
        ("created", None, T2, False),
        ("stopped", "client outdated", T2, False),
        ("banned", "temporary_ban", T2, False),
    ],
)
def test_which_documents_get_owner_lost(
    state: str, reason: str | None, owner_token: str, expected: bool
) -> None:
    assert needs_owner_lost(doc("s", state, "dead", reason, owner_token), token=T2) is expected


# -- the service ------------------------------------------------------------------------------
class FakeNode:
    """What a session-actor node does to the leases bucket, without running any session."""

    def __init__(self, nc, settings, node_id: str) -> None:
        self.nc = nc
        self.settings = settings
        self.id = node_id
        self.owned: list[str] = []
        self.last_renewal = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> FakeNode:
        js = self.nc.jetstream()
        self.kv = await js.key_value(self.settings.subjects.leases_bucket)
        info = await js.stream_info(f"KV_{self.settings.subjects.leases_bucket}")
        self.epoch_ms = int(info.created.timestamp() * 1000)
        self.revision = await self.kv.create(NODE + self.id, self._lease(), msg_ttl=self.settings.lease_ttl)
        self.last_renewal = time.monotonic()
        self._task = asyncio.create_task(self._live())
        return self

    def _lease(self) -> bytes:
        return encode(NodeLease(node_id=self.id, host="test", pid=0, capacity=500, started_at=utcnow()))

    async def _live(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_renew_interval)
            sent = time.monotonic()
            ack = await self.nc.jetstream().publish(
                f"$KV.{self.settings.subjects.leases_bucket}.{NODE}{self.id}",
                self._lease(),
                headers={Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(self.revision)},
                msg_ttl=self.settings.lease_ttl,
            )
            self.revision = ack.seq
            self.last_renewal = sent
            beat = NodeHeartbeat(node_id=self.id, at=utcnow(), capacity=500, lease_ok=True, loop_lag_ms=1.5,
                                 sessions=[SessionBeat(session_id=s, state="connected", since=T0) for s in self.owned])  # fmt: skip
            await self.nc.publish(self.settings.subjects.heartbeat(self.id), encode(beat))

    async def claim(self, sid: str) -> str:
        entry = await self.kv.get(OWN + sid)
        revision = await self.kv.update(OWN + sid, encode(Ownership(node=self.id)), last=entry.revision)
        self.owned.append(sid)
        return fence_token(self.epoch_ms, revision)

    def die(self) -> float:
        """Stops renewing (a crash); returns when the last renewal was sent."""
        assert self._task is not None
        self._task.cancel()
        return self.last_renewal


async def new_session(store: SessionStore, kv, sid: str) -> None:
    await store.create(sid, f"label {sid}", utcnow())
    await kv.create(OWN + sid, encode(Ownership()))


async def run_session(store: SessionStore, node: FakeNode, sid: str, state: str = "connected") -> str:
    """Claim `sid` on `node` and write its state the way an owning actor does; its token."""
    token = await node.claim(sid)
    await store.fence(sid, token)
    assert await store.report(sid, token, state=state, since=utcnow(), reason=None, jid="15550001111@s.whatsapp.net",
                              node=node.id)  # fmt: skip
    return token


TOKEN = "monitor-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def wait_http(client: httpx.AsyncClient) -> None:
    async def up() -> bool:
        try:
            return (await client.get("/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    await wait_until(up, timeout=20, what="health-monitor answering /healthz")


# Enough to need batching; the dev MongoDB server (SecantusDB) takes ~1 s for 300 with two
# monitor replicas writing, where MongoDB takes milliseconds.
SESSIONS_ON_DYING_NODE = 200


async def test_owner_lost_is_written_and_announced_once(settings, nc, db, stack) -> None:
    store = SessionStore(db)
    dying = await FakeNode(nc, settings, "dying").start()
    staying = await FakeNode(nc, settings, "staying").start()
    lost = [f"lost{i}" for i in range(SESSIONS_ON_DYING_NODE)]
    reclaimed, unlinked, remote, ghost = "reclaimed", "unlinked", "remote", "ghost"
    await asyncio.gather(
        *(new_session(store, dying.kv, sid) for sid in [*lost, reclaimed, unlinked, remote, ghost])
    )
    claimed = await asyncio.gather(*(run_session(store, dying, sid) for sid in lost))
    tokens = dict(zip(lost, claimed, strict=True))
    # Claimed by `dying`, but a newer owner already fenced and wrote (its claim not yet seen).
    await run_session(store, dying, reclaimed)
    newer_token = fence_token(dying.epoch_ms, 10**9)
    await store.fence(reclaimed, newer_token)
    await store.report(
        reclaimed, newer_token, state="connecting", since=utcnow(), reason=None, jid=None, node="staying"
    )
    await run_session(store, dying, unlinked, state="logged_out")
    await run_session(store, staying, remote)
    # Owned by a node that died before any monitor ran.
    await ghost_owner(store, dying.kv, ghost, dying.epoch_ms)
    publisher = EventPublisher(nc.jetstream(), settings.subjects)
    await publisher.publish(
        StatusEvent(event_id=new_id(), session_id=remote, at=utcnow(), state="connected", node="staying")
    )

    tap = await EventTap(nc, settings).start()
    ports = [free_port(), free_port()]
    # Two replicas race for every owner-lost report: each event must still be stored once.
    stack.start("health-monitor", health_port=ports[0], dashboard_token=TOKEN)
    stack.start("health-monitor", "health-monitor-2", health_port=ports[1], dashboard_token=TOKEN)
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[0]}", headers=BEARER) as http,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[1]}", headers=BEARER) as http2,
    ):
        await asyncio.gather(wait_http(http), wait_http(http2))
        # What names sessions and numbers asks for the token; the probe does not.
        for path in ("/nodes", "/sessions", f"/sessions/{ghost}"):
            assert (await http.get(path, headers={"Authorization": "Bearer wrong"})).status_code == 401
            assert (await http.get(path, params={"token": TOKEN}, headers={"Authorization": ""})).status_code == 200
        health = (await http.get("/healthz")).json()
        assert health == {"status": "ok", "checks": {"nats": {"ok": True}, "jetstream": {"ok": True}, "mongo": {"ok": True}}}

        ghost_doc = await wait_until(
            lambda: owner_lost_doc(store, ghost), timeout=5, what="ghost session reported"
        )
        assert ghost_doc["node"] is None

        nodes = await wait_until(lambda: nodes_heard(http, 2), timeout=5, what="heartbeats of both nodes")
        by_id = {n["node_id"]: n for n in nodes}
        assert by_id["dying"]["sessions_owned"] == SESSIONS_ON_DYING_NODE + 2
        assert by_id["staying"] | {"last_heartbeat_age_s": 0, "started_at": ""} == {
            "node_id": "staying", "host": "test", "capacity": 500, "started_at": "", "sessions_owned": 1,
            "sessions_running": 1, "last_heartbeat_age_s": 0, "loop_lag_ms": 1.5, "lease_ok": True, "silent": False,
            "unfit": None,
        }  # fmt: skip
        connected = (await http.get("/sessions", params={"state": "connected"})).json()["sessions"]
        assert len(connected) == len(lost) + 1

        last_renewal = dying.die()
        deadline = last_renewal + settings.lease_ttl + 2.5

        async def all_reported() -> bool:
            # `lost` plus the ghost's session; a light query, so polling does not slow the server.
            return await db["sessions"].count_documents({"reason": OWNER_LOST}) == len(lost) + 1

        await wait_until(
            all_reported,
            timeout=settings.lease_ttl + 5,
            interval=0.1,
            what="the dead node's sessions reported",
        )
        assert time.monotonic() < deadline, "owner_lost written later than lease_ttl + 2.5 s after it went"
        docs = await db["sessions"].find({"_id": {"$in": lost}}).to_list(None)
        assert {(d["state"], d["node"], d["jid"]) for d in docs} == {
            ("disconnected", None, "15550001111@s.whatsapp.net")
        }
        assert {d["_id"]: d["owner_token"] for d in docs} == tokens

        await wait_until(
            lambda: len(owner_lost_events(tap, lost)) >= len(lost), timeout=5, what="owner_lost events"
        )
        await asyncio.sleep(1.5)  # both replicas made their passes: duplicates would have landed
        events = owner_lost_events(tap, lost)
        assert sorted(e["event_id"] for e in events) == sorted(
            f"{sid}:owner_lost:{tokens[sid]}" for sid in lost
        )
        assert all((e["state"], e["token"]) == ("disconnected", tokens[e["session_id"]]) for e in events)
        # Each loss is an alert too, stored once although both replicas raised it.
        alerts = [e for sid in lost for e in tap.of(sid, "alert")]
        assert sorted(a["event_id"] for a in alerts) == sorted(f"{sid}:owner_lost:{tokens[sid]}:alert" for sid in lost)
        assert {(a["kind"], a["severity"]) for a in alerts} == {("owner_lost", "warning")}

        # Fenced out, or not the owner's to lose: untouched, and nothing announced.
        untouched = [reclaimed, unlinked, remote]
        still = {d["_id"]: d async for d in db["sessions"].find({"_id": {"$in": untouched}})}
        assert (still[reclaimed]["state"], still[reclaimed]["node"]) == ("connecting", "staying")
        assert still[unlinked]["state"] == "logged_out"
        assert still[remote]["state"] == "connected"
        assert owner_lost_events(tap, untouched) == []

        # -- the endpoints after the death --------------------------------------------------------
        assert [n["node_id"] for n in (await http.get("/nodes")).json()["nodes"]] == ["staying"]
        rows = {r["session_id"]: r for r in (await http.get("/sessions")).json()["sessions"]}
        assert len(rows) == len(lost) + 4
        assert rows["lost0"] | {"since": "", "last_status": None} == {
            "session_id": "lost0", "label": "label lost0", "state": "disconnected", "reason": OWNER_LOST,
            "node": None, "since": "", "owner": "dying", "owner_alive": False, "last_status": None,
        }  # fmt: skip
        assert rows["remote"]["owner_alive"] is True
        # The latest status event, from the replay at start or live.
        assert rows["remote"]["last_status"]["state"] == "connected"
        one = await wait_until(
            lambda: last_status_of(http, "lost0"), timeout=5, what="owner_lost event in the view"
        )
        assert one["last_status"]["event_id"] == f"lost0:owner_lost:{tokens['lost0']}"
        filtered = await http.get("/sessions", params={"state": "connected", "node": "staying"})
        assert [r["session_id"] for r in filtered.json()["sessions"]] == ["remote"]

        missing = await http.get("/sessions/nobody")
        assert (missing.status_code, missing.json()) == (404, {"error": "session 'nobody' not found"})
        bad = await http.get("/sessions", params={"state": "sleepy"})
        assert bad.status_code == 400 and "sleepy" in bad.json()["error"]
    await tap.stop()
    staying.die()
    assert stack.stop("health-monitor") == 0


async def ghost_owner(store: SessionStore, kv, sid: str, epoch_ms: int) -> None:
    entry = await kv.get(OWN + sid)
    revision = await kv.update(OWN + sid, encode(Ownership(node="ghost-node")), last=entry.revision)
    token = fence_token(epoch_ms, revision)
    await store.fence(sid, token)
    await store.report(
        sid, token, state="connected", since=utcnow(), reason=None, jid=None, node="ghost-node"
    )


async def owner_lost_doc(store: SessionStore, sid: str) -> dict | None:
    found = await store.get(sid)
    return found if found and found["reason"] == OWNER_LOST else None


async def nodes_heard(http: httpx.AsyncClient, count: int) -> list[dict] | None:
    nodes = (await http.get("/nodes")).json()["nodes"]
    heard = [n for n in nodes if n["last_heartbeat_age_s"] is not None]
    return nodes if len(heard) == count else None


async def last_status_of(http: httpx.AsyncClient, sid: str) -> dict | None:
    row = (await http.get(f"/sessions/{sid}")).json()
    return row if row["last_status"] and row["last_status"]["reason"] == OWNER_LOST else None


def owner_lost_events(tap: EventTap, sids: list[str]) -> list[dict]:
    return [e for sid in sids for e in tap.of(sid, "status") if e.get("reason") == OWNER_LOST]


async def test_healthz_is_503_when_mongodb_is_unreachable(settings, nc, monkeypatch) -> None:
    # Each request waits its full timeout for a server that never answers: keep them short.
    monkeypatch.setattr(monitor_module, "PROBE_TIMEOUT", 0.3)
    monkeypatch.setattr(api_module, "MONGO_READ_TIMEOUT", 0.3)
    unreachable: AsyncMongoClient = AsyncMongoClient(
        f"mongodb://127.0.0.1:{free_port()}/?directConnection=true", serverSelectionTimeoutMS=300
    )
    monitor = HealthMonitor(settings, nc, unreachable[settings.mongo_db])
    with_token = settings.model_copy(update={"dashboard_token": SecretStr(TOKEN)})
    app = asgi_app(make_broker(settings, "test"), monitor, with_token)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://monitor", headers=BEARER
    ) as http:
        health = await http.get("/healthz")
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["nats"] == {"ok": True}
        assert body["checks"]["mongo"]["ok"] is False and body["checks"]["mongo"]["error"]
        # What needs MongoDB says so; what does not still answers.
        sessions = await http.get("/sessions")
        assert sessions.status_code == 503 and "MongoDB unavailable" in sessions.json()["error"]
        assert (await http.get("/sessions/alice")).status_code == 503
        assert (await http.get("/nodes")).json() == {"nodes": [], "silent": []}
    # No WA_DASHBOARD_TOKEN: the dashboard and what names sessions are off, and say how to
    # turn them on; the probe still answers.
    app = asgi_app(make_broker(settings, "test"), monitor, settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://monitor") as http:
        assert (await http.get("/healthz")).status_code == 503
        for path in ("/nodes", "/sessions", "/sessions/alice"):
            closed = await http.get(path)
            assert closed.status_code == 503 and "WA_DASHBOARD_TOKEN" in closed.json()["error"]
        off = await http.get("/")
        assert off.status_code == 503 and "WA_DASHBOARD_TOKEN" in off.json()["detail"]
        assert (await http.get("/ui/stream/overview")).status_code == 503
        assert "The dashboard is off" in (await http.get("/ui/login")).text
    await unreachable.close()
