"""The importer's child process: consistent copies of SQLite store files that may be live.

Run by `importer.copy_stores` as `python -I store_copy.py DEST BUSY`, never imported into
the importing process to copy there: that process may run the Go library, and two SQLite
copies in one process cancel each other's POSIX locks (see the importer's docstring). In
a child of its own, Python's sqlite3 takes part in SQLite's ordinary cross-process locking
with any writer. Standard library only, so the child starts fast and loads nothing else.

Protocol: stdin holds a JSON list of store paths. Each copy is written to DEST/<index>, and
stdout gets one JSON line per store, in order: {"i": index, "note": text or null}, or
{"i": index, "error": text}. BUSY is how many seconds to wait for a writer's commit.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def serialize(uri: str, busy: float) -> bytes:
    db = sqlite3.connect(uri, uri=True, timeout=busy, isolation_level=None)
    try:
        db.execute("BEGIN")  # one read transaction: what is checked is what is copied
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db.serialize()
    finally:
        db.close()


def copy(path: Path, dest: Path, busy: float) -> tuple[bytes, str | None]:
    """The store's bytes, and a note on what was done to read them (or None)."""
    if path.stat().st_size == 0:
        raise ValueError("empty file")
    try:
        return serialize(path.absolute().as_uri() + "?mode=ro", busy), None
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorname", "") != "SQLITE_READONLY_ROLLBACK":
            raise
    # A hot journal: its writer died mid-transaction. Roll it back in a private copy.
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        private = Path(tmp) / "store.db"
        shutil.copyfile(path, private)
        shutil.copyfile(f"{path}-journal", f"{private}-journal")
        data = serialize(private.as_uri(), busy)
    return data, "an unfinished transaction of a dead writer was rolled back in the copy"


def problem(exc: Exception, busy: float) -> str:
    """Why a store could not be copied, for the person importing it."""
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith("SQLITE_BUSY") or "locked" in str(exc):
        return f"the store stayed locked by a writer for {busy:g}s; try again"
    if isinstance(exc, sqlite3.Error):
        return f"not a readable SQLite store: {exc}"
    return f"cannot read: {exc}"


def copy_all(sources: Iterable[str], dest: Path, busy: float) -> Iterator[dict[str, Any]]:
    """Copy each store to dest/<index>; one protocol line per store, as it is done."""
    for index, source in enumerate(sources):
        try:
            data, note = copy(Path(source), dest, busy)
            (dest / str(index)).write_bytes(data)
            line: dict[str, Any] = {"i": index, "note": note}
        except Exception as exc:
            line = {"i": index, "error": problem(exc, busy)}
        yield line


def main() -> None:
    dest, busy = Path(sys.argv[1]), float(sys.argv[2])
    for line in copy_all(json.loads(sys.stdin.read()), dest, busy):
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
