from services.common.bus import ensure_topology


async def test_servers_answer(nc, db, settings):
    js = nc.jetstream()
    await ensure_topology(js, settings)  # twice: idempotent
    info = await js.stream_info(settings.subjects.events_stream)
    assert info.config.subjects == [settings.subjects.events_all, settings.subjects.webhook_alerts_all]
    await db["probe"].insert_one({"_id": 1})
    assert await db["probe"].find_one({"_id": 1}) == {"_id": 1}
