"""The Go library: neonize imported on first use, and the ctypes prototypes we call it with.

`load_library()` is the only place that imports `neonize` itself (which loads the 18 MB Go
library and calls logging.basicConfig): a node runs it when its factory starts, after the
service configured logging; a simulator node never does.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from typing import Any

from services.session_actor.adapters.neonize import callbacks


@dataclass(frozen=True)
class Library:
    gocode: Any  # neonize's ctypes handle, with argtypes and result freeing set up
    native: ctypes.CDLL  # the same .so with our own prototypes (its SQLite, a void Stop)
    event_codes: dict[type, int]  # Neonize_pb2 event class -> the code Go sends it under
    callbacks: tuple[Any, Any, Any, Any]  # qr, login status, event, log; alive for the process


_library: Library | None = None
_library_lock = threading.Lock()


def load_library() -> Library:
    """Import neonize on first use, after the service configured logging."""
    global _library
    with _library_lock:
        if _library is None:
            _library = _import_neonize()
        return _library


def _import_neonize() -> Library:
    # Trap: importing neonize calls logging.basicConfig(INFO); keep the root logger as it was.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        from neonize import _binder
        from neonize.events import EVENT_TO_INT
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)

    native = ctypes.CDLL(_binder.gocode._name)
    # Go's Stop returns nothing, yet neonize frees its "result" as a C string; ours is void.
    native.Stop.argtypes = [ctypes.c_char_p]
    native.Stop.restype = None
    native.Disconnect.argtypes = [ctypes.c_char_p]
    native.Disconnect.restype = None
    native.sqlite3_open_v2.argtypes = [
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_int,
        ctypes.c_char_p,
    ]
    native.sqlite3_busy_timeout.argtypes = [ctypes.c_void_p, ctypes.c_int]
    native.sqlite3_serialize.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_int64),
        ctypes.c_uint,
    ]
    native.sqlite3_serialize.restype = ctypes.c_void_p
    native.sqlite3_free.argtypes = [ctypes.c_void_p]
    native.sqlite3_close_v2.argtypes = [ctypes.c_void_p]
    native.sqlite3_errmsg.argtypes = [ctypes.c_void_p]
    native.sqlite3_errmsg.restype = ctypes.c_char_p

    # Go may call these from any thread for as long as the process lives (leaked stores keep
    # their loggers), so they are created once and never released.
    go_callbacks = (
        _binder.func_string(callbacks.on_go_qr),
        _binder.func_string(callbacks.on_go_login_status),
        _binder.func_callback_bytes(callbacks.on_go_event),
        _binder.func_callback_bytes2(callbacks.on_go_log),
    )
    return Library(gocode=_binder.gocode, native=native, event_codes=dict(EVENT_TO_INT), callbacks=go_callbacks)
