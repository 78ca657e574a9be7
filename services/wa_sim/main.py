"""wa-sim: the simulated WhatsApp service (protocol in contracts/sim.py).

Wiring only: the rules live in world.py, the state file in state.py. Each request runs
one world operation and publishes the frames it produced under one lock, so frames for a
connection, and the replies that follow them, leave in the order the world made them.

Subscribers handle their messages one at a time (no `max_workers`): a handler is a few
microseconds of plain code under that lock, so concurrent workers only add task overhead.
Measured on 2 shared cores, 300-1,000 sessions sending through the adapter: 1,500-2,400
sends/s sequential against 600-900/s with 64 workers. Each operation has its own
subscriber, so keepalives never queue behind a burst of sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog
from faststream import FastStream
from faststream.nats import NatsBroker, NatsRouter
from nats.aio.client import Client as NatsClient
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.object_store import ObjectStore

from contracts import sim
from contracts.envelope import Ok, invalid
from contracts.sessions import Empty
from services.common import logs
from services.common.api import Path, request_router, strict
from services.common.bus import DAY, encode, object_sha256
from services.common.config import Settings
from services.common.media import decode_base64
from services.common.metrics import serve_metrics
from services.common.runtime import exit_with_supervisor, make_broker, wait_for_servers
from services.common.tasks import cancel_and_wait
from services.wa_sim.state import StateFile
from services.wa_sim.world import Rules, World, inbound_type

log = structlog.get_logger(__name__)

# Timer resolution: receipts, QR rotation and keepalive expiry fire within this.
TICK = 0.02
# How long the media servers keep a file contacts sent (WhatsApp's keep them for weeks).
MEDIA_TTL = DAY

DONE: Ok[Empty] = Ok(data=Empty())


class Simulator:
    """The world behind one lock, its timers and its state file."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.world = World(
            Rules(
                qr_first=settings.sim_qr_first,
                qr_next=settings.sim_qr_next,
                qr_codes=settings.sim_qr_codes,
                keepalive_timeout=settings.sim_keepalive_timeout,
                receipt_delay=settings.sim_receipt_delay,
                read_after=settings.sim_read_after,
            ),
            random.Random(),
        )
        self.state = StateFile(settings.data_dir / "wa_sim" / "state.json")
        self._subjects = settings.subjects
        self._clock = clock
        self._lock = asyncio.Lock()
        self._nc: NatsClient | None = None
        self._media: ObjectStore | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def start(self, nc: NatsClient) -> None:
        """Load the saved state, open the media bucket and start the timers; before the
        subscribers start."""
        self.state.load_into(self.world)
        self._nc = nc
        self._media = await media_bucket(nc, self._subjects.sim_media_bucket)
        self._ticker = asyncio.create_task(self._tick_loop(), name="wa-sim-timers")

    async def upload(self, file: sim.InboundFile) -> sim.SimMedia:
        """A contact's file onto the media servers (or, given by `object`, found there)."""
        assert self._media is not None, "start() first"
        if file.base64 is not None:
            try:
                data = decode_base64(file.base64)
            except ValueError as exc:
                raise invalid(f"media.base64: not valid base64 ({exc})") from None
            path = secrets.token_hex(16)
            await self._media.put(path, data)
            size, sha256 = len(data), hashlib.sha256(data).hexdigest()
        else:
            assert file.object is not None  # InboundFile guarantees one of the two
            path = file.object
            try:
                info = await self._media.get_info(path)
            except NotFoundError:
                raise invalid(f"media.object: no object {path!r} in {self._subjects.sim_media_bucket}") from None
            size = info.size or 0
            sha256 = object_sha256(info)
        if size == 0:
            raise invalid("media: the file is empty")
        return sim.SimMedia(
            direct_path=path,
            mime=file.mime,
            size=size,
            sha256=sha256,
            filename=file.filename,
            seconds=file.seconds,
            width=file.width,
            height=file.height,
        )

    async def stop_timers(self) -> None:
        if self._ticker is not None:
            await cancel_and_wait(self._ticker)
            self._ticker = None

    def save(self) -> None:
        self.state.save(self.world, self._clock())

    def check_fits(self, reply: Ok[Any]) -> Ok[Any]:
        """A reply too big for NATS would never arrive; say so instead of leaving the caller waiting."""
        assert self._nc is not None, "start() first"
        size = len(encode(reply))
        if size > self._nc.max_payload:
            raise invalid(
                f"the answer would be {size} bytes, more than NATS carries ({self._nc.max_payload}); "
                'ask with "refs": false, or for one "session_id"'
            )
        return reply

    @contextlib.asynccontextmanager
    async def step(self) -> AsyncIterator[float]:
        """One world operation at `now`; its frames are published before the lock is released."""
        async with self._lock:
            try:
                yield self._clock()
            finally:
                await self._publish()

    async def _publish(self) -> None:
        assert self._nc is not None, "start() first"
        for out in self.world.take_outbox():
            await self._nc.publish(self._subjects.sim_conn(out.conn_id), encode(out.frame))

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                async with self.step() as now:
                    self.world.tick(now)
                    self.state.save_if_changed(self.world, now)
            except Exception:
                log.exception("simulator timers failed; continuing")


