"""MongoDB for the commands that use the admin libraries (credentials, API keys): one
connection per command, its failures turned into wactl's message and exit status."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from services.common import mongo
from services.common.config import Settings
from services.wactl.exits import EXIT_UNREACHABLE, Failure
from services.wactl.gateway import redact


@asynccontextmanager
async def mongo_db(settings: Settings) -> AsyncIterator[AsyncDatabase]:
    """The database for one command; a MongoDB error in it ends the command (unreachable)."""
    client, db = mongo.connect(settings, "wactl")
    try:
        yield db
    except PyMongoError as exc:
        message = str(exc).split(", Timeout:")[0]  # then the timeout and a dump of the topology
        raise Failure(f"MongoDB at {redact(settings.mongo_url)}: {message}", EXIT_UNREACHABLE) from None
    finally:
        await client.close()
