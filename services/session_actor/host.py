"""What a session actor uses of the node that runs it, and nothing more.

The node builds one ActorHost per incarnation (its identity changes when it rejoins after
losing its lease) and hands it to every actor it starts; tests build one from fakes. The
protocols name exactly the calls an actor makes of each collaborator.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from contracts.events import Event
from services.credentials.vault import Restored
from services.session_actor.adapters.base import ClientFactory
from services.session_actor.commands import CommandHandler, Unlisten
from services.session_actor.inbound import InboundKit
from services.session_actor.machine import ReconnectPolicy
from services.session_actor.outbound import SendingKit
from services.session_actor.pair_limit import PairLimit


class SessionRecords(Protocol):
    """The session's document (services/common/sessions.py), written only under the fence."""

    async def fence(self, sid: str, token: str) -> None: ...

    async def get(self, sid: str) -> dict[str, Any] | None: ...

    async def report(
        self,
        sid: str,
        token: str,
        *,
        state: str,
        since: datetime,
        reason: str | None,
        jid: str | None,
        node: str | None,
        pairing_phone: str | None = None,
    ) -> bool: ...


class CredentialRecords(Protocol):
    """The session's credential versions (services/credentials/vault.py)."""

    async def fence(self, sid: str, token: str) -> None: ...

    async def restore(self, sid: str) -> Restored | None: ...

    async def save(self, sid: str, token: str, store: bytes, last: Restored | None = None) -> Restored | None: ...

    async def destroy(self, sid: str, token: str | None = None) -> bool: ...


class EventSink(Protocol):
    async def publish(self, event: Event) -> None: ...


class StoreFolder(Protocol):
    """Where the client's SQLite store lives while the actor runs (store_files.py)."""

    def path(self, sid: str) -> Path: ...

    def write(self, sid: str, data: bytes) -> None: ...

    def remove(self, sid: str) -> None: ...


class CommandSource(Protocol):
    """Requests addressed to this session's actor (commands.py)."""

    async def listen(self, sid: str, handle: CommandHandler) -> Unlisten: ...


@dataclass(frozen=True)
class ActorHost:
    node_id: str
    # The node still holds its lease (checked before anything leaves the process).
    may_act: Callable[[], bool]
    # The node's view says (sid, revision) is still this node's claim.
    still_owner: Callable[[str, int], bool]
    # Waits for the node's next connection slot: restores of many sessions are staggered.
    connect_slot: Callable[[], Awaitable[None]]
    # Work that outlives the command that started it (a pair code's wait), stopped with the node.
    spawn: Callable[[Coroutine[Any, Any, Any], str], Any]
    sessions: SessionRecords
    vault: CredentialRecords
    events: EventSink
    clients: ClientFactory
    stores: StoreFolder
    commands: CommandSource
    reconnect_policy: ReconnectPolicy
    sending: SendingKit
    inbound: InboundKit
    pair_limit: PairLimit = field(default_factory=PairLimit)
