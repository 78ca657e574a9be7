"""Service logs: an exception is logged with its traceback, without every frame's locals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import sys
sys.path.insert(0, ".")
from services.common import logs
log = logs.setup("t", "INFO", "{fmt}")
def fail():
    secret_local = "LOCAL-VALUE-" * 50
    raise ValueError("the reason")
try:
    fail()
except ValueError:
    log.exception("it failed", session="s1")
"""


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_an_exception_is_logged_with_its_traceback_and_no_locals(fmt: str, tmp_path: Path) -> None:
    script = tmp_path / "fails.py"
    script.write_text(SCRIPT.format(fmt=fmt))
    # A fresh interpreter: logging setup is process-wide.
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True, cwd=Path.cwd()
    )
    out = done.stderr
    assert "LOCAL-VALUE" not in out
    assert len(out.splitlines()) < 30, out
    if fmt == "json":
        line = json.loads(out.strip().splitlines()[-1])
        assert line["event"] == "it failed" and line["session"] == "s1"
        out = line["exception"]
    assert "ValueError: the reason" in out and 'raise ValueError("the reason")' in out
