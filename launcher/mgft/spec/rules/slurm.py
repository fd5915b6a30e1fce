"""Rules for the Slurm options. Pure: no I/O.

Slurm values land unquoted on `#SBATCH` lines, which sbatch splits on whitespace and quotes
itself, and in srun arguments. So each is held to the characters its Slurm syntax needs;
nothing else (spaces, quotes, `$`, backticks, `#`, newlines) can get through.
"""

from __future__ import annotations

import math
import re

from mgft.spec.errors import fail
from mgft.spec.job import JobSpec, SlurmContainer

_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MEM = re.compile(r"^[0-9]+[KMGT]?$")
# Features joined by & | , with brackets, parentheses and *count, as sbatch --constraint takes.
_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.&|,\[\]()*!:-]+$")
# An apptainer image: a local .sif path or a URI such as docker://ghcr.io/acme/mgft:cuda.
_APPTAINER_IMAGE = re.compile(r"^[A-Za-z0-9/][A-Za-z0-9._/:@+-]*$")
_MOUNT = re.compile(r"^[A-Za-z0-9_./+@:-]+$")  # SRC[:DST[:FLAGS]]; a comma would split it
_EXTRA = re.compile(r"^--([a-z][a-z0-9-]*)(=[A-Za-z0-9_.:/@+,%=\[\]-]+)?$")
# Options mgft sets from the spec or needs as they are: one task per node, USR2 before the
# limit, requeue, appended logs. Each maps to the option a user should use instead.
OWNED = {
    "job-name": "--name", "nodes": "--nodes", "ntasks": "--nodes", "ntasks-per-node": "--nodes",
    "gpus-per-node": "--gpus", "gpus": "--gpus", "cpus-per-task": "--cpus-per-task",
    "time": "--time", "partition": "--partition", "account": "--account", "qos": "--qos",
    "mem": "--mem", "constraint": "--constraint", "exclusive": "slurm.exclusive",
    "reservation": "--reservation", "signal": "slurm.signal_before_s",
    "requeue": None, "no-requeue": None, "open-mode": None, "output": None, "error": None,
    "array": None, "wrap": None, "chdir": None, "container-image": "--container",
}



def check(spec: JobSpec) -> None:
    s = spec.slurm
    for key in ("account", "qos", "reservation"):
        value = getattr(s, key)
        if value is not None and not _NAME.match(value):
            fail(f"slurm.{key}", value, f"not a Slurm {key} name",
                  "use letters, digits, '_', '.' and '-'")
    if s.mem is not None and not _MEM.match(s.mem):
        fail("slurm.mem", s.mem, "not a Slurm memory size",
              "use a number with an optional K, M, G or T suffix, e.g. 64G (0: all of it)")
    if s.constraint is not None and not _CONSTRAINT.match(s.constraint):
        fail("slurm.constraint", s.constraint, "not a Slurm constraint expression",
              "join feature names with & or |, e.g. a100&ib")
    if _TIME.match(s.time) and time_minutes(s.time) * 60 <= s.signal_before_s:
        fail("slurm.signal_before_s", s.signal_before_s,
              f"USR2 would come before the job starts: the time limit is {s.time}",
              "lower slurm.signal_before_s or raise --time")
    for item in s.sbatch_extra:
        _check_extra(item)
    _check_container(spec)
    if "CUDA_VISIBLE_DEVICES" in spec.env:
        fail("env.CUDA_VISIBLE_DEVICES", spec.env["CUDA_VISIBLE_DEVICES"],
              "Slurm sets it from the GPUs it allocates to each node",
              "remove it; ask for GPUs with --gpus (sbatch --gpus-per-node)")


def time_minutes(limit: str) -> int:
    """A Slurm time limit in whole minutes, rounded up (submitit counts in minutes)."""
    match = _TIME.match(limit)
    if not match:
        raise ValueError(f"not a Slurm time limit: {limit!r}")
    days, first, second, third = match.groups()
    parts = [int(p) for p in (first, second, third) if p is not None]
    if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = (parts + [0, 0])[:3]
        total = int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    elif len(parts) == 1:  # MM
        total = parts[0] * 60
    elif len(parts) == 2:  # MM:SS
        total = parts[0] * 60 + parts[1]
    else:  # HH:MM:SS
        total = parts[0] * 3600 + parts[1] * 60 + parts[2]
    return max(1, math.ceil(total / 60))


def _check_extra(item: str) -> None:
    match = _EXTRA.match(item)
    if not match:
        fail("slurm.sbatch_extra", item, "not one sbatch long option",
              "write one option per item as --name or --name=value, without spaces, quotes "
              "or '#SBATCH', e.g. --mail-type=END")
        return
    key = match.group(1)
    if key in OWNED:
        use = OWNED[key]
        fail("slurm.sbatch_extra", item, "mgft sets this option itself",
              f"use {use} instead" if use else "remove it")


def _check_container(spec: JobSpec) -> None:
    s = spec.slurm
    if s.container is SlurmContainer.NONE:
        if spec.image is not None:
            fail("image", spec.image, "--backend slurm runs on the nodes' own software unless "
                  "told which container runtime to use", "add --container pyxis or apptainer, "
                  "or drop --image")
        if s.container_mounts:
            fail("slurm.container_mounts", s.container_mounts, "mounts need a container",
                  "add --container pyxis or apptainer with --image")
        return
    if spec.image is None:
        fail("slurm.container", s.container.value, "needs the image to run",
              "pass --image, e.g. --image ghcr.io/acme/mgft:cuda or /images/mgft.sif")
    if s.container is SlurmContainer.APPTAINER and not _APPTAINER_IMAGE.match(spec.image):
        fail("image", spec.image, "not an apptainer image",
              "use a .sif path or a URI, e.g. /images/mgft.sif or docker://ghcr.io/acme/mgft:cuda")
    if (s.container is SlurmContainer.APPTAINER and "://" not in spec.image
            and not spec.image.startswith("/")):
        fail("image", spec.image, "a relative image path resolves against each node's working "
              "directory", "use an absolute .sif path or a URI, e.g. /images/mgft.sif")
    for key in ("model", "dataset", "eval_dataset", "output", "data_cache"):
        path = getattr(spec.train, key)
        if path not in (None, "none") and not path.startswith("/"):
            fail(f"train.{key}", path, "a relative path may not resolve inside the container",
                  "use an absolute path (mounted with slurm.container_mounts if need be)")
    for mount in s.container_mounts:
        if not _MOUNT.match(mount):
            fail("slurm.container_mounts", mount, "not a bind mount",
                  "write SRC or SRC:DST or SRC:DST:ro with no spaces or commas, e.g. "
                  "/scratch:/scratch")
        if not all(path.startswith("/") for path in mount.split(":")[:2]):
            fail("slurm.container_mounts", mount, "a relative path does not name the same "
                  "directory on every node and in the container",
                  "use absolute paths, e.g. /scratch:/scratch")
