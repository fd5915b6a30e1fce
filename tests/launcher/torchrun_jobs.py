"""Real torchrun jobs whose workers are small scripts, run the way `mgft submit --backend local`
runs the trainer (`mgft.backends.local.submit.run`): seconds each, no model."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from mgft.render.local import STREAMED_RANK, LocalCommand


def command(script: Path, log_dir: Path, *args: str, nproc: int = 2) -> LocalCommand:
    return LocalCommand(env={}, log_dir=str(log_dir), argv=[
        "torchrun", "--standalone", "--nnodes=1", f"--nproc-per-node={nproc}",
        f"--log-dir={log_dir}", "--tee=3", f"--local-ranks-filter={STREAMED_RANK}", str(script),
        *args])


DRIVER = """
import json, sys
from mgft.backends.local.submit import run
from mgft.render.local import LocalCommand
sys.exit(run(LocalCommand(**json.loads(sys.argv[1]))))
"""


def start(script: Path, log_dir: Path, *args: str) -> subprocess.Popen[str]:
    """`run` in a process of its own, as mgft runs it, to send signals to."""
    c = command(script, log_dir, *args)
    spec = json.dumps({"env": c.env, "argv": c.argv, "log_dir": c.log_dir})
    return subprocess.Popen([sys.executable, "-c", DRIVER, spec], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def running(pids: list[int]) -> list[int]:
    """The pids that still run (zombies count as gone)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            alive.append(pid)
    return alive


def processes_mentioning(text: str) -> list[int]:
    """Every process whose command line holds `text` (a test's own tmp path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry.name))
    return running(found)


def kill_all(pids: list[int]) -> None:
    """Clean up after a test that failed with its job's processes left running."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
