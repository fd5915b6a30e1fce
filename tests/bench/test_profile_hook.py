"""bench/profile_hook: a kernel-level profile of a few steps of a real torchrun job, with the
trainer unchanged (2 gloo ranks on CPU here; on GPUs the table adds GPU time)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_hook_profiles_steps_6_to_8_of_every_rank(tiny, tmp_path):
    env = os.environ | {"MGFT_BENCH_PROFILE_DIR": str(tmp_path / "prof"),
                        "PYTHONPATH": os.pathsep.join(
                            [str(REPO / "bench/profile_hook"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "mgft.cli", "submit", "--backend", "local", "--gpus", "0",
           "--nproc-per-node", "2", "--model", str(tiny.model_dir), "--dataset", str(tiny.data),
           "--output", str(tmp_path / "run"), "--max-steps", "9", "--micro-batch", "4",
           "--seq-len", "64", "--save", "none"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for rank in (0, 1):
        text = (tmp_path / "prof" / f"rank{rank}.txt").read_text()
        assert text.startswith(f"rank {rank}: steps 6..8")
        assert "== by CPU time" in text and "DistributedDataParallel.forward" in text
        assert "gloo:all_reduce" in text  # the gradient and loss all-reduces were recorded
