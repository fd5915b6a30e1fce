"""Rules across fields that types alone cannot express. Pure: no I/O, but for reading a local
config.json to size a Slurm job's host memory against --mem (mgft.plan.host).

Each rule raises `SpecError` naming the field as the user wrote it, the value, and the fix.
"""

from __future__ import annotations

import dataclasses
import re

from mgft.contract.env import RESERVED
from mgft.spec.errors import fail
from mgft.spec.job import Backend, JobSpec, SlurmContainer, Strategy, Tuning
from mgft.spec.names import DNS1035, ENV_NAME, MAX_NAME_LEN
from mgft.spec.parallel_dims import ParallelDims
from mgft.spec.rules import compiled as compile_rules
from mgft.spec.rules import kernels as kernel_rules
from mgft.spec.rules import lora_dropout as dropout_rules
from mgft.spec.rules import slurm as slurm_rules
from mgft.spec.rules import tracking as tracking_rules
from mgft.spec.rules.generate import check_generate

_SLURM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d{2}){0,2}$")
# A docker image reference: registry/path:tag@digest, no spaces or shell specials.
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")
# peft target_modules: "all-linear" or module names (regex-free, so a typo cannot match widely).
_LORA_TARGETS = re.compile(r"^all-linear$|^[A-Za-z_][A-Za-z0-9_.]*(,[A-Za-z_][A-Za-z0-9_.]*)*$")



def check(spec: JobSpec) -> None:
    _check_strings(spec)
    _check_name(spec)
    _check_processes(spec)
    _check_tuning(spec)
    _check_precision(spec)
    _check_eval(spec)
    _check_report_to(spec)
    _check_restarts(spec)
    _check_env(spec)
    _check_dist(spec)
    _check_gpu_choice(spec)
    if spec.generate is not None:
        check_generate(spec)
    if spec.backend is Backend.LOCAL:
        _check_local(spec)
    elif spec.backend is Backend.K8S:
        _check_k8s(spec)
    elif spec.backend is Backend.SLURM:
        _check_slurm(spec)


def warnings(spec: JobSpec) -> list[str]:
    """Options of another backend, which this one ignores: a warning, not an error, since one
    YAML file may serve several backends."""
    from mgft.spec.flags import display_name

    found = tracking_rules.warnings(spec) if spec.backend is Backend.K8S else []
    paths = ["image"] if spec.backend is Backend.LOCAL and spec.image is not None else []
    for section, owner in (("k8s", Backend.K8S), ("slurm", Backend.SLURM)):
        if spec.backend is not owner:
            given, default = getattr(spec, section), type(getattr(spec, section))()
            paths += [f"{section}.{f.name}" for f in dataclasses.fields(given)
                      if getattr(given, f.name) != getattr(default, f.name)]
    if not paths:
        return found
    names = ", ".join(display_name(p) for p in paths)
    return found + [f"--backend {spec.backend.value} ignores {names} (options of another backend)"]


def _check_strings(spec: JobSpec) -> None:
    texts = {f"train.{k}": getattr(spec.train, k) for k in ("model", "dataset", "output")}
    for key in ("chat_template", "eval_dataset", "data_cache"):
        if getattr(spec.train, key) is not None:
            texts[f"train.{key}"] = getattr(spec.train, key)
    texts |= {f"env.{k}": v for k, v in spec.env.items()}
    for path, value in texts.items():
        if "\x00" in value:
            fail(path, value, "contains a NUL byte, which no path or argument can hold",
                  "remove it")


def _check_name(spec: JobSpec) -> None:
    name = spec.job_name
    if len(name) > MAX_NAME_LEN or not DNS1035.match(name):
        fail("name", name, f"not a DNS-1035 label of at most {MAX_NAME_LEN} characters",
              "use lowercase letters, digits and '-', starting with a letter and ending "
              "with a letter or digit, e.g. 'llama-lora-1'")


def _check_processes(spec: JobSpec) -> None:
    ParallelDims.of_spec(spec)  # refuses a process layout the strategy cannot run


def _check_tuning(spec: JobSpec) -> None:
    """Combinations of strategy, tuning and saving that cannot work, whatever the hardware.

    (mp with a sharded strategy cannot even be asked for: --strategy is one choice.)
    """
    train = spec.train
    if train.tuning is Tuning.QLORA and train.strategy is Strategy.ZERO3_OFFLOAD:
        fail("train.tuning", train.tuning.value,
              "DeepSpeed's parameter offload moves 16/32-bit tensors, and the 4-bit base "
              "weights of qlora are packed bytes with their own quantization state",
              "use --strategy zero3 with qlora (the 4-bit base is already 4x smaller), "
              "or --tuning lora with zero3-offload")
    if train.save_merged and train.tuning is Tuning.FULL:
        fail("train.save_merged", train.save_merged,
              "--tuning full trains every weight and saves the whole model; there is no "
              "adapter to merge", "drop --save-merged")
    for problem in (kernel_rules.fp8_problem(train), dropout_rules.recompute_problem(train),
                    compile_rules.compile_problem(train)):
        if problem:
            flag, value, why, fix = problem
            fail(f"train.{flag.removeprefix('--').replace('-', '_')}", value, why, fix)
    if train.tuning is not Tuning.FULL and not _LORA_TARGETS.match(train.lora_targets):
        fail("train.lora_targets", train.lora_targets, "not all-linear or a list of module names",
              "use all-linear, or names separated by commas, e.g. q_proj,k_proj,v_proj,o_proj")