async def media_bucket(nc: NatsClient, name: str) -> ObjectStore:
    """The media servers' bucket, created on first use (by whichever simulator is first)."""
    js = nc.jetstream()
    try:
        return await js.object_store(name)
    except NotFoundError:
        config = ObjectStoreConfig(
            bucket=name, description="Simulated WhatsApp media servers", ttl=MEDIA_TTL, storage=StorageType.FILE
        )
        with contextlib.suppress(BadRequestError):  # created concurrently
            await js.create_object_store(name, config)
        return await js.object_store(name)


def build_router(simulator: Simulator, settings: Settings) -> NatsRouter:
    s = settings.subjects
    world = simulator.world
    router = request_router()

    # -- wire: the clients' side ------------------------------------------------------
    @router.subscriber(s.sim_wire("connect"), decoder=strict(sim.ConnectRequest))
    async def wire_connect(req: sim.ConnectRequest) -> Ok[Empty]:
        async with simulator.step() as now:
            world.connect(req.conn_id, req.session_id, req.device, now)
        return DONE

    @router.subscriber(s.sim_wire("pair_phone"), decoder=strict(sim.PairPhoneRequest))
    async def wire_pair_phone(req: sim.PairPhoneRequest) -> Ok[sim.PairPhoneReply]:
        async with simulator.step() as now:
            code = world.pair_phone(req.conn_id, req.phone, now)
        return Ok(data=sim.PairPhoneReply(code))

    @router.subscriber(s.sim_wire("send"), decoder=strict(sim.SendRequest))
    async def wire_send(req: sim.SendRequest) -> Ok[sim.SendReply]:
        async with simulator.step() as now:
            return Ok(data=world.send(req, now))

    @router.subscriber(s.sim_wire("send_media"), decoder=strict(sim.SendMediaRequest))
    async def wire_send_media(req: sim.SendMediaRequest) -> Ok[sim.SendReply]:
        async with simulator.step() as now:
            return Ok(data=world.send_media(req, now))

    @router.subscriber(s.sim_wire("mark_read"), decoder=strict(sim.MarkReadRequest))
    async def wire_mark_read(req: sim.MarkReadRequest) -> Ok[Empty]:
        async with simulator.step() as now:
            world.mark_read(req, now)
        return DONE

    @router.subscriber(s.sim_wire("download"), decoder=strict(sim.DownloadRequest))
    async def wire_download(req: sim.DownloadRequest) -> Ok[Empty]:
        async with simulator.step() as now:
            world.download(req.conn_id, now)
        return DONE

    @router.subscriber(s.sim_wire("presence"), decoder=strict(sim.PresenceRequest))
    async def wire_presence(req: sim.PresenceRequest) -> Ok[Empty]:
        async with simulator.step() as now:
            world.presence(req.conn_id, req.to, now)
        return DONE

    @router.subscriber(s.sim_wire("ack"), decoder=strict(sim.AckRequest))
    async def wire_ack(req: sim.AckRequest) -> Ok[Empty]:
        async with simulator.step() as now:
            world.ack(req.conn_id, req.message_ids, now)
        return DONE

    @router.subscriber(s.sim_wire("keepalive"), decoder=strict(sim.KeepaliveRequest))
    async def wire_keepalive(req: sim.KeepaliveRequest) -> Ok[sim.KeepaliveReply]:
        async with simulator.step() as now:
            return Ok(data=sim.KeepaliveReply(world.keepalive(req.conn_ids, now)))

    @router.subscriber(s.sim_wire("disconnect"), decoder=strict(sim.DisconnectRequest))
    async def wire_disconnect(req: sim.DisconnectRequest) -> Ok[Empty]:
        async with simulator.step():
            world.disconnect(req.conn_id)
        return DONE

    @router.subscriber(s.sim_wire("logout"), decoder=strict(sim.LogoutRequest))
    async def wire_logout(req: sim.LogoutRequest) -> Ok[Empty]:
        async with simulator.step() as now:
            world.logout(req.device, now)
        return DONE

    # -- control: the phone's side ----------------------------------------------------
    @router.subscriber(s.sim("{sid}", "scan"), decoder=strict(Empty))
    async def sim_scan(req: Empty, sid: str = Path()) -> Ok[sim.ScanReply]:
        async with simulator.step() as now:
            jid = world.scan(sid, now)
        log.info("paired", session=sid, jid=jid)
        return Ok(data=sim.ScanReply(jid))

    @router.subscriber(s.sim("{sid}", "inbound"), decoder=strict(sim.InboundRequest))
    async def sim_inbound(req: sim.InboundRequest, sid: str = Path()) -> Ok[sim.InboundReply]:
        inbound_type(req)  # a request that says nothing clear uploads nothing
        media = None if req.media is None else await simulator.upload(req.media)
        async with simulator.step() as now:
            return Ok(data=sim.InboundReply(world.inbound(sid, req, media, now)))

    @router.subscriber(s.sim("{sid}", "read"), decoder=strict(sim.ReadRequest))
    async def sim_read(req: sim.ReadRequest, sid: str = Path()) -> Ok[sim.ReadReply]:
        async with simulator.step() as now:
            world.read(sid, req.message_id, now)
        return Ok(data=sim.ReadReply(req.message_id))

    @router.subscriber(s.sim("{sid}", "unlink"), decoder=strict(Empty))
    async def sim_unlink(req: Empty, sid: str = Path()) -> Ok[sim.ConnectionReply]:
        async with simulator.step() as now:
            closed = world.unlink(sid, now)
        log.info("unlinked", session=sid, closed=closed)
        return Ok(data=sim.ConnectionReply(closed))

    @router.subscriber(s.sim("{sid}", "drop"), decoder=strict(Empty))
    async def sim_drop(req: Empty, sid: str = Path()) -> Ok[sim.ConnectionReply]:
        async with simulator.step() as now:
            closed = world.drop(sid, now)
        log.info("dropped", session=sid, closed=closed)
        return Ok(data=sim.ConnectionReply(closed))

    @router.subscriber(s.sim("{sid}", "ban"), decoder=strict(sim.BanRequest))
    async def sim_ban(req: sim.BanRequest, sid: str = Path()) -> Ok[sim.ConnectionReply]:
        async with simulator.step() as now:
            closed = world.ban(sid, req.seconds, now)
        log.info("banned", session=sid, seconds=req.seconds, closed=closed)
        return Ok(data=sim.ConnectionReply(closed))

    @router.subscriber(s.sim("{sid}", "faults"), decoder=strict(sim.FaultsRequest))
    async def sim_faults(req: sim.FaultsRequest, sid: str = Path()) -> Ok[Empty]:
        async with simulator.step():
            world.faults(sid, req.send_errors, req.download_errors)
        return DONE

    @router.subscriber(s.sim_stats, decoder=strict(sim.StatsRequest))
    async def sim_stats(req: sim.StatsRequest) -> Ok[sim.SimStats]:
        return simulator.check_fits(Ok(data=world.stats(req.session_id, req.refs)))

    return router


def build(settings: Settings) -> tuple[NatsBroker, Simulator]:
    simulator = Simulator(settings)
    broker = make_broker(settings, "wa-sim")
    broker.include_router(build_router(simulator, settings))
    return broker, simulator


async def serve(settings: Settings) -> None:
    await wait_for_servers(settings, mongo=False)
    broker, simulator = build(settings)
    app = FastStream(broker)
    serve_metrics(settings, "wa-sim")  # process metrics only: the simulator is no production part

    @app.on_startup
    async def start() -> None:
        await simulator.start(await broker.connect())

    @app.on_shutdown
    async def stop_timers() -> None:
        await simulator.stop_timers()

    @app.after_shutdown
    def save_state() -> None:
        # After the broker drained: the last requests are in the file too.
        simulator.save()

    await app.run()


def main() -> None:
    settings = Settings()
    logs.setup("wa-sim", settings.log_level, settings.log_format)
    exit_with_supervisor(settings)
    asyncio.run(serve(settings))
