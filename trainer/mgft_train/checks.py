"""Input checks that run before any process group exists, so a bad flag costs no rendezvous.

Every rank runs them on the same inputs and reaches the same verdict; only rank 0 prints it.
Dataset rows are validated too (`data.load_rows`), in `main`, for the same reason.
This module imports no torch: the launcher runs these checks too, for a local job, before
torchrun starts (`mgft.backends.local.inputs`).
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

from mgft.contract.env import DistEnv
from mgft.spec.job import Compile, Strategy, TrainSpec
from mgft.spec.rules.compiled import compile_problem
from mgft.spec.rules.kernels import fp8_problem
from mgft.spec.rules.lora_dropout import recompute_problem

from mgft_train import checkpoint, jsonrows
from mgft_train.errors import UsageError

# What a run leaves in --output; metrics.json is written last, so it marks a finished run.
FINISHED = "metrics.json"
RESULT_NAMES = (FINISHED, "adapter", "model", "merged")
WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
# Strategies that shard or replicate through a process group: meaningless without torchrun.
NEEDS_GROUP = frozenset({Strategy.FSDP, Strategy.ZERO1, Strategy.ZERO2, Strategy.ZERO3,
                         Strategy.ZERO3_OFFLOAD})


def check_inputs(spec: TrainSpec, env: DistEnv | None = None) -> Path | None:
    """All checks; returns the checkpoint to resume from, if --output holds one."""
    env = env or DistEnv()
    check_strategy(spec.strategy, env)
    check_precision(spec)
    check_kernels(spec)
    check_compiler(spec)
    check_model_dir(spec.model, random_init=spec.random_init)
    check_dataset_file(spec.dataset)
    check_eval(spec)
    resume = check_output_dir(spec.output)
    if resume is not None:
        checkpoint.check_resumable(resume, spec, env.world_size)
    return resume


def check_strategy(strategy: Strategy, env: DistEnv) -> None:
    if strategy in NEEDS_GROUP and not env.distributed:
        raise UsageError("--strategy", strategy.value,
                         "needs a process group, and this process was not started by torchrun",
                         "start it with torchrun (as `mgft submit` does), or use --strategy ddp "
                         "for a single process")
    if strategy is Strategy.MP and env.local_world_size != 1:
        raise UsageError("--strategy", strategy.value,
                         f"splits the model across the GPUs of one process per node, and "
                         f"{env.local_world_size} processes were started on this node",
                         "start one process per node (torchrun --nproc-per-node 1)")


def check_precision(spec: TrainSpec) -> None:
    """As the launcher checks it (mgft.spec.validate), for a trainer started by hand."""
    if not spec.precision.runs_under(spec.strategy):
        raise UsageError("--precision", spec.precision.value,
                         f"--strategy {spec.strategy.value} steps DeepSpeed's ZeRO optimizer, "
                         "which always keeps fp32 master weights",
                         "use --precision mixed with ZeRO, or --strategy ddp, fsdp or mp for "
                         "bf16 weights")


def check_kernels(spec: TrainSpec) -> None:
    """--kernels fp8's, --lora-dropout-recompute's and --compile's rules, as the launcher
    checks them, for a trainer started by hand (a --tuning full run would otherwise train
    without FP8, and a zero3 run store its dropout, and never say so)."""
    for problem in (fp8_problem(spec), recompute_problem(spec), compile_problem(spec)):
        if problem:
            raise UsageError(*problem)


def check_compiler(spec: TrainSpec) -> None:
    """--compile blocks needs a C compiler and Python's headers where it runs (Inductor's CPU
    kernels; Triton's launcher on GPUs); without them the first step would end in a
    compiler traceback after the model had loaded."""
    if spec.compile is Compile.NONE:
        return
    cc = os.environ.get("CC") or next(
        (found for name in ("gcc", "clang", "cc") if (found := shutil.which(name))), None)
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if cc is None or not headers.is_file():
        missing = "a C compiler (CC unset; no gcc, clang or cc on PATH)" if cc is None else \
            f"Python's headers ({headers})"
        raise UsageError("--compile", spec.compile.value, f"torch.compile needs {missing} on "
                         "this node", "install gcc and python3-dev (the mgft CUDA image has "
                         "them), or use --compile none")


def check_model_dir(model: str, *, random_init: bool = False) -> None:
    path = Path(model)
    fix = "pass a local model directory holding config.json, weights and tokenizer files"
    if not path.exists():
        raise UsageError("--model", model, "directory not found", fix)
    if not path.is_dir():
        raise UsageError("--model", model, "not a directory", fix)
    if not (path / "config.json").is_file():
        raise UsageError("--model", model, "no config.json in it", fix)
    if not random_init and not any(next(path.glob(g), None) for g in WEIGHT_GLOBS):
        raise UsageError("--model", model, "no weights in it (*.safetensors or *.bin)",
                         "copy the weights there, or pass --random-init to benchmark "
                         "with random weights")


def check_eval(spec: TrainSpec) -> None:
    """As the launcher checks it (mgft.spec.validate), for a trainer started by hand; the rows an
    --eval-split leaves on each side are checked as the data is read (`data.split`)."""
    if spec.eval_dataset is not None and spec.eval_split is not None:
        raise UsageError("--eval-split", spec.eval_split,
                         f"--eval-dataset {spec.eval_dataset} already names the eval set",
                         "drop --eval-split to evaluate on that file, or drop --eval-dataset "
                         "to hold out part of --dataset")
    if spec.eval_every is not None and spec.eval_dataset is None and spec.eval_split is None:
        raise UsageError("--eval-every", spec.eval_every, "there is no eval set to evaluate on",
                         "add --eval-dataset FILE or --eval-split FRACTION, or drop "
                         "--eval-every")
    if spec.eval_dataset is not None:
        check_dataset_file(spec.eval_dataset, "--eval-dataset")


def check_dataset_file(dataset: str, flag: str = "--dataset") -> None:
    """That it exists, its type, and its first rows; every row is checked by `data.files` as
    it is read."""
    if not Path(dataset).exists():
        raise UsageError(flag, dataset, "not found",
                         "pass an existing .jsonl, .json or .parquet file, or a directory "
                         "written by datasets' save_to_disk")
    jsonrows.check_head(dataset, flag)


def check_output_dir(output: str) -> Path | None:
    """A finished run (metrics.json) is never touched; an unfinished one with a checkpoint
    is resumed (returns that checkpoint); results without checkpoints are someone's."""
    path = Path(output)
    if path.exists() and not path.is_dir():
        raise UsageError("--output", output, "exists and is not a directory",
                         "pick a new --output directory")
    if (path / FINISHED).exists():
        raise UsageError("--output", output,
                         f"already holds a finished run's results ({FINISHED})",
                         "pick a new --output, or move the old results away")
    resume = checkpoint.resume_point(path)  # refuses one whose checkpoints are all damaged
    if resume is not None:
        return resume
    for name in RESULT_NAMES:
        if (path / name).exists():
            raise UsageError("--output", output,
                             f"already holds a previous run's results ({name})",
                             "pick a new --output, or move the old results away")
    return None
