"""Every HTTP call as a request of the NATS contract: the request goes out as the client
sent it (the services decode it strictly), the reply's `data` comes back byte for byte,
an error reply becomes its HTTP status (statuses.py) with the same `{"ok": false,
"error": {"code", "message"}}`. Nothing about sessions is decided here."""

from __future__ import annotations

from typing import Any

import msgspec
import nats.errors
from fastapi import Response
from nats.aio.client import Client as NatsClient

from contracts.envelope import TEMPORARILY_UNAVAILABLE, ContractError, Err, ErrorBody, decode
from services.common.bus import encode
from services.common.media import size_text
from services.http_gateway.statuses import BODY_TOO_LARGE, MALFORMED_BODY, NO_ANSWER, RETRY_AFTER, http_status

JSON = "application/json"
# Long enough for a pairing by code (WhatsApp hands out the code) on a session between
# owners (the session API waits for its next owner).
REQUEST_TIMEOUT = 45.0


class ApiError(Exception):
    """An answer the edge gives itself, in the contract's error shape."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class _Reply(msgspec.Struct):
    ok: bool
    data: msgspec.Raw = msgspec.Raw(b"null")
    error: ErrorBody | None = None


_reply = msgspec.json.Decoder(_Reply)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    extra = {"retry-after": str(RETRY_AFTER[status])} if status in RETRY_AFTER else {}
    return Response(encode(Err(error=ErrorBody(code, message))), status, {**extra, **(headers or {})}, JSON)


def json_object(body: bytes) -> bytes:
    """The body, if it is a JSON object; else 400 with the contract's message."""
    try:
        decode(body, dict)
    except ContractError as exc:
        raise ApiError(MALFORMED_BODY, exc.code, exc.message) from None
    return body


class Bridge:
    def __init__(self, nc: NatsClient | None) -> None:
        self._nc = nc

    async def call(self, subject: str, body: Any, status: int = 200, timeout: float = REQUEST_TIMEOUT) -> Response:
        """Ask `subject` (`body`: bytes as received, or a value to encode); the answer as HTTP."""
        assert self._nc is not None, "the bridge is only described, not connected"
        payload = body if isinstance(body, bytes) else encode(body)
        if len(payload) > self._nc.max_payload:
            raise ApiError(
                BODY_TOO_LARGE,
                "invalid_request",
                f"body: {size_text(len(payload))}, more than the {size_text(self._nc.max_payload)} a request "
                "may take; send media by url",
            )
        try:
            msg = await self._nc.request(subject, payload, timeout=timeout)
        except nats.errors.NoRespondersError:
            raise ApiError(503, TEMPORARILY_UNAVAILABLE, f"no service answers {subject} right now; retry later") from None
        except (nats.errors.TimeoutError, TimeoutError):
            raise ApiError(NO_ANSWER, TEMPORARILY_UNAVAILABLE, f"no answer from {subject} within {timeout:g} s") from None
        reply = _reply.decode(msg.data)
        if reply.ok:
            return Response(bytes(reply.data), status, media_type=JSON)
        assert reply.error is not None
        return error_response(http_status(reply.error.code), reply.error.code, reply.error.message)
