"""CPU time of processes and of the whole host, read from /proc: what each process of a
system under measurement spent, so costs are reported per unit of work rather than as rates
that swing with the host's neighbours."""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def busy_seconds() -> float:
    """CPU time the whole host has spent on anything but idling and waiting for I/O."""
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    return (sum(cpu) - cpu[3] - cpu[4]) / CLK_TCK


def servers_of(work_dir: Path) -> dict[str, int]:
    """The embedded servers of a system (their command lines name its work folder):
    `nats-server` (several for a cluster: `nats-server`, `nats-server#2`, ...) and `database`."""
    found: dict[str, int] = {}
    for entry in sorted(os.listdir("/proc")):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            continue
        if str(work_dir) not in cmdline:
            continue
        name = "nats-server" if "nats-server" in cmdline else "database" if "secantus" in cmdline else None
        if name is not None:
            key, n = name, 1
            while key in found:
                n += 1
                key = f"{name}#{n}"
            found[key] = int(entry)
    return found
