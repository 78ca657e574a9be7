"""One session actor: the only code in the cluster that drives this session's connection.

Everything that happens to the session (client events, timers, user commands) goes through
one inbox and one task, so the state machine sees one input at a time. The actor carries
out the machine's effects and checks, before anything leaves the process, that its node
still holds the lease; every shared write is fenced by the actor's token besides. Two
helpers run beside the inbox: the send executor (outbound.py) and the inbound pipeline
(inbound.py), which fetches files and publishes inbound messages in order.

One job in one file, a little over 500 lines: the inbox, the effects it carries out and the
commands it answers all touch the same per-session state, and read best together.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import structlog

from contracts.envelope import ContractError, conflict, decode, rate_limited, unavailable
from contracts.events import StatusEvent
from contracts.queue import SendPolicy
from contracts.sessions import MarkedRead, MarkRead, PairByCode, PairRequest, PairStarted
from contracts.types import to_jid, utcnow
from services.common.alerts import status_alert
from services.common.bus import new_id
from services.common.reasons import reason_kind
from services.credentials.vault import Restored, VaultError
from services.session_actor import machine as m
from services.session_actor import metrics
from services.session_actor.adapters.base import (
    ClientEvent,
    InboundMessage,
    OfflineSyncCompleted,
    Receipt,
    SendError,
    StoreChanged,
    Undecryptable,
    WhatsAppClient,
)
from services.session_actor.authors import RecentAuthors
from services.session_actor.commands import MOVING, Unlisten
from services.session_actor.host import ActorHost
from services.session_actor.inbound import InboundPipeline
from services.session_actor.outbound import SendExecutor
from services.session_actor.pair_limit import PairWindow

log = structlog.get_logger(__name__)

# A burst of store writes (key rotation, message sessions) becomes one snapshot.
SNAPSHOT_DEBOUNCE = 2.0
PAIR_CODE_TIMEOUT = 30.0
CREDENTIALS_UNUSABLE = "credentials_unusable"


@dataclass
class Command:
    op: str
    body: Any
    done: asyncio.Future[Any]


class _Stop:
    def __init__(self, graceful: bool, reason: str) -> None:
        self.graceful = graceful
        self.reason = reason


class SessionActor:
    """The actor of session `sid` under the claim that produced `revision` of its ownership
    entry (fencing token `token`). The node runs `run()` as a task of its own."""

    def __init__(self, host: ActorHost, sid: str, revision: int, token: str) -> None:
        self.host = host
        self.sid = sid
        self.revision = revision
        self.token = token
        self.log = log.bind(session=sid, token=token)
        self.machine = m.ConnectionMachine(host.reconnect_policy, random.Random())
        self.client: WhatsAppClient | None = None
        self.restored: Restored | None = None
        self.state = "created"
        self.reason: str | None = None
        # The reason of the last `disconnected` report: flapping alerts once when it starts.
        self._last_drop: str | None = None
        self.since: datetime = utcnow()
        self.connected = asyncio.Event()
        self.finished = asyncio.Event()
        # Why this node cannot run the session (its keys cannot open the credentials), if so.
        self.unusable: str | None = None
        authors = RecentAuthors()
        self.sender = SendExecutor(
            host.sending,
            sid=sid,
            token=token,
            node_id=host.node_id,
            client=lambda: self.client,
            connected=self.connected,
            may_act=host.may_act,
            authors=authors,
            alert=host.events.publish,
        )
        self.inbound = InboundPipeline(
            host.inbound, sid=sid, publish=host.events.publish, may_act=self._may_act, authors=authors
        )
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._snapshot_timer: asyncio.TimerHandle | None = None
        self._pair_code: asyncio.Future[str] | None = None
        self._pair_window = PairWindow(host.pair_limit)
        self._unlisten: Unlisten | None = None
        self._leaving = False  # a stop is requested: new commands are answered MOVING at once
        self._stopping = False
        self._commands: dict[str, Callable[[bytes], Awaitable[Any]]] = {
            "pair": self._cmd_pair,
            "policy": self._cmd_policy,
            "logout": self._cmd_logout,
            "reconnect": self._cmd_reconnect,
            "delete": self._cmd_delete,
            "read": self._cmd_read,
        }

    # -- lifecycle (called by the node) -------------------------------------------------
    def stop(self, reason: str) -> None:
        """Graceful stop: flush credentials, close, report; the node then releases ownership."""
        self._leaving = True
        self._inbox.put_nowait(_Stop(graceful=True, reason=reason))

    def abort(self) -> None:
        """Stop at once without touching shared state: this node no longer owns the session."""
        self._leaving = True
        self._inbox.put_nowait(_Stop(graceful=False, reason="ownership lost"))

    async def command(self, op: str, body: bytes) -> Any:
        if self._leaving:
            # Answered now, not once the stop is over (a graceful stop flushes credentials and
            # closes the connection first): the caller asks the next owner meanwhile.
            raise ContractError(MOVING, "session is moving to another node")
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(Command(op, body, done))
        return await done

    def emit(self, event: ClientEvent) -> None:
        """Adapter callback; may be called from the loop's thread only."""
        self._inbox.put_nowait(event)

    @property
    def live(self) -> bool:
        return not self.finished.is_set()

    # -- the loop -----------------------------------------------------------------------
    async def run(self) -> None:
        """The actor's life: boot, then one inbox item at a time until a stop."""
        try:
            if await self._boot():
                while True:
                    item = await self._inbox.get()
                    if isinstance(item, _Stop):
                        await self._finish(item)
                        return
                    await self._dispatch(item)
        except Exception:
            self.log.exception("actor crashed; aborting")
            await self._finish(_Stop(graceful=False, reason="actor crashed"))
        finally:
            self.finished.set()

    async def _boot(self) -> bool:
        host = self.host
        # Credentials are read only after the fence (a stale owner's later write is refused,
        # an earlier one is seen); the session document may be read alongside it.
        _, _, doc = await asyncio.gather(
            host.sessions.fence(self.sid, self.token),
            host.vault.fence(self.sid, self.token),
            host.sessions.get(self.sid),
        )
        if doc is None:
            return False
        self.state, self.since = doc["state"], doc["since"]
        self.sender.apply(msgspec.convert(doc.get("policy") or {}, SendPolicy))
        self._unlisten = await host.commands.listen(self.sid, self.command)
        fallback_note: str | None = None
        started = time.monotonic()
        try:
            self.restored = await host.vault.restore(self.sid)
        except VaultError as exc:
            metrics.VAULT_RESTORES.labels("unusable").inc()
            # Another node's keys may open them: the node hands the session back (`unusable`).
            self.log.error("credentials unusable: handing the session back", error=str(exc))
            self.unusable = f"{CREDENTIALS_UNUSABLE}: {exc}"
            await self._report(m.Report("stopped", reason=self.unusable))
            await self._finish(_Stop(graceful=False, reason=self.unusable))
            return False
        metrics.VAULT_RESTORE_SECONDS.observe(time.monotonic() - started)
        metrics.VAULT_RESTORES.labels(_restore_outcome(self.restored)).inc()
        if self.restored is not None:
            host.stores.write(self.sid, self.restored.store)
            if self.restored.skipped:
                fallback_note = "; ".join(f"version {v} skipped ({why})" for v, why in self.restored.skipped)
                fallback_note = f"credentials restored from version {self.restored.version}: {fallback_note}"
        self.client = self._new_client()
        self.sender.start()
        start = m.Start(
            time.monotonic(),
            self.restored is not None,
            previous_state=doc["state"],
            pairing_for=(utcnow() - self.since).total_seconds() if self.state == "pairing" else None,
            pairing_phone=doc.get("pairing_phone"),
        )
        effects = self.machine.handle(start)
        if fallback_note:
            effects = [
                m.Report("connecting", reason=fallback_note) if isinstance(e, m.Report) else e for e in effects
            ]
        await self._apply(effects)
        return True

    async def _dispatch(self, item: Any) -> None:
        if isinstance(item, Command):
            await self._handle_command(item)
        elif isinstance(item, InboundMessage):
            self.inbound.add(item)
        elif isinstance(item, Receipt):
            try:
                await self.sender.receipt(item)
            except Exception as exc:  # an event that could not be published: left un-acked
                self.log.warning("receipt not recorded; WhatsApp delivers it again", error=repr(exc))
                return
            if item.ack is not None:
                await item.ack()
        elif isinstance(item, StoreChanged):
            self._schedule_snapshot(SNAPSHOT_DEBOUNCE)
        elif isinstance(item, Undecryptable | OfflineSyncCompleted):
            self.log.debug("client notice", notice=type(item).__name__, detail=item)
        elif isinstance(item, _Snapshot):
            await self._snapshot()
        else:
            await self._apply(self.machine.handle(item))

    # -- effects ------------------------------------------------------------------------
    async def _apply(self, effects: list[m.Effect]) -> None:
        for effect in effects:
            if self._stopping and not isinstance(effect, m.Disconnect | m.Report | m.SnapshotCredentials):
                continue
            await self._carry_out(effect)

    async def _carry_out(self, effect: m.Effect) -> None:
        client = self.client
        assert client is not None
        match effect:
            case m.Connect():
                await self.host.connect_slot()
                if not self._may_act():
                    return
                await client.connect()
            case m.Disconnect():
                self.connected.clear()
                await client.disconnect()
            case m.Logout():
                with contextlib.suppress(Exception):
                    await client.logout()
            case m.RequestPairCode(phone=phone):
                await self._request_pair_code(client, phone)
            case m.DestroyCredentials():
                await self._destroy_credentials()
            case m.SnapshotCredentials():
                await self._snapshot()
            case m.StartTimer(timer=timer, delay=delay):
                self._cancel_timer(timer)
                self._timers[timer] = asyncio.get_running_loop().call_later(
                    delay, lambda: self._inbox.put_nowait(m.TimerFired(time.monotonic(), timer))
                )
            case m.CancelTimer(timer=timer):
                self._cancel_timer(timer)
            case m.VerifyOwnership():
                still = self.host.still_owner(self.sid, self.revision)
                self._inbox.put_nowait(m.OwnershipChecked(time.monotonic(), still))
            case m.Terminate():
                self.abort()
            case m.Report():
                await self._report(effect)

    async def _report(self, report: m.Report, pair_code: str | None = None) -> None:
        if not self._may_act():
            return
        previous = self.state
        if report.state != self.state:
            self.since = utcnow()
        self.state, self.reason = report.state, report.reason
        if report.state == "connected":
            self.connected.set()
        else:
            self.connected.clear()
        accepted = await self.host.sessions.report(
            self.sid,
            self.token,
            state=report.state,
            since=self.since,
            reason=report.reason,
            jid=report.jid,
            node=self.host.node_id,
            pairing_phone=self.machine.pending_phone,
        )
        if not accepted:
            self.log.warning("status write refused: a newer owner holds the session")
            self.abort()
            return
        if not self._may_act():
            return  # paused after the write: the event would arrive after a newer owner's
        status = StatusEvent(
            event_id=new_id(),
            session_id=self.sid,
            at=utcnow(),
            state=report.state,  # type: ignore[arg-type]
            reason=report.reason,
            node=self.host.node_id,
            jid=report.jid,
            qr=report.qr,
            pair_code=pair_code,
            token=self.token,
        )
        await self.host.events.publish(status)
        await self._tell_operators(status, previous)

    async def _tell_operators(self, status: StatusEvent, previous: str) -> None:
        """A reported status as metrics, and as an alert when someone must act on it."""
        if status.state != previous:
            metrics.STATE_CHANGES.labels(status.state, reason_kind(status.reason)).inc()
            if status.state == "connecting" and previous in ("disconnected", "banned"):
                metrics.RECONNECTS.inc()
        alert = status_alert(
            event_id=status.event_id,
            session_id=self.sid,
            at=status.at,
            state=status.state,
            reason=status.reason,
            previous_drop=self._last_drop,
            node=self.host.node_id,
        )
        if status.state == "disconnected":
            self._last_drop = status.reason
        if alert is not None:
            await self.host.events.publish(alert)

    async def _request_pair_code(self, client: WhatsAppClient, phone: str) -> None:
        try:
            code = await client.pair_phone(phone)
        except Exception as exc:
            self.log.warning("pair code request failed", error=str(exc))
            if self._pair_code and not self._pair_code.done():
                self._pair_code.set_exception(ContractError("internal", f"pairing by code failed: {exc}"))
            return
        if self._pair_code and not self._pair_code.done():
            self._pair_code.set_result(code)
        await self._report(m.Report("pairing"), pair_code=code)

    async def _destroy_credentials(self) -> None:
        self.restored = None
        self._cancel_snapshot()
        if self._may_act():
            await self.host.vault.destroy(self.sid, self.token)
        if self.client is not None:
            await self.client.close()
        self.host.stores.remove(self.sid)
        # A fresh client with an empty store, ready to pair again.
        self.client = self._new_client()

    def _new_client(self) -> WhatsAppClient:
        return self.host.clients.create(self.sid, self.host.stores.path(self.sid), self.emit, time.monotonic)

    def _schedule_snapshot(self, delay: float) -> None:
        if self._snapshot_timer is None and self.machine.has_credentials:
            self._snapshot_timer = asyncio.get_running_loop().call_later(
                delay, lambda: self._inbox.put_nowait(_Snapshot())
            )

    def _cancel_snapshot(self) -> None:
        if self._snapshot_timer is not None:
            self._snapshot_timer.cancel()
            self._snapshot_timer = None

    async def _snapshot(self) -> None:
        self._cancel_snapshot()
        if self.client is None or not self.machine.has_credentials or not self._may_act():
            return
        started = time.monotonic()
        try:
            store = await self.client.snapshot()
        except FileNotFoundError:
            return
        saved = await self.host.vault.save(self.sid, self.token, store, last=self.restored)
        if saved is None:
            metrics.VAULT_SAVES.labels("refused").inc()
            self.log.warning("credential write refused: a newer owner holds the session")
            self.abort()
            return
        if saved is self.restored:
            metrics.VAULT_SAVES.labels("unchanged").inc()
        else:
            metrics.VAULT_SAVES.labels("saved").inc()
            metrics.VAULT_SAVE_SECONDS.observe(time.monotonic() - started)
            metrics.STORE_BYTES.observe(len(store))
            self.log.info("credentials saved", version=saved.version, bytes=len(store))
        self.restored = saved

    # -- commands -------------------------------------------------------------------------
    async def _handle_command(self, cmd: Command) -> None:
        handler = self._commands.get(cmd.op)
        if handler is None:
            cmd.done.set_exception(ContractError("not_found", f"unknown session operation {cmd.op!r}"))
            return
        try:
            result = await handler(cmd.body)
        except Exception as exc:
            if not cmd.done.done():
                cmd.done.set_exception(exc)
            return
        if isinstance(result, asyncio.Future):
            # Answered later (a pair code arrives after the first QR), without blocking the inbox.
            _chain(result, cmd.done)
        elif not cmd.done.done():
            cmd.done.set_result(result)

    async def _cmd_pair(self, body: bytes) -> Any:
        request = decode(body, PairRequest)
        if self.machine.has_credentials:
            raise conflict("session is already linked; log out first to pair again")
        phone = request.phone if isinstance(request, PairByCode) else None
        if self.machine.phase == "pairing" and phone is None:
            return PairStarted(state="pairing")
        wait = self._pair_window.admit(time.monotonic())
        if wait:
            raise rate_limited(f"too many pair requests for this session; retry in {math.ceil(wait)} s", wait)
        await self._apply(self.machine.handle(m.PairRequested(time.monotonic(), phone)))
        if phone is None:
            return PairStarted(state="pairing")
        loop = asyncio.get_running_loop()
        self._pair_code = loop.create_future()
        answer: asyncio.Future[Any] = loop.create_future()

        async def wait_code() -> None:
            assert self._pair_code is not None
            try:
                async with asyncio.timeout(PAIR_CODE_TIMEOUT):  # not wait_for: see wait_event
                    code = await asyncio.shield(self._pair_code)
                answer.set_result(PairStarted(state="pairing", pair_code=code))
            except TimeoutError:
                answer.set_exception(ContractError("internal", "WhatsApp did not hand out a pair code in time"))
            except Exception as exc:
                answer.set_exception(exc)

        self.host.spawn(wait_code(), f"pair-code-{self.sid}")
        return answer

    async def _cmd_policy(self, body: bytes) -> Any:
        self.sender.apply(decode(body, SendPolicy))
        return {"applied": True}

    async def _cmd_logout(self, body: bytes) -> Any:
        await self._apply(self.machine.handle(m.LogoutRequested(time.monotonic())))
        return {"state": self.state}

    async def _cmd_reconnect(self, body: bytes) -> Any:
        if self.machine.phase in ("idle", "logged_out") or not self.machine.has_credentials:
            raise unavailable(f"session is {self.state}: pair it first")
        if self.machine.phase == "banned":
            raise unavailable(f"session is banned: {self.reason}")
        await self._apply(self.machine.handle(m.ReconnectRequested(time.monotonic())))
        return {"state": self.state}

    async def _cmd_read(self, body: bytes) -> Any:
        """Read receipts go out at once, not behind the session's queued sends."""
        request = decode(body, MarkRead)
        chat = to_jid(request.chat)
        sender = None if request.sender is None else to_jid(request.sender)
        if self.client is None or not self.connected.is_set() or not self._may_act():
            raise unavailable(f"session is {self.state}: read receipts go out only while it is connected")
        try:
            await self.client.mark_read(chat, request.message_ids, sender)
        except SendError as exc:
            if exc.permanent:
                raise ContractError("invalid_request", exc.message) from None
            raise unavailable(f"read receipts not sent: {exc.message}") from None
        return MarkedRead(chat=chat, message_ids=request.message_ids)

    async def _cmd_delete(self, body: bytes) -> Any:
        if self.machine.has_credentials:
            await self._apply(self.machine.handle(m.LogoutRequested(time.monotonic())))
        else:
            await self._destroy_credentials()
        await self.sender.forget()
        self._inbox.put_nowait(_Stop(graceful=False, reason="deleted"))
        return {"session_id": self.sid}

    # -- stopping ---------------------------------------------------------------------------
    async def _finish(self, stop: _Stop) -> None:
        self._stopping = True
        if stop.graceful and self.client is not None:
            await self._apply(self.machine.handle(m.StopRequested(time.monotonic(), stop.reason)))
        for timer in list(self._timers):
            self._cancel_timer(timer)
        self._cancel_snapshot()
        await self.sender.stop()
        await self.inbound.stop()
        if self._unlisten is not None:
            with contextlib.suppress(Exception):
                await self._unlisten()
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
        self.host.stores.remove(self.sid)
        self.connected.clear()
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if isinstance(item, Command) and not item.done.done():
                item.done.set_exception(ContractError(MOVING, "session is moving to another node"))

    def _may_act(self) -> bool:
        return self.host.may_act() and not self.finished.is_set()

    def _cancel_timer(self, timer: str) -> None:
        handle = self._timers.pop(timer, None)
        if handle is not None:
            handle.cancel()


class _Snapshot:
    """Inbox item: the debounce delay after store changes is over."""


def _restore_outcome(restored: Restored | None) -> str:
    if restored is None:
        return "empty"
    return "fallback" if restored.skipped else "restored"


def _chain(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    def copy(done: asyncio.Future[Any]) -> None:
        if target.done():
            return
        if done.exception() is not None:
            target.set_exception(done.exception())  # type: ignore[arg-type]
        else:
            target.set_result(done.result())

    source.add_done_callback(copy)
