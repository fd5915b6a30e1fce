"""bench/perf.py end to end on CPU: the tiny Llama, 2 gloo processes per side, mgft through
`mgft submit --backend local` and the TRL recipe through torchrun, in one invocation (~40 s).
A run mgft refuses (mp on CPU) goes first: it must be recorded while the others complete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from perf_runs import BASE_SAMPLES_PER_STEP, BATCH_TOLERANCE, LOSS_TOLERANCE

from tests.conftest import REPO

PERF = REPO / "bench" / "perf.py"
RUNS = ["mgft-lora-mp-2g", "mgft-lora-ddp-2g", "base-lora-ddp-2g"]
LO, HI, SEQ_LEN, STEPS = 16, 128, 128, 12


def perf(out: Path, work: Path, *flags: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([sys.executable, str(PERF), "--tiny", "--out", str(out), "--work",
                           str(work), "--lengths", f"{LO}:{HI}", "--seq-len", str(SEQ_LEN),
                           "--steps", str(STEPS), *flags], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("perf")
    proc = perf(root / "out", root / "work", "--only", ",".join(RUNS))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((root / "out" / "perf.json").read_text())
    return root, proc.stdout, result, {r["name"]: r for r in result["runs"]}


@pytest.mark.e2e
def test_the_refused_run_is_recorded_and_the_matrix_goes_on(bench):
    _, stdout, result, runs = bench
    assert [r["name"] for r in result["runs"]] == RUNS
    refused = runs["mgft-lora-mp-2g"]
    assert refused["status"] == "failed" and refused["exit"] == 2
    assert "--strategy mp" in refused["error"]
    assert runs["mgft-lora-ddp-2g"]["status"] == runs["base-lora-ddp-2g"]["status"] == "ok"
    assert [line.split("]")[0] for line in stdout.splitlines() if line.startswith("[")] == \
        ["[1/3", "[2/3", "[3/3"]  # a progress line per run


@pytest.mark.e2e
def test_both_sides_ran_distributed_on_two_gloo_processes(bench):
    _, _, _, runs = bench
    for name in ("mgft-lora-ddp-2g", "base-lora-ddp-2g"):
        ran = runs[name]["ran"]
        assert (ran["strategy"], ran["world_size"], ran["backend"]) == ("ddp", 2, "gloo"), name
        assert runs[name]["ran_as_requested"]
        assert runs[name]["steps"] == STEPS == len(runs[name]["losses"])
    assert runs["base-lora-ddp-2g"]["ran"]["model_wrapper"] == "DistributedDataParallel"
    # The recipe as TRL 1.16 ships it: activation checkpointing on by default, no packing.
    settings = runs["base-lora-ddp-2g"]["recipe"]["settings"]
    assert settings["gradient_checkpointing"] is True
    assert settings["packing"] is False
    assert (settings["per_device_train_batch_size"], settings["gradient_accumulation_steps"]) \
        == (2, 4)


@pytest.mark.e2e
def test_real_token_counts_fit_the_datasets_lengths(bench):
    _, _, result, runs = bench
    world = 2
    base, mgft = runs["base-lora-ddp-2g"], runs["mgft-lora-ddp-2g"]
    # The recipe's step is 8 whole rows per process, each LO..HI tokens, padding not counted.
    samples = BASE_SAMPLES_PER_STEP * world
    steps = base["step_tokens"]
    assert len(steps) == STEPS
    assert all(samples * LO <= t <= samples * HI for t in steps)
    assert sum(steps) == base["tokens"]
    mean_len = result["data"]["mean_len"]
    assert base["tokens"] / (STEPS * samples) == pytest.approx(mean_len, rel=0.15)
    # mgft's step is micro-batch packs of at most seq-len tokens per process.
    mb = mgft["config"]["micro_batch"]
    assert mgft["tokens_per_step"] <= mb * world * SEQ_LEN
    assert mgft["tokens_per_step"] == pytest.approx(
        mb * world * result["data"]["mgft_mean_pack_tokens"], rel=0.10)


@pytest.mark.e2e
def test_same_global_batch_and_the_same_loss_curve(bench):
    _, _, _, runs = bench
    base, mgft = runs["base-lora-ddp-2g"], runs["mgft-lora-ddp-2g"]
    assert abs(mgft["tokens_per_step"] / base["tokens_per_step"] - 1) <= BATCH_TOLERANCE
    for r in (base, mgft):
        assert r["last_loss"] < r["first_loss"] - 0.5, r["name"]  # both learn
    # Same seeded random init: before step 1 both models are the same function.
    assert mgft["first_loss"] == pytest.approx(base["first_loss"], abs=0.15)
    from perf_runs import loss_gap

    gap = loss_gap(mgft["loss_curve"], base["loss_curve"])
    assert gap is not None and gap <= LOSS_TOLERANCE


@pytest.mark.e2e
def test_each_run_reports_throughput_mfu_memory_and_time_to_first_step(bench):
    _, _, result, runs = bench
    assert result["matmul"]["devices"][0]["tflops"] > 0
    for name in ("mgft-lora-ddp-2g", "base-lora-ddp-2g"):
        r = runs[name]
        assert r["tokens_per_s_per_gpu"] > 0
        assert 0 < r["mfu"] < 1
        assert r["flops_per_token"] == result["flops_per_token"]["lora"]["total"]
        assert len(r["peak_gib_per_gpu"]) == 2 and min(r["peak_gib_per_gpu"]) > 0
        assert 0 < r["time_to_first_step_s"] < r["wall_s"]
    mgft = runs["mgft-lora-ddp-2g"]
    assert mgft["config"] == {
        "arch": "tiny", "tuning": "lora", "strategy": "ddp", "gpus": 2,
        # the micro-batch the bench chose to match the baseline's tokens per step, as passed
        "micro_batch": result["global_batch"]["mgft_micro_batch"], "grad_accum": 1,
        "seq_len": SEQ_LEN, "kernels": "auto",
        # no fused kernel runs on the CPU; LoRA's dropout is peft's, stored (2 blocks x 7
        # layers): recomputing it is --lora-dropout-recompute's choice
        "kernels_used": "lora-dropout:stored:14-adapters",
        "packing": True, "activation_checkpointing": False, "lora_r": 16,
        "peak_gib_per_gpu": pytest.approx(max(mgft["peak_gib_per_gpu"]), abs=1e-3)}
    for key in ("torch", "transformers", "peft", "trl"):
        assert key in result["versions"]
    assert "--only" in result["command"]


@pytest.mark.e2e
def test_table_and_chart_are_written(bench):
    root, _, _, _ = bench
    md = (root / "out" / "perf.md").read_text()
    for name in RUNS:
        assert f"| {name} |" in md
    assert "| mgft-lora-ddp-2g | ok | ddp x2 |" in md
    assert (root / "out" / "perf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (root / "out" / "runs" / "base-lora-ddp-2g.log").is_file()


@pytest.mark.e2e
def test_done_runs_are_skipped_and_other_settings_refused(bench):
    root, _, result, _ = bench
    again = perf(root / "out", root / "work", "--only", "mgft-lora-ddp-2g,base-lora-ddp-2g")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("done earlier, skipped") == 2
    after = json.loads((root / "out" / "perf.json").read_text())
    assert after["runs"] == result["runs"]
    other = perf(root / "out", root / "work", "--steps", "3")
    assert other.returncode == 2
    assert "steps=12 (now 3)" in other.stderr and "--fresh" in other.stderr


def test_the_recipe_refuses_a_strategy_it_lacks_in_one_line():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "perf_baseline.py"), "--model",
                           "m", "--dataset", "d", "--output", "o", "--strategy", "mp",
                           "--tuning", "lora", "--max-steps", "1", "--lr", "1e-4"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "perf_baseline: error: --strategy mp: not part of the recipe; use one of ddp, fsdp, "
        "zero1, zero2, zero3"]


def test_bad_run_names_are_refused_before_anything_runs(tmp_path):
    proc = perf(tmp_path / "out", tmp_path / "work", "--only", "mgft-lora-ddp-2g,trl-lora-ddp-2g")
    assert proc.returncode == 2
    assert "impl 'trl'" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_run_past_its_timeout_is_ended_with_everything_it_started(tmp_path):
    from perf import launch

    pids = tmp_path / "pids"
    # A launcher that starts a worker and waits, as torchrun does.
    script = f"sleep 300 & echo $! > {pids}; wait"
    code, wall = launch(["bash", "-c", script], dict(os.environ), tmp_path / "log", timeout=2)
    assert code == "timeout"
    assert wall < 30
    worker = int(pids.read_text())
    assert not Path(f"/proc/{worker}").exists() or \
        Path(f"/proc/{worker}/stat").read_text().split()[2] == "Z"
    assert (tmp_path / "log").read_text().startswith("$ bash -c ")


@pytest.mark.parametrize("log, why", [
    ("[default0]:Traceback (most recent call last):\n[default0]:torch.OutOfMemoryError: CUDA "
     "out of memory.\ntorch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
     "Root Cause (first observed failure):\n", "[default0]:torch.OutOfMemoryError: CUDA out of "
     "memory."),
    ("[rank0]: perf_baseline: error: --strategy mp: not part of the recipe\nE1121 failed\n",
     "[rank0]: perf_baseline: error: --strategy mp: not part of the recipe"),
    ("loading\nKilled\n", "Killed"),
])
def test_a_failed_runs_record_names_the_cause_not_torchruns_summary(tmp_path, log, why):
    from perf import _error

    (tmp_path / "log").write_text(f"$ cmd\n{log}")
    assert _error(tmp_path / "log")["error"] == why