def _check_report_to(spec: JobSpec) -> None:
    if problem := tracking_rules.report_to_problem(spec.train.report_to):
        fail("train.report_to", ",".join(spec.train.report_to), *problem)


def _check_eval(spec: JobSpec) -> None:
    """One eval set, named once; the fraction's row count is checked by the trainer, which
    reads the rows."""
    train = spec.train
    if train.eval_dataset is not None and train.eval_split is not None:
        fail("train.eval_split", train.eval_split,
              f"--eval-dataset {train.eval_dataset} already names the eval set",
              "drop --eval-split to evaluate on that file, or drop --eval-dataset to hold out "
              "part of --dataset")
    if train.eval_every is not None and train.eval_dataset is None and train.eval_split is None:
        fail("train.eval_every", train.eval_every, "there is no eval set to evaluate on",
              "add --eval-dataset FILE or --eval-split FRACTION, or drop --eval-every")


def _check_precision(spec: JobSpec) -> None:
    train = spec.train
    if not train.precision.runs_under(train.strategy):
        fail("train.precision", train.precision.value,
              f"--strategy {train.strategy.value} steps DeepSpeed's ZeRO optimizer, which always "
              "keeps fp32 master weights", "use --precision mixed with ZeRO, or --strategy ddp, "
              "fsdp or mp for bf16 weights")


def _check_restarts(spec: JobSpec) -> None:
    if spec.max_restarts and spec.backend is not Backend.LOCAL:
        fail("max_restarts", spec.max_restarts,
              f"--backend {spec.backend.value} does not restart workers in this version",
              "drop --max-restarts (a rerun with the same --output resumes from the latest "
              "checkpoint)")


def _check_env(spec: JobSpec) -> None:
    for key in spec.env:
        if not ENV_NAME.match(key):
            fail(f"env.{key}", key, "not a valid environment variable name",
                  "use letters, digits and '_', not starting with a digit")
        if key in RESERVED:
            fail(f"env.{key}", key, "set by mgft or torchrun for every process",
                  "remove it; use the matching mgft option instead")


def _check_local(spec: JobSpec) -> None:
    if spec.resources.nodes != 1:
        fail("resources.nodes", spec.resources.nodes, "--backend local runs on this machine only",
              "use --nodes 1, or --backend slurm or k8s for several nodes")


def _check_k8s(spec: JobSpec) -> None:
    if spec.image is None:
        fail("image", None, "--backend k8s needs the container image that holds the trainer",
              "pass --image, e.g. --image ghcr.io/acme/mgft:cuda")
    _check_image(spec)
    from mgft.spec.rules import k8s as k8s_rules

    k8s_rules.check(spec)


def _check_slurm(spec: JobSpec) -> None:
    if spec.slurm.container is not SlurmContainer.APPTAINER:  # also takes a .sif path
        _check_image(spec)
    part = spec.slurm.partition
    if part is not None and not _SLURM_NAME.match(part):
        fail("slurm.partition", part, "not a Slurm partition name",
              "use letters, digits, '_', '.' and '-' (see `sinfo -s`)")
    if not _SLURM_TIME.match(spec.slurm.time):
        fail("slurm.time", spec.slurm.time, "not a Slurm time limit",
              "use minutes, HH:MM:SS or D-HH:MM:SS, e.g. 04:00:00")
    slurm_rules.check(spec)
    if spec.slurm.mem is None:
        return  # no --mem to size the job's host memory against (nor the planner to import)
    from mgft.plan import host  # reads a local config.json, when there is one

    host.check(spec, host.slurm_mem_bytes(spec.slurm.mem), f"--mem {spec.slurm.mem}")


def _check_image(spec: JobSpec) -> None:
    if spec.image is not None and not _IMAGE.match(spec.image):
        fail("image", spec.image, "not a container image reference",
              "use registry/name:tag, e.g. ghcr.io/acme/mgft:cuda")


def _check_dist(spec: JobSpec) -> None:
    from mgft.comm.nccl import check_keys
    from mgft.spec.job import Fabric

    for key in spec.dist.nccl:
        if not ENV_NAME.match(key):
            fail(f"dist.nccl.{key}", key, "not a valid environment variable name",
                  "use letters, digits and '_', e.g. --nccl NCCL_SOCKET_IFNAME=eth0")
    check_keys(spec.dist.nccl)
    if spec.on_cpu and spec.dist.fabric is not Fabric.AUTO:
        fail("dist.fabric", spec.dist.fabric.value, "a preset for NCCL, and --gpus 0 runs on "
              "CPU with gloo", "drop --fabric, or set --gpus")


def _check_gpu_choice(spec: JobSpec) -> None:
    res = spec.resources
    local = spec.backend is Backend.LOCAL
    if res.gpu_ids is not None:
        shown = ",".join(res.gpu_ids)
        if not local:
            fail("resources.gpu_ids", shown, f"--backend {spec.backend.value} lets the "
                  "scheduler place the job on GPUs", "drop --gpu-ids; use --gpus for the count")
        if not res.gpu_ids:
            fail("resources.gpu_ids", shown, "names no GPU", "list GPUs, e.g. --gpu-ids 0,2")
        if res.gpus != len(res.gpu_ids):
            fail("resources.gpu_ids", shown, f"names {len(res.gpu_ids)} GPUs and --gpus is "
                  f"{res.gpus}", f"drop --gpus, or set it to {len(res.gpu_ids)}")
    if res.exclusive and not local:
        fail("resources.exclusive", True, f"--backend {spec.backend.value} lets the scheduler "
              "decide who shares a GPU", "drop --exclusive (ask the scheduler for whole GPUs)")
