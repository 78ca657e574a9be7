"""How often a session may start pairing: at most `limit` pair requests in any `window`
seconds (default 3 per 2 minutes). Every pair request makes WhatsApp hand out new QR codes
or a new pair code, and numbers that ask too often get restricted (field reports); a user
script stuck in a loop must not do that to a number.

Plain code: the caller gives the time. The window lives with the session's actor, in
memory: when the session moves to another node the new actor starts with an empty window,
so a move can allow up to `limit` more requests early. Moves are rare and no client can
cause one; keeping the window in a shared store would cost a write per pair request.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PairLimit:
    limit: int = 3
    window: float = 120.0


@dataclass
class PairWindow:
    """The times of the requests admitted within the last window (a sliding window)."""

    rule: PairLimit
    _admitted: deque[float] = field(default_factory=deque)

    def admit(self, now: float) -> float:
        """0.0 and the request counts; or, refused, the seconds until one would be admitted."""
        while self._admitted and now - self._admitted[0] >= self.rule.window:
            self._admitted.popleft()
        if len(self._admitted) >= self.rule.limit:
            return self._admitted[0] + self.rule.window - now
        self._admitted.append(now)
        return 0.0
