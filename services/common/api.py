"""Request-reply plumbing: strict decoding and the v1 error envelope for FastStream handlers.

Handlers take the decoded request Struct and return `Ok(data=...)`. A `ContractError` raised
anywhere (by the decoder or the handler) becomes `{"ok": false, "error": ...}`; an unexpected
exception becomes `internal` and is logged. A request without a reply subject has nobody to
answer: its failure goes to `on_unanswered` (sends report it as an event).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import nats.errors
import structlog
from faststream import BaseMiddleware
from faststream._internal.constants import PATH_CONTEXT_PREFIX
from faststream._internal.context import Context as FastStreamContext
from faststream.message import StreamMessage
from faststream.nats import NatsRouter
from nats.aio.msg import Msg
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError
from pymongo.errors import ConnectionFailure, NetworkTimeout

from contracts.envelope import TEMPORARILY_UNAVAILABLE, ContractError, Err, Ok, decode
from services.common.bus import encode

log = structlog.get_logger(__name__)

UnansweredHook = Callable[[StreamMessage[Any], ContractError], Awaitable[None]]


# Failures that say a server is away for now (a NATS or JetStream outage, a leader election
# on a NATS cluster, MongoDB failing over), not that the request is wrong.
_NATS_AWAY = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    ServiceUnavailableError,
    NoStreamResponseError,  # a publish while the stream has no leader (elections, a server down)
)
_MONGO_AWAY = (ConnectionFailure, NetworkTimeout)


def as_contract_error(exc: Exception, subject: str) -> ContractError:
    """What a failed request answers: its ContractError; `temporarily_unavailable` when a
    server is away (the client retries; a send retried with its `id` is never sent twice);
    `internal` (logged) for anything unexpected."""
    if isinstance(exc, ContractError):
        return exc
    away = "NATS JetStream" if isinstance(exc, _NATS_AWAY) else "MongoDB" if isinstance(exc, _MONGO_AWAY) else None
    if away is not None:
        log.warning("request failed: a server is away", subject=subject, server=away, error=repr(exc))
        return ContractError(
            TEMPORARILY_UNAVAILABLE,
            f"{away} is not available right now; retry later (a send retried with the same id is never sent twice)",
        )
    log.error("request failed", subject=subject, exc_info=exc)
    return ContractError("internal", "internal error; the request was not completed")


async def answer(msg: Msg, produce: Callable[[], Awaitable[Any]]) -> None:
    """Answer a plain NATS request (outside FastStream) with the v1 envelope, whatever happens."""
    try:
        reply: Ok[Any] | Err = Ok(data=await produce())
    except Exception as exc:
        reply = as_contract_error(exc, msg.subject).reply()
    if msg.reply:
        await msg.respond(encode(reply))


class _PathOnTheLoop(FastStreamContext):
    """FastStream's `Path()`, resolved on the event loop.

    Trap: fast_depends runs a custom field's synchronous `use` in a worker thread, with an
    anyio task group, for every message: about an eighth of the outbound-queue's CPU went to
    handing `sid` over from a thread. A coroutine `use` is awaited in place.
    """

    async def use(self, /, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return super().use(**kwargs)


def Path() -> Any:
    """A subject token of the subscriber's pattern (`{sid}`), as a handler argument."""
    return _PathOnTheLoop(prefix=PATH_CONTEXT_PREFIX, cast=True)


def strict(type_: type) -> Callable[[StreamMessage[Any]], Awaitable[Any]]:
    """A FastStream decoder that decodes the body strictly into `type_` (see contracts.envelope)."""

    async def decoder(msg: StreamMessage[Any]) -> Any:
        return decode(msg.body, type_)

    return decoder


class EnvelopeMiddleware(BaseMiddleware):
    def __init__(self, msg: Any, /, *, context: Any, on_unanswered: UnansweredHook | None = None) -> None:
        super().__init__(msg, context=context)
        self._on_unanswered = on_unanswered

    async def consume_scope(self, call_next: Callable[..., Awaitable[Any]], msg: StreamMessage[Any]) -> Any:
        try:
            return await call_next(msg)
        except Exception as exc:
            error = as_contract_error(exc, msg.raw_message.subject)
        if not msg.reply_to and self._on_unanswered is not None:
            await self._on_unanswered(msg, error)
        return error.reply()


def request_router(on_unanswered: UnansweredHook | None = None) -> NatsRouter:
    """A router whose subscribers answer with the v1 envelope."""
    return NatsRouter(middlewares=[partial(EnvelopeMiddleware, on_unanswered=on_unanswered)])
