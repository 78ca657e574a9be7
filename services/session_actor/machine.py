"""The connection state machine of one session actor: plain code, no I/O, no clock.

`ConnectionMachine.handle(input)` returns the effects the actor must carry out (connect,
start a timer, report a status, destroy credentials, ...). Time comes in with each input
(`now`, monotonic seconds) and randomness from an injected `random.Random`, so tests can
drive every path deterministically.

Phases and what they report:

    idle        created / logged_out / stopped   no connection, waiting for a pair request
    pairing     pairing                          showing rotating QR codes or a pair code
    connecting  connecting                       dialing with stored credentials
    connected   connected
    backoff     disconnected                     waiting for the next reconnect attempt
    verifying   disconnected                     stream replaced: asking if we still own it
    banned      banned                           temporary ban; reconnects when it ends
    logged_out  logged_out                       credentials are dead and destroyed
    stopped     stopped                          needs a human (client outdated, replaced twice)

One job in one file, longer than most: the inputs, the effects and every transition
between them read together, top to bottom.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from services.common.reasons import LOGOUT_REQUESTED

# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Start:
    now: float
    has_credentials: bool
    # What the session was before this owner took it (so an unpaired session stays
    # `created` and a logged-out one stays `logged_out`).
    previous_state: str = "created"
    # A session that moved while pairing: how long ago its pairing began, and the phone a
    # pair code was asked for. The new owner resumes it for what is left of the timeout.
    pairing_for: float | None = None
    pairing_phone: str | None = None


@dataclass(frozen=True)
class PairRequested:
    now: float
    phone: str | None = None


@dataclass(frozen=True)
class ReconnectRequested:
    now: float


@dataclass(frozen=True)
class LogoutRequested:
    now: float


@dataclass(frozen=True)
class StopRequested:
    """The actor is being stopped on purpose (release to another node, or shutdown)."""

    now: float
    reason: str


@dataclass(frozen=True)
class TimerFired:
    now: float
    timer: TimerKind


@dataclass(frozen=True)
class OwnershipChecked:
    now: float
    still_owner: bool


# What the WhatsApp client reports (adapter events, already translated).
@dataclass(frozen=True)
class QrShown:
    now: float
    code: str


@dataclass(frozen=True)
class PairSucceeded:
    now: float
    jid: str


@dataclass(frozen=True)
class Connected:
    now: float
    jid: str | None = None


@dataclass(frozen=True)
class Disconnected:
    now: float
    detail: str = ""


@dataclass(frozen=True)
class KeepAliveTimeout:
    now: float


@dataclass(frozen=True)
class KeepAliveRestored:
    now: float


@dataclass(frozen=True)
class LoggedOut:
    now: float
    reason: str


@dataclass(frozen=True)
class StreamReplaced:
    now: float


@dataclass(frozen=True)
class TemporaryBan:
    now: float
    code: int
    expires_in: float


@dataclass(frozen=True)
class ConnectFailure:
    now: float
    code: int
    message: str = ""


@dataclass(frozen=True)
class ClientOutdated:
    now: float


Input = (
    Start
    | PairRequested
    | ReconnectRequested
    | LogoutRequested
    | StopRequested
    | TimerFired
    | OwnershipChecked
    | QrShown
    | PairSucceeded
    | Connected
    | Disconnected
    | KeepAliveTimeout
    | KeepAliveRestored
    | LoggedOut
    | StreamReplaced
    | TemporaryBan
    | ConnectFailure
    | ClientOutdated
)

# ---------------------------------------------------------------------------- effects

TimerKind = Literal["reconnect", "pairing_timeout", "ban_expiry"]


@dataclass(frozen=True)
class Connect:
    """Dial WhatsApp: with stored credentials, or without them to pair."""


@dataclass(frozen=True)
class Disconnect:
    """Close the connection, keep the credentials."""


@dataclass(frozen=True)
class Logout:
    """Unlink the device at WhatsApp (when connected)."""


@dataclass(frozen=True)
class RequestPairCode:
    phone: str


@dataclass(frozen=True)
class DestroyCredentials:
    pass


@dataclass(frozen=True)
class SnapshotCredentials:
    pass


@dataclass(frozen=True)
class StartTimer:
    timer: TimerKind
    delay: float


@dataclass(frozen=True)
class CancelTimer:
    timer: TimerKind


@dataclass(frozen=True)
class VerifyOwnership:
    pass


@dataclass(frozen=True)
class Terminate:
    """This actor no longer owns the session: stop without touching shared state."""


@dataclass(frozen=True)
class Report:
    state: str
    reason: str | None = None
    jid: str | None = None
    qr: str | None = None


Effect = (
    Connect
    | Disconnect
    | Logout
    | RequestPairCode
    | DestroyCredentials
    | SnapshotCredentials
    | StartTimer
    | CancelTimer
    | VerifyOwnership
    | Terminate
    | Report
)

# ----------------------------------------------------------------------------- policy

# WhatsApp connect-failure codes (whatsmeow's ConnectFailureReason).
LOGGED_OUT_CODES = frozenset({401, 403, 406})  # logged out, main device gone, unknown/banned for good
TEMP_BANNED_CODE = 402
CLIENT_OUTDATED_CODE = 405


@dataclass(frozen=True)
class ReconnectPolicy:
    base: float = 1.0
    cap: float = 60.0
    # N disconnects within `flap_window` seconds count as flapping and back off harder.
    flap_disconnects: int = 5
    flap_window: float = 300.0
    flap_floor: float = 120.0
    pairing_timeout: float = 180.0
    # A replaced stream is answered with one reconnect; a second one inside this window stops.
    replaced_window: float = 600.0
    # Keepalive timeouts in a row before the connection is treated as dead.
    keepalive_strikes: int = 3

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Capped exponential backoff with equal jitter: never zero, never above the cap."""
        ceiling = min(self.cap, self.base * (2**attempt))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


