"""Preemption and restarts, end to end on CPU/gloo with 2 ranks.

A stop signal reaching one rank only stops every rank after the same step, with a
checkpoint and exit code 75; the same command then resumes, and its losses equal the
uninterrupted run's bit for bit. A rank killed with -9 under `mgft submit --max-restarts`
is restarted by torchrun with the others, from the latest checkpoint, to the same end.
"""

from __future__ import annotations

import signal
import sys

import pytest
from mgft.contract import exitcodes

from tests.trainer import jobs
from tests.trainer.cases import STEPS, flags

pytestmark = pytest.mark.e2e

EXTRA = {"fsdp": ("--save-merged=true",), "zero3": ("--save-merged=true",)}


@pytest.mark.parametrize("strategy,sig", [("ddp", signal.SIGUSR2), ("fsdp", signal.SIGTERM),
                                          ("zero2", signal.SIGUSR2), ("zero3", signal.SIGTERM)])
def test_signal_on_one_rank_checkpoints_exits_75_and_the_rerun_resumes_exactly(
        strategy, sig, tiny, trainer_job, cpu_job_env, fresh_output):
    argv = flags(strategy, "lora", *EXTRA.get(strategy, ()))
    reference = trainer_job(*argv).metrics
    cmd = jobs.torchrun() + jobs.trainer_argv(tiny, fresh_output, *argv)

    cut = jobs.run_and_hit(cmd, cpu_job_env, fresh_output, when="step 3/", rank=1, sig=sig)

    assert cut.returncode != 0
    # Both ranks exited 75 (torchrun lists each failed worker's own exit code).
    assert cut.output.count(f"exitcode  : {exitcodes.PREEMPTED} ") == 2, cut.output[-3000:]
    stopped = [line for line in cut.output.splitlines() if "mgft-train: stopped by" in line]
    assert len(stopped) == 1 and "another rank" in stopped[0]  # rank 0 was not signalled
    assert not (fresh_output / "metrics.json").exists()
    checkpoints = sorted((fresh_output / "checkpoints").glob("step-*"))
    assert checkpoints, "no checkpoint written before exiting"
    stop_step = int(checkpoints[-1].name.removeprefix("step-"))
    assert 3 <= stop_step < STEPS

    resumed = jobs.run(cmd, cpu_job_env, fresh_output).check()

    assert f"resuming from {checkpoints[-1]} (step {stop_step} of {STEPS})" in resumed.output
    m = resumed.metrics
    assert m["resumed_from_step"] == stop_step
    assert m["data_cache"]["result"] == "hit"  # as the cut run tokenized it (<output>/data-cache)
    assert m["strategy"] == strategy
    assert m["losses"] == reference["losses"]  # bitwise: model, optimizer, schedule, RNG, data
    assert m["tokens"] == reference["tokens"]
    # Eval points before the stop come from the checkpoint, the later ones from this run.
    assert m["eval"]["points"] == reference["eval"]["points"]


def test_killed_rank_is_restarted_by_torchrun_and_finishes_like_an_uninterrupted_run(
        tiny, trainer_job, cpu_job_env, fresh_output):
    """`mgft submit --max-restarts 2`: rank 1 dies with SIGKILL mid-run; torchrun restarts
    both workers, which resume from the latest checkpoint and end where the reference ends."""
    reference = trainer_job(*flags("ddp")).metrics
    submit = [sys.executable, "-m", "mgft.cli", "submit", "--backend", "local", "--gpus", "0",
              "--nproc-per-node", "2", "--max-restarts", "2", "--model", str(tiny.model_dir),
              "--dataset", str(tiny.data), "--output", str(fresh_output), "--seq-len", "64",
              "--micro-batch", "4", "--lr", "3e-3", "--seed", "0", "--strategy", "ddp",
              "--max-steps", str(STEPS), "--save-every", "10", "--no-packing",
              "--eval-dataset", str(tiny.eval_data), "--eval-every", str(jobs.EVAL_EVERY)]
    # Rank 0's lines reach mgft's stdout with torchrun's "[default0]:" prefix.
    job = jobs.run_and_hit(submit, cpu_job_env, fresh_output, when="[default0]:step 12/",
                           rank=1, sig=signal.SIGKILL)
    job.check()
    m = job.metrics
    assert m["restart_count"] >= 1
    assert m["resumed_from_step"] is not None and m["resumed_from_step"] >= 10
    assert m["losses"] == reference["losses"]
    # Eval points up to the checkpoint come from it; the later ones, from the restarted run.
    assert m["eval"]["points"] == reference["eval"]["points"]


def test_a_damaged_latest_checkpoint_is_skipped_for_the_one_before(
        tiny, trainer_job, cpu_job_env, fresh_output):
    """The reference run's last two checkpoints (steps 20 and 30), the newest with an empty
    trainer_state.json: the rerun says so in one line, resumes from step 20, and ends where
    the reference ends."""
    import shutil

    argv = flags("ddp")
    reference = trainer_job(*argv)
    shutil.copytree(reference.out / "checkpoints", fresh_output / "checkpoints")
    damaged = fresh_output / "checkpoints" / f"step-{STEPS:08d}"
    (damaged / "trainer_state.json").write_text("")
    previous = fresh_output / "checkpoints" / f"step-{STEPS - 10:08d}"

    job = jobs.run(jobs.torchrun() + jobs.trainer_argv(tiny, fresh_output, *argv),
                   cpu_job_env, fresh_output).check()

    lines = [line for line in job.output.splitlines() if "skipping damaged" in line]
    assert len(lines) == 1, job.output[-3000:]
    assert lines[0].startswith(f"mgft-train: skipping damaged checkpoint {damaged}: "
                               "trainer_state.json holds 0 bytes where ")
    assert lines[0].endswith(f"; falling back to {previous}")
    m = job.metrics
    assert m["resumed_from_step"] == STEPS - 10
    assert m["skipped_checkpoints"] == [lines[0].split("checkpoint ", 1)[1].split("; falling")[0]]
    assert m["losses"] == reference.metrics["losses"]
