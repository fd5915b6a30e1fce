"""`mgft submit --backend local`: a real 2-process torchrun on CPU/gloo, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Tiny

SUBMIT = [sys.executable, "-m", "mgft.cli", "submit", "--backend", "local", "--gpus", "0",
          "--nproc-per-node", "2", "--strategy", "ddp", "--seq-len", "64", "--micro-batch", "4",
          "--lr", "3e-3"]


def submit(tiny: Tiny, output: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SUBMIT, "--model", str(tiny.model_dir), "--dataset", str(tiny.data),
                           "--output", str(output), *extra],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def run(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory):
    output = tmp_path_factory.mktemp("submit") / "run"
    return output, submit(tiny, output, "--max-steps", "25")


def test_ddp_on_two_gloo_ranks_really_ran_and_learned(run) -> None:
    output, proc = run
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["backend"] == "gloo"
    assert metrics["strategy"] == "ddp"
    assert metrics["model_wrapper"] == "DistributedDataParallel"
    assert metrics["steps"] == 25
    assert metrics["last_loss"] < 0.8 * metrics["first_loss"], metrics["losses"]
    assert metrics["tokens_per_s"] > 0 and metrics["peak_memory_bytes"] > 0


def test_only_rank_0_streams_and_every_rank_is_logged(run) -> None:
    output, proc = run
    assert "[default0]:" in proc.stdout and "[default1]:" not in proc.stdout
    logs = sorted(p.relative_to(output / "logs").parts[-2:] for p in
                  (output / "logs").rglob("stdout.log"))
    assert logs == [("0", "stdout.log"), ("1", "stdout.log")]


def test_saved_adapter_reloads_and_was_trained(run, tiny: Tiny) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    output, _ = run
    base = AutoModelForCausalLM.from_pretrained(tiny.model_dir)
    model = PeftModel.from_pretrained(base, output / "adapter")
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b, "no LoRA weights in the saved adapter"
    # peft initialises lora_B to zeros: trained weights are not.
    assert any(torch.count_nonzero(p) > 0 for p in lora_b)


def test_trainer_exit_code_comes_back_and_results_are_not_overwritten(run, tiny: Tiny) -> None:
    output, _ = run
    before = (output / "metrics.json").read_bytes()
    proc = submit(tiny, output, "--max-steps", "2")
    assert proc.returncode == 2, proc.stderr[-2000:]
    # Whichever rank exits first, its reason reaches the console: rank 0 streams, and another
    # rank's log is shown when it failed first.
    assert "--output" in proc.stderr
    assert (output / "metrics.json").read_bytes() == before


RANK_1_FAILS_FIRST = """
import os, sys, time
if os.environ["LOCAL_RANK"] == "1":
    print("rank 1: --output /x holds a finished run; pick a new --output", file=sys.stderr)
    sys.exit(2)
time.sleep(60)  # rank 0 is stopped by torchrun before it says anything
"""


def test_a_silent_rank_that_fails_first_has_its_reason_shown(tmp_path: Path, capsys) -> None:
    from mgft.backends.local import run as run_local
    from mgft.render.local import STREAMED_RANK, LocalCommand

    script = tmp_path / "worker.py"
    script.write_text(RANK_1_FAILS_FIRST)
    log_dir = str(tmp_path / "logs")
    command = LocalCommand(env={}, log_dir=log_dir, argv=[
        "torchrun", "--standalone", "--nnodes=1", "--nproc-per-node=2", f"--log-dir={log_dir}",
        "--tee=3", f"--local-ranks-filter={STREAMED_RANK}", str(script)])
    assert run_local(command) == 2
    err = capsys.readouterr().err
    assert "local rank 1 failed first" in err
    assert "  [1] rank 1: --output /x holds a finished run; pick a new --output" in err
    assert err.rstrip().endswith(f"trainer exited with code 2 (rank 1); every rank's output is "
                                 f"under {log_dir}")
