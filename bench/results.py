"""What a benchmark reports: samples summarised, the host's speed beside them, and rows saved
as bench-results/<name>.json."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path("bench-results")
# The services' logs of each benchmark's system, one folder per benchmark.
SERVICE_LOGS = RESULTS / "logs"


def host_speed_ms() -> float:
    """A fixed pure-Python workload, timed (best of 3): this machine is a VM whose speed
    varies with its neighbours, so results are only comparable next to this number."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        sum(i * i for i in range(2_000_000))
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p99/max of a sample, in the sample's unit."""
    ordered = sorted(values)
    if not ordered:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return {"p50": q[49], "p99": q[98], "max": ordered[-1]}


@dataclass
class Report:
    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def add(self, **row: Any) -> None:
        self.rows.append(row)
        print("  " + "  ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)

    def save(self) -> Path:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        path.write_text(json.dumps({"name": self.name, "at": self.started, "rows": self.rows}, indent=2))
        return path


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
