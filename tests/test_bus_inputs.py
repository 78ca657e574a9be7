"""What the services read from the bus is checked, not trusted: fencing tokens are numbers
or nothing; an entry of the leases bucket that is no lease is skipped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from contracts.internal import Ownership
from services.common.cluster import OWN, ClusterWatcher, fence_token, parse_token, token_happened
from services.common.config import Settings

epochs = st.integers(min_value=0, max_value=10**14 - 1)
revisions = st.integers(min_value=0, max_value=10**16 - 1)


@given(epochs, revisions, epochs, revisions)
def test_tokens_read_back_as_the_numbers_they_were_made_of_and_order_alike(e1, r1, e2, r2) -> None:
    a, b = parse_token(fence_token(e1, r1)), parse_token(fence_token(e2, r2))
    assert a == (e1, r1) and b == (e2, r2)
    assert (a < b) == ((e1, r1) < (e2, r2))


def test_anything_else_is_no_token() -> None:
    for text in ("", "zzzz", "1", "1.", ".1", "1.2.3", "-1.2", "1.-2", " 1.2", "1.2 ", "\u0661.\u0662", "1" * 20 + ".1"):
        assert parse_token(text) is None, text


def test_a_token_happened_if_no_newer_than_the_buckets_latest_revision() -> None:
    assert token_happened((100, 7), epoch_ms=100, latest_revision=7)
    assert not token_happened((100, 8), epoch_ms=100, latest_revision=7)
    assert token_happened((99, 10**15), epoch_ms=100, latest_revision=7)  # an earlier bucket's
    assert not token_happened((101, 1), epoch_ms=100, latest_revision=7)  # a bucket not made yet


@dataclass
class Entry:
    key: str
    value: bytes | None
    revision: int
    operation: str | None = None


class Watch:
    """A KV watch delivering `entries`, then the end of the initial values."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries

    async def __aiter__(self) -> AsyncIterator[Entry | None]:
        for entry in self.entries:
            yield entry
        yield None

    async def stop(self) -> None:
        pass


async def test_an_entry_of_the_leases_bucket_that_is_no_lease_is_skipped(tmp_path: Path) -> None:
    watcher = ClusterWatcher(None, Settings(data_dir=tmp_path))  # type: ignore[arg-type]
    owned = msgspec.json.encode(Ownership(node="n1"))
    await watcher._run(  # type: ignore[arg-type]
        Watch(
            [
                Entry(f"{OWN}a", owned, 1),
                Entry("node.forged", b'{"event_id": "x", "state": "connected"}', 2),
                Entry(f"{OWN}b", b"\xff not json", 3),
                Entry(f"{OWN}c", owned, 4),
            ]
        )
    )
    assert watcher.ready.is_set()
    assert sorted(watcher.view.sessions) == ["a", "c"] and watcher.view.nodes == {}
