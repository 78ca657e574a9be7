"""The HTTP status of each contract error code: plain code, no I/O.

Every HTTP call is a request of the NATS contract; its error reply becomes this status with
the same `{"error": {"code", "message"}}`. The edge itself answers 400 for a body that is
not a JSON object, 401 for a missing or unknown API key, 413 for a body larger than a NATS
message, and 503 / 504 when no service answers the request.
"""

from __future__ import annotations

STATUS_OF_CODE: dict[str, int] = {
    "invalid_request": 422,  # the body or a parameter breaks the contract's rules
    "not_found": 404,
    "conflict": 409,  # exists already, or a state that forbids the request
    "session_unavailable": 409,  # logged out, deleted, banned, or between owners for too long
    "rate_limited": 429,
    "unauthorized": 403,  # the key is good, the contract refused the request (401 is the key's)
    "temporarily_unavailable": 503,  # retry: a send retried with its id is never sent twice
    "internal": 500,
}
# Codes a later contract version may add are served as errors of the server.
UNKNOWN_CODE_STATUS = 500
# Answers the edge gives itself, with the contract's codes.
MALFORMED_BODY = 400
BODY_TOO_LARGE = 413
NO_ANSWER = 504
# Statuses whose answers tell the client to come back: how long, in seconds.
RETRY_AFTER: dict[int, int] = {429: 5, 503: 2}


def http_status(code: str) -> int:
    return STATUS_OF_CODE.get(code, UNKNOWN_CODE_STATUS)