Phase = Literal[
    "idle", "pairing", "connecting", "connected", "backoff", "verifying", "banned", "logged_out", "stopped"
]

_LIVE_PHASES = frozenset({"pairing", "connecting", "connected", "backoff", "verifying", "banned"})


@dataclass
class ConnectionMachine:
    policy: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    rng: random.Random = field(default_factory=random.Random)

    phase: Phase = "idle"
    has_credentials: bool = False
    jid: str | None = None
    idle_state: str = "created"
    attempt: int = 0
    pending_phone: str | None = None
    pair_code_requested: bool = False
    qr_shown: bool = False
    keepalive_misses: int = 0
    disconnects: deque[float] = field(default_factory=deque)
    replaced_at: float | None = None

    # -- queries ------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """The public state (contract v1) this phase reports."""
        return {
            "idle": self.idle_state,
            "pairing": "pairing",
            "connecting": "connecting",
            "connected": "connected",
            "backoff": "disconnected",
            "verifying": "disconnected",
            "banned": "banned",
            "logged_out": "logged_out",
            "stopped": "stopped",
        }[self.phase]

    @property
    def connected(self) -> bool:
        return self.phase == "connected"

    # -- the machine --------------------------------------------------------------------
    def handle(self, event: Input) -> list[Effect]:
        match event:
            case Start():
                return self._on_start(event)
            case PairRequested():
                return self._on_pair_requested(event)
            case QrShown():
                return self._on_qr_shown(event)
            case PairSucceeded():
                return self._on_pair_succeeded(event)
            case Connected():
                return self._on_connected(event)
            case Disconnected():
                return self._on_disconnected(event)
            case KeepAliveTimeout():
                return self._on_keep_alive_timeout(event)
            case KeepAliveRestored():
                return self._on_keep_alive_restored(event)
            case TimerFired():
                return self._on_timer_fired(event)
            case LoggedOut():
                return self._on_logged_out(event)
            case ConnectFailure():
                return self._on_connect_failure(event)
            case TemporaryBan():
                return self._on_temporary_ban(event)
            case ClientOutdated():
                return self._on_client_outdated(event)
            case StreamReplaced():
                return self._on_stream_replaced(event)
            case OwnershipChecked():
                return self._on_ownership_checked(event)
            case ReconnectRequested():
                return self._on_reconnect_requested(event)
            case LogoutRequested():
                return self._on_logout_requested(event)
            case StopRequested():
                return self._on_stop_requested(event)
        raise TypeError(f"not an input of the connection machine: {event!r}")

    def _on_start(self, e: Start) -> list[Effect]:
        self.has_credentials = e.has_credentials
        if e.has_credentials:
            return self._dial(reason=None)
        if e.previous_state == "pairing" and e.pairing_for is not None:
            left = self.policy.pairing_timeout - e.pairing_for
            if left > 0:
                return self._pair(e.pairing_phone, left, reason="pairing resumed by a new owner")
        self.idle_state = e.previous_state if e.previous_state in ("logged_out", "stopped") else "created"
        self.phase = "idle"
        # A new owner of an idle session has nothing new to say.
        return [] if e.previous_state == self.idle_state else [Report(self.idle_state)]

    def _on_pair_requested(self, e: PairRequested) -> list[Effect]:
        # The actor refuses pair requests for linked sessions before they get here.
        return self._pair(e.phone, self.policy.pairing_timeout)

    def _pair(self, phone: str | None, timeout: float, reason: str | None = None) -> list[Effect]:
        self.phase = "pairing"
        self.pending_phone = phone
        self.pair_code_requested = False
        self.qr_shown = False
        self.attempt = 0
        return [
            Disconnect(),
            Connect(),
            StartTimer("pairing_timeout", timeout),
            Report("pairing", reason=reason),
        ]

    def _on_qr_shown(self, e: QrShown) -> list[Effect]:
        if self.phase != "pairing":
            return []
        self.qr_shown = True
        effects: list[Effect] = [Report("pairing", qr=e.code)]
        if self.pending_phone and not self.pair_code_requested:
            self.pair_code_requested = True
            effects.append(RequestPairCode(self.pending_phone))
        return effects

    def _on_pair_succeeded(self, e: PairSucceeded) -> list[Effect]:
        self.has_credentials = True
        self.jid = e.jid
        self.pending_phone = None
        self.phase = "connecting"
        return [CancelTimer("pairing_timeout"), SnapshotCredentials(), Report("connecting", jid=e.jid)]

    def _on_connected(self, e: Connected) -> list[Effect]:
        if self.phase not in ("connecting", "pairing", "backoff", "connected"):
            return []
        self.jid = e.jid or self.jid
        self.has_credentials = True
        self.phase = "connected"
        self.attempt = 0
        self.keepalive_misses = 0
        return [
            CancelTimer("pairing_timeout"),
            CancelTimer("reconnect"),
            Report("connected", jid=self.jid),
            SnapshotCredentials(),
        ]

    def _on_disconnected(self, e: Disconnected) -> list[Effect]:
        if self.phase == "pairing":
            if self.qr_shown:
                # WhatsApp stops handing out codes after a few minutes and closes the socket.
                return self._halt("pairing_timeout: nobody scanned the code; pair again")
            # Could not reach WhatsApp to get a code: keep trying until the pairing timeout.
            delay = self.policy.backoff(self.attempt, self.rng)
            self.attempt += 1
            return [
                StartTimer("reconnect", delay),
                Report("pairing", reason=f"{e.detail or 'cannot reach WhatsApp'}; retry in {delay:.1f}s"),
            ]
        if self.phase not in ("connecting", "connected"):
            return []
        return self._schedule_reconnect(e.now, e.detail or "connection lost")

    def _on_keep_alive_timeout(self, e: KeepAliveTimeout) -> list[Effect]:
        if self.phase != "connected":
            return []
        self.keepalive_misses += 1
        if self.keepalive_misses >= self.policy.keepalive_strikes:
            return [Disconnect(), *self._schedule_reconnect(e.now, "keepalive failed")]
        return [Report("connected", reason=f"keepalive timeout ({self.keepalive_misses})", jid=self.jid)]

    def _on_keep_alive_restored(self, e: KeepAliveRestored) -> list[Effect]:
        if self.phase != "connected" or not self.keepalive_misses:
            return []
        self.keepalive_misses = 0
        return [Report("connected", jid=self.jid)]

    def _on_timer_fired(self, e: TimerFired) -> list[Effect]:
        if e.timer == "reconnect" and self.phase == "backoff":
            return self._dial(reason=None)
        if e.timer == "reconnect" and self.phase == "pairing":
            return [Connect()]
        if e.timer == "ban_expiry" and self.phase == "banned":
            return self._dial(reason="ban expired")
        if e.timer == "pairing_timeout" and self.phase == "pairing":
            return self._halt("pairing_timeout: nobody scanned the code; pair again")
        return []

    def _on_logged_out(self, e: LoggedOut) -> list[Effect]:
        return self._logged_out(f"logged_out: {e.reason}")

    def _on_connect_failure(self, e: ConnectFailure) -> list[Effect]:
        detail = f" ({e.message})" if e.message else ""
        if e.code in LOGGED_OUT_CODES:
            return self._logged_out(f"logged_out: connect refused with {e.code}{detail}")
        if e.code == TEMP_BANNED_CODE:
            return self._on_temporary_ban(TemporaryBan(e.now, e.code, expires_in=self.policy.cap))
        if e.code == CLIENT_OUTDATED_CODE:
            return self._on_client_outdated(ClientOutdated(e.now))
        if self.phase not in ("connecting", "connected"):
            return []
        return [Disconnect(), *self._schedule_reconnect(e.now, f"connect failed {e.code}{detail}")]

    def _on_temporary_ban(self, e: TemporaryBan) -> list[Effect]:
        self.phase = "banned"
        return [
            Disconnect(),
            CancelTimer("reconnect"),
            StartTimer("ban_expiry", max(e.expires_in, 1.0)),
            Report("banned", reason=f"temporary_ban: code {e.code}, lifts in {round(e.expires_in)}s", jid=self.jid),
        ]

    def _on_client_outdated(self, e: ClientOutdated) -> list[Effect]:
        return self._halt("client_outdated: WhatsApp refuses this client version; upgrade the gateway")

    def _on_stream_replaced(self, e: StreamReplaced) -> list[Effect]:
        if self.phase not in ("connected", "connecting"):
            return []
        if self.replaced_at is not None and e.now - self.replaced_at < self.policy.replaced_window:
            return self._halt("stream_replaced: another client keeps using these credentials")
        self.replaced_at = e.now
        self.phase = "verifying"
        return [Report("disconnected", reason="stream_replaced: checking ownership", jid=self.jid), VerifyOwnership()]

    def _on_ownership_checked(self, e: OwnershipChecked) -> list[Effect]:
        if self.phase != "verifying":
            return []
        if not e.still_owner:
            self.phase = "stopped"
            return [Disconnect(), Terminate()]
        return self._dial(reason="stream_replaced: still the owner, reconnecting once")

    def _on_reconnect_requested(self, e: ReconnectRequested) -> list[Effect]:
        # The actor refuses reconnects for unlinked or banned sessions before they get here.
        self.attempt = 0
        self.replaced_at = None
        return [Disconnect(), CancelTimer("reconnect"), *self._dial(reason="reconnect requested")]

    def _on_logout_requested(self, e: LogoutRequested) -> list[Effect]:
        effects: list[Effect] = [Logout()] if self.has_credentials else []
        return effects + self._logged_out(LOGOUT_REQUESTED)

    def _on_stop_requested(self, e: StopRequested) -> list[Effect]:
        was_live = self.phase in _LIVE_PHASES
        effects: list[Effect] = [CancelTimer("reconnect"), CancelTimer("pairing_timeout"), CancelTimer("ban_expiry")]
        if self.has_credentials and self.phase not in ("logged_out",):
            effects.append(SnapshotCredentials())
        effects.append(Disconnect())
        if self.phase == "pairing":
            # Still pairing as far as the user is concerned: the next owner resumes it.
            effects.append(Report("pairing", reason=f"{e.reason}; a new code follows from the next owner"))
        elif was_live:
            effects.append(Report("disconnected", reason=e.reason, jid=self.jid))
        self.phase = "stopped"
        return effects

    # -- helpers ------------------------------------------------------------------------
    def _dial(self, reason: str | None) -> list[Effect]:
        self.phase = "connecting"
        return [Connect(), Report("connecting", reason=reason, jid=self.jid)]

    def _schedule_reconnect(self, now: float, why: str) -> list[Effect]:
        self.disconnects.append(now)
        while self.disconnects and now - self.disconnects[0] > self.policy.flap_window:
            self.disconnects.popleft()
        delay = self.policy.backoff(self.attempt, self.rng)
        self.attempt += 1
        reason = f"{why}; retry in {delay:.1f}s"
        if len(self.disconnects) >= self.policy.flap_disconnects:
            delay = max(delay, self.policy.flap_floor * (1 + self.rng.random()))
            reason = (
                f"flapping: {len(self.disconnects)} disconnects in {round(self.policy.flap_window)}s "
                f"({why}); retry in {delay:.0f}s"
            )
        self.phase = "backoff"
        self.keepalive_misses = 0
        return [StartTimer("reconnect", delay), Report("disconnected", reason=reason, jid=self.jid)]

    def _logged_out(self, reason: str) -> list[Effect]:
        self.phase = "logged_out"
        self.has_credentials = False
        self.idle_state = "logged_out"
        self.jid = None
        return [
            CancelTimer("reconnect"),
            CancelTimer("pairing_timeout"),
            CancelTimer("ban_expiry"),
            Disconnect(),
            DestroyCredentials(),
            Report("logged_out", reason=reason),
        ]

    def _halt(self, reason: str) -> list[Effect]:
        """Stop trying: a human has to act (pair again, upgrade, find the other client)."""
        self.phase = "stopped"
        self.idle_state = "stopped"
        return [
            CancelTimer("reconnect"),
            CancelTimer("pairing_timeout"),
            CancelTimer("ban_expiry"),
            Disconnect(),
            Report("stopped", reason=reason, jid=self.jid),
        ]
