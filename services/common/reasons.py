"""What kind of reason a status carries: a small, fixed vocabulary over free text.

Status reasons are sentences for people ("connect failed 500 (bad gateway); retry in
3.2s"). Metrics and alerts need the kind of it instead: a label with a handful of values,
not one series per sentence. Reasons that name their kind start with it
("logged_out: ...", "temporary_ban: ..."); the others are recognised by how the session
actor words them (tests/test_reasons.py drives the state machine through each path and
checks that none of its reasons falls through to `other`).
"""

from __future__ import annotations

import re

# The reason of a logout the user asked for: no alert (nobody has to act on it).
LOGOUT_REQUESTED = "logged_out: by request"

# Reasons that start with their kind and a colon.
TAGGED = frozenset(
    {
        "logged_out",
        "temporary_ban",
        "client_outdated",
        "stream_replaced",
        "pairing_timeout",
        "flapping",
        "credentials_unusable",
        "owner_lost",
    }
)

# Untagged reasons, by how they begin; first match wins.
_BEGINNINGS = (
    ("credentials restored from version", "credentials_fallback"),
    ("keepalive", "keepalive"),
    ("connect failed", "connect_failed"),
    ("ban expired", "ban_expired"),
    ("reconnect requested", "reconnect_requested"),
    ("pairing resumed", "pairing_resumed"),
    # A node handing the session to another (its graceful stop, or rebalancing).
    ("shutdown", "handoff"),
    ("rebalancing", "handoff"),
)
# Whatever else is followed by a scheduled retry is a connection that dropped (its text
# comes from the WhatsApp library).
_RETRY = "; retry in "

KINDS = frozenset({"none", "connection_lost", "other", *TAGGED, *(kind for _, kind in _BEGINNINGS)})

_TAG = re.compile(r"^([a-z_]+):")


def reason_kind(reason: str | None) -> str:
    """One of KINDS."""
    if not reason:
        return "none"
    tagged = _TAG.match(reason)
    if tagged and tagged.group(1) in TAGGED:
        return tagged.group(1)
    for beginning, kind in _BEGINNINGS:
        if reason.startswith(beginning):
            return kind
    return "connection_lost" if _RETRY in reason else "other"
