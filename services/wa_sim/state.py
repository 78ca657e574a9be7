"""The simulator's durable part (linked devices, bans, unacked inbound) in one JSON file.

Saved debounced, whenever the world's revision moved, and atomically (temporary file,
then rename), so a killed process leaves the previous or the new state, never half of one.
Connections and statistics are not saved: after a restart every client reconnects.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import structlog

from services.wa_sim.world import Durable, World

log = structlog.get_logger(__name__)

# At most one save per this many seconds while the world keeps changing.
SAVE_DEBOUNCE = 0.5

_decoder = msgspec.json.Decoder(Durable)


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._saved_revision = 0
        self._saved_at = float("-inf")

    def load_into(self, world: World) -> None:
        """Restore the world from the file, if any; a damaged file is set aside, not fatal."""
        try:
            durable = _decoder.decode(self.path.read_bytes())
        except FileNotFoundError:
            return
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            aside = self.path.with_suffix(".damaged")
            self.path.replace(aside)
            log.error("simulator state unreadable; starting empty", error=str(exc), moved_to=str(aside))
            return
        world.restore(durable)
        self._saved_revision = world.revision
        log.info(
            "simulator state loaded",
            devices=len(durable.devices),
            inbox=sum(map(len, durable.inbox.values())),
        )

    def save_if_changed(self, world: World, now: float) -> None:
        """Debounced: called often, writes at most every SAVE_DEBOUNCE seconds."""
        if world.revision != self._saved_revision and now - self._saved_at >= SAVE_DEBOUNCE:
            self.save(world, now)

    def save(self, world: World, now: float) -> None:
        # Written on the loop thread: a small file, at most twice a second, one writer at a time.
        data = msgspec.json.encode(world.durable())
        self._saved_revision, self._saved_at = world.revision, now
        _write_atomically(self.path, data)


def _write_atomically(path: Path, data: bytes) -> None:
    # Without fsync: the file must survive the process being killed (the page cache does),
    # not the machine losing power, and an fsync on the loop would stall every frame.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
