"""`mgft submit --preflight`: real 2-process torchrun runs on CPU; the checks run in every
process before the process group, and a failed check stops the job before training."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Tiny

pytestmark = pytest.mark.e2e


def submit(tiny: Tiny, output: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mgft.cli", "submit", "--backend", "local", "--gpus", "0",
         "--nproc-per-node", "2", "--seq-len", "64", "--micro-batch", "4", "--max-steps", "2",
         "--model", str(tiny.model_dir), "--dataset", str(tiny.data), "--output", str(output),
         "--preflight", *extra], capture_output=True, text=True, timeout=300)


def test_preflight_passes_then_training_runs(tiny: Tiny, tmp_path: Path) -> None:
    proc = submit(tiny, tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mgft preflight (rank 0)" in proc.stderr
    # In the job the rendezvous check targets torchrun's own store, and it is up.
    assert "rendezvous" in proc.stderr and "open (" in proc.stderr
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_failed_preflight_stops_the_job_before_training(tiny: Tiny, tmp_path: Path) -> None:
    proc = submit(tiny, tmp_path / "run", "--nccl", "NCCL_SOCKET_IFNAME==nosuch0")
    assert proc.returncode == 1, proc.stderr[-3000:]
    # Every rank checks and reports; whichever fails first makes torchrun stop the other, so
    # the console (rank 0 only) may miss it, but the per-rank logs keep it.
    logs = proc.stderr + "".join(p.read_text() for p in (tmp_path / "run" / "logs").rglob("*.log"))
    assert re.search(r"mgft preflight: rank \d failed: nccl env: NCCL_SOCKET_IFNAME==nosuch0 "
                     r"matches no interface here", logs)
    assert not (tmp_path / "run" / "metrics.json").exists()
