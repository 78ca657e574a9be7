"""Snapshots of a live whatsmeow store, taken through the Go library's own SQLite (the
trap is on `serialize_store`; `library` declares the SQLite functions the .so exports)."""

from __future__ import annotations

import ctypes

# How long a snapshot waits for a commit of Go's to finish.
SNAPSHOT_BUSY_TIMEOUT_MS = 5000


def serialize_store(native: ctypes.CDLL, path: str) -> bytes:
    """A consistent copy of a live store through the Go side's own SQLite.

    Trap: Python's sqlite3 is a second SQLite copy whose POSIX locks the Go side does not
    see; reading through the library Go uses keeps both under one lock manager.
    """
    db = ctypes.c_void_p()
    try:
        if native.sqlite3_open_v2(path.encode(), ctypes.byref(db), 0x1, None):  # SQLITE_OPEN_READONLY
            raise OSError(f"cannot open {path}: {native.sqlite3_errmsg(db).decode()}")
        native.sqlite3_busy_timeout(db, SNAPSHOT_BUSY_TIMEOUT_MS)  # Go may be committing
        size = ctypes.c_int64()
        # One read transaction over all pages, so concurrent commits never tear the copy.
        data = native.sqlite3_serialize(db, b"main", ctypes.byref(size), 0)
        if not data:
            raise OSError(f"cannot snapshot {path}: {native.sqlite3_errmsg(db).decode()}")
        try:
            return ctypes.string_at(data, size.value)
        finally:
            native.sqlite3_free(data)
    finally:
        native.sqlite3_close_v2(db)
