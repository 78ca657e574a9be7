"""Process-wide settings the Go library needs: a larger default executor, a raised fd limit,
and fd 1 pointed away from the logs. The factory applies them when it starts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

_executor_workers = 0


def size_default_executor(loop: asyncio.AbstractEventLoop, workers: int) -> None:
    """Trap: neonize's calls block executor threads (a send up to ~75 s); the default pool
    (6 threads on 2 cores) stalls the 7th session. Only ever grown; threads start lazily."""
    global _executor_workers
    if workers > _executor_workers:
        loop.set_default_executor(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="neonize-call"))
        _executor_workers = workers


def raise_fd_limit() -> int:
    """Raise the soft fd limit to the hard one (leaked store handles add up); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def send_fd1_to_devnull() -> Callable[[], None]:
    """Trap: Go prints to fd 1 ("SendMessage: Error ...", "Login event: ...", pair codes).

    All of it duplicates what the adapter already gets from return values and callbacks,
    so fd 1 goes to /dev/null (no reader thread that could stall Go on a full pipe); Python's
    sys.stdout moves to a duplicate of the original fd 1. fd 2 stays untouched so Go panic
    traces still reach the logs.
    """
    sys.stdout.flush()
    original = os.dup(1)
    python_stdout = open(  # closed by restore()
        os.dup(original),
        "w",
        buffering=1,
        encoding=getattr(sys.stdout, "encoding", None) or "utf-8",
        errors="backslashreplace",
    )
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    previous, sys.stdout = sys.stdout, python_stdout

    def restore() -> None:
        python_stdout.flush()
        os.dup2(original, 1)
        os.close(original)
        sys.stdout = previous
        python_stdout.close()

    return restore
