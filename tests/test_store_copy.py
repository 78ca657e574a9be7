"""The importer's copying child, its functions called directly on private files (no Go client
ever opens them, so this process may read them with Python's sqlite3). The whole protocol,
a live writer and a dead writer's journal are covered through `copy_stores` in test_importer."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

from services.credentials import store_copy

BUSY = 0.2


def store(path: Path, rows: int = 3) -> Path:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE device (jid TEXT)")
    db.executemany("INSERT INTO device VALUES (?)", [(f"{i}@s.whatsapp.net",) for i in range(rows)])
    db.commit()
    db.close()
    return path


def rows_of(data: bytes) -> int:
    db = sqlite3.connect(":memory:")
    try:
        db.deserialize(data)
        return db.execute("SELECT count(*) FROM device").fetchone()[0]
    finally:
        db.close()


def test_a_store_is_copied_whole_without_a_note(tmp_path: Path) -> None:
    data, note = store_copy.copy(store(tmp_path / "a.db", rows=5), tmp_path, BUSY)
    assert rows_of(data) == 5 and note is None


def test_a_store_locked_by_a_writer_is_reported_as_busy(tmp_path: Path) -> None:
    path = store(tmp_path / "locked.db")
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError) as busy:
            store_copy.copy(path, tmp_path, BUSY)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert store_copy.problem(busy.value, BUSY) == "the store stayed locked by a writer for 0.2s; try again"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "cannot read: empty file"),
        (b"not a database at all" * 100, "not a readable SQLite store: file is not a database"),
        (None, "cannot read: [Errno 2] No such file or directory"),
    ],
)
def test_what_cannot_be_copied_says_why(tmp_path: Path, content: bytes | None, why: str) -> None:
    path = tmp_path / "bad.db"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(Exception) as failed:
        store_copy.copy(path, tmp_path, BUSY)
    assert store_copy.problem(failed.value, BUSY).startswith(why)


def test_each_store_gets_its_line_and_a_failure_stops_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "copies"
    dest.mkdir()
    sources = [str(store(tmp_path / "one.db", rows=1)), str(tmp_path / "missing.db"), str(store(tmp_path / "two.db", rows=2))]
    lines = list(store_copy.copy_all(sources, dest, BUSY))
    assert [line["i"] for line in lines] == [0, 1, 2]
    assert lines[0] == {"i": 0, "note": None} and lines[2] == {"i": 2, "note": None}
    assert lines[1]["error"].startswith("cannot read:")
    assert sorted(p.name for p in dest.iterdir()) == ["0", "2"]
    assert (rows_of((dest / "0").read_bytes()), rows_of((dest / "2").read_bytes())) == (1, 2)


def test_the_child_imports_nothing_but_the_standard_library() -> None:
    source = Path(store_copy.__file__).read_text()
    imported = {
        line.split()[1].split(".")[0]
        for line in source.splitlines()
        if line.startswith(("import ", "from ")) and not line.startswith("from __future__")
    }
    assert imported and imported <= sys.stdlib_module_names, imported - sys.stdlib_module_names
