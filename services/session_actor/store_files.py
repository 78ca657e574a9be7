"""Local copies of the sessions' credential stores, in one folder per node incarnation.

A WhatsApp client library works on an SQLite file; the vault holds the truth. An actor
writes its restored store here and removes it when it ends. Folders left by earlier
incarnations of the same node (a crash) are stale copies, removed when a node starts.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path


class StoreFiles:
    def __init__(self, stores_dir: Path, node_id: str) -> None:
        self._stores_dir = stores_dir
        self._node_id = node_id
        self.root = stores_dir / node_id

    def prepare(self) -> None:
        """Create this incarnation's folder and remove those of earlier ones of this node."""
        self.root.mkdir(parents=True, exist_ok=True)
        prefix = self._node_id.rsplit("-", 1)[0] + "-"
        for old in self._stores_dir.glob(prefix + "*"):
            if old.name != self._node_id:
                shutil.rmtree(old, ignore_errors=True)

    def path(self, sid: str) -> Path:
        return self.root / f"{sid}.db"

    def write(self, sid: str, data: bytes) -> None:
        path = self.path(sid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def remove(self, sid: str) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.path(sid)}{suffix}").unlink()

    def remove_all(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
