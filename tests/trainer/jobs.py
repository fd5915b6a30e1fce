"""Real torchrun jobs on CPU/gloo for the trainer's end-to-end tests, and the process-level
tools they need: find a job's worker processes by rank, signal or kill one mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIMEOUT = 300
EVAL_EVERY = 10


@dataclass(frozen=True)
class Job:
    returncode: int
    output: str  # stdout and stderr, interleaved
    out: Path  # the run's --output

    @property
    def metrics(self) -> dict[str, Any]:
        return json.loads((self.out / "metrics.json").read_text())

    def check(self, code: int = 0) -> Job:
        assert self.returncode == code, f"exit {self.returncode}\n{self.output[-4000:]}"
        return self


def trainer_argv(tiny: Any, out: Path, *extra: str) -> list[str]:
    """Every job also evaluates on tiny's held-out rows every EVAL_EVERY steps, so each
    strategy's run proves its eval too (tests/trainer/test_evaluate.py); the eval changes no
    training loss."""
    return [f"--model={tiny.model_dir}", f"--dataset={tiny.data}", f"--output={out}",
            "--seq-len=64", "--micro-batch=4", "--lr=3e-3", "--seed=0",
            f"--eval-dataset={tiny.eval_data}", f"--eval-every={EVAL_EVERY}", *extra]


def torchrun(nproc: int = 2, *torchrun_flags: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", *torchrun_flags, "-m", "mgft_train"]


def run(cmd: list[str], env: dict[str, str], out: Path) -> Job:
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=TIMEOUT)
    return Job(proc.returncode, proc.stdout, out)


def run_and_hit(cmd: list[str], env: dict[str, str], out: Path, *, when: str, rank: int,
                sig: int) -> Job:
    """Run a job; as soon as a line of its output starts with `when`, send `sig` to the
    worker process of `rank` (only that one: the others must learn of it by themselves)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    assert proc.stdout is not None
    lines, hit = [], False
    deadline = time.monotonic() + TIMEOUT
    for line in proc.stdout:
        lines.append(line)
        if not hit and line.startswith(when):
            os.kill(workers(proc.pid)[rank], sig)
            hit = True
        if time.monotonic() > deadline:
            proc.kill()
            break
    proc.wait(timeout=60)
    assert hit, f"never saw {when!r}:\n{''.join(lines)[-3000:]}"
    return Job(proc.returncode, "".join(lines), out)


def workers(root: int) -> dict[int, int]:
    """{rank: pid} of the trainer processes under process `root` (torchrun, or mgft)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        rank = _env_rank(pid)
        if rank is not None and pid != root:
            found[rank] = pid
    return found


def _env_rank(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if b"mgft_train" not in cmdline or b"torch.distributed.run" in cmdline:
        return None
    ranks = [int(e[5:]) for e in environ if e.startswith(b"RANK=")]
    return ranks[0] if ranks else None


STOP = signal.SIGUSR2
