"""What a moved session costs the MongoDB-compatible dev server, through the real stores.

A graceful handoff of one session writes, at the database: the old owner's `disconnected`
status, the new owner's session and credential fences, its `connecting` and `connected`
statuses (5 updates, grouped into bulk writes by `GroupCommit`), two grouped reads, and the
persistence service's 3 status-history inserts. This benchmark runs exactly those calls
(`SessionStore`, `EventWriter`) for `sessions` sessions at once against a fresh SecantusDB,
and reports the rates and the database time one handoff of `sessions` needs at the least,
before any other work on the machine competes for its cores.

Run: `python -m bench devdb [--sessions 334]` (334 = one node's share of 1,000 on 3 nodes).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.results import Report, host_speed_ms
from contracts.events import StatusEvent
from services.common import mongo
from services.common.bus import new_id
from services.common.cluster import fence_token
from services.common.config import Settings
from services.common.logs import setup
from services.common.sessions import SessionStore
from services.devstack.servers import free_port, start_mongo
from services.persistence.writer import EventWriter

UPDATES_PER_MOVE = 5
INSERTS_PER_MOVE = 3
READS_PER_MOVE = 2


async def timed(work: list) -> float:
    started = time.perf_counter()
    await asyncio.gather(*work)
    return time.perf_counter() - started


async def run(sessions: int = 334) -> Report:
    setup("bench", "WARNING")
    report = Report("devdb")
    print(f"dev database benchmark: {sessions} sessions at once; host speed {host_speed_ms()} ms", flush=True)
    with tempfile.TemporaryDirectory(prefix="wa-bench-devdb-") as tmp:
        server = start_mongo(Path(tmp) / "mongo", free_port())
        settings = Settings(mongo_url=server.url, mongo_db="bench_devdb")
        client, db = mongo.connect(settings, "bench-devdb")
        try:
            store = SessionStore(db)
            await store.ensure_indexes()
            writer = EventWriter(db, settings.outbound_retention_days)
            await writer.ensure_indexes()
            sids = [f"d{i:04d}" for i in range(sessions)]
            now = datetime.now(UTC)
            for sid in sids:
                await store.create(sid, "", now)
            token = fence_token(1, 1)

            def reports(state: str) -> list:
                return [
                    store.report(sid, token, state=state, since=now, reason=None, jid=None, node="bench")
                    for sid in sids
                ]

            updates = await timed([store.fence(sid, token) for sid in sids])
            updates += await timed(reports("connecting"))
            updates += await timed(reports("connected"))
            reads = await timed([store.get(sid) for sid in sids])
            events = [
                StatusEvent(event_id=new_id(), session_id=sid, at=now, state=state)
                for state in ("disconnected", "connecting", "connected")
                for sid in sids
            ]
            started = time.perf_counter()
            await writer.write(events)
            inserts = time.perf_counter() - started

            update_rate = 3 * sessions / updates
            insert_rate = len(events) / inserts
            read_rate = sessions / reads
            floor = sessions * (
                UPDATES_PER_MOVE / update_rate + INSERTS_PER_MOVE / insert_rate + READS_PER_MOVE / read_rate
            )
            report.add(
                sessions=sessions,
                grouped_updates_per_s=round(update_rate),
                history_inserts_per_s=round(insert_rate),
                grouped_reads_per_s=round(read_rate),
                db_seconds_per_handoff=round(floor, 2),
            )
        finally:
            await client.close()
            server.stop()
    print(f"results: {report.save()}")
    return report
