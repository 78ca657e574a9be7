"""CPU work on bytes (hashing, compressing, encrypting), on the event loop or off it.

A megabyte or more takes long enough (milliseconds to hundreds of them) to stall every
other task of the process: that goes to a worker thread. Smaller inputs stay on the loop,
where the work costs less than a thread hop and does not queue on the default executor
(small in a simulator node) when hundreds of sessions do it at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

OFF_LOOP_BYTES = 1 << 20


async def off_loop_if_large(size: int, work: Callable[..., T], *args: Any) -> T:
    """`work(*args)`, in a worker thread when `size` (the input's bytes) is large."""
    return await asyncio.to_thread(work, *args) if size > OFF_LOOP_BYTES else work(*args)
