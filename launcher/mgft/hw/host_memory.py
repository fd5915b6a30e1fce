"""This machine's memory as a job on it sees it, and the kernel's out-of-memory kills.

A worker that the kernel kills for memory gets SIGKILL and leaves no message of its own;
these figures let mgft say so. Linux only: /proc/meminfo, and the memory cgroup (v2, or v1's
memory controller) this process runs in. Elsewhere every answer is None.
"""

from __future__ import annotations

import re
from pathlib import Path

MEMINFO = Path("/proc/meminfo")
CGROUP_ROOT = Path("/sys/fs/cgroup")
_NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as about 2**63


def total_bytes() -> int | None:
    """The memory the job can use: the machine's, or its cgroup's limit where lower."""
    try:
        text = MEMINFO.read_text()
    except OSError:
        return None
    found = re.search(r"^MemTotal:\s+(\d+) kB", text, re.MULTILINE)
    total = int(found.group(1)) * 1024 if found else None
    limit = _cgroup_limit()
    if limit is not None and (total is None or limit < total):
        return limit
    return total


def oom_kills() -> int | None:
    """How many processes of this cgroup the OOM killer has ended so far."""
    for directory in _cgroup_dirs():
        for name in ("memory.events", "memory.oom_control"):  # v2, v1
            try:
                text = (directory / name).read_text()
            except OSError:
                continue
            found = re.search(r"^oom_kill (\d+)", text, re.MULTILINE)
            if found:
                return int(found.group(1))
    return None


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _cgroup_limit() -> int | None:
    for directory in _cgroup_dirs():
        for name in ("memory.max", "memory.limit_in_bytes"):  # v2, v1
            try:
                text = (directory / name).read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < _NO_LIMIT:
                return int(text)
            return None  # "max", or v1's "no limit"
    return None


def _cgroup_dirs() -> list[Path]:
    """This process's memory cgroup: by its path where that is visible (a host), then the
    root of the cgroup view (inside a container, that is the container's own)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    dirs = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            dirs.append(CGROUP_ROOT / path.lstrip("/"))
        elif "memory" in controllers.split(","):
            dirs.append(CGROUP_ROOT / "memory" / path.lstrip("/"))
    dirs += [CGROUP_ROOT / "memory", CGROUP_ROOT]
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]
