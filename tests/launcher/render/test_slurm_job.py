"""The Slurm job's parts, and that the rendered script and submitit ask for the same job."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from mgft.contract.process import trainer_argv
from mgft.render import slurm_job as options
from mgft.render.sbatch import render_sbatch

from tests.launcher.render import cases
from tests.launcher.render.stubs import run_recorded

FULL = {"backend": "slurm", "resources.nodes": 2, "resources.gpus": 4,
        "slurm.partition": "gpu", "slurm.account": "ml-team", "slurm.qos": "high",
        "slurm.reservation": "maint_1", "slurm.constraint": "a100&ib", "slurm.mem": "200G",
        "slurm.exclusive": True, "slurm.time": "2-00:00:00", "slurm.signal_before_s": 300,
        "slurm.sbatch_extra": ["--mail-type=END,FAIL", "--gres-flags=enforce-binding"]}
SLURM_ENV = {"SLURM_JOB_ID": "501", "SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "gpu[3-4]"}


def sbatch_lines(script: str) -> dict[str, str | None]:
    """#SBATCH options as sbatch reads them (it takes quotes off, as submitit uses them)."""
    found: dict[str, str | None] = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH --"):
            name, sep, value = line.removeprefix("#SBATCH --").partition("=")
            found[name] = shlex.split(value)[0] if sep else None
    return found


def test_every_option_reaches_the_script() -> None:
    lines = sbatch_lines(render_sbatch(cases.spec(**FULL)))
    assert {k: lines[k] for k in ("partition", "account", "qos", "reservation", "constraint",
                                   "mem", "gpus-per-node", "time", "mail-type")} == {
        "partition": "gpu", "account": "ml-team", "qos": "high", "reservation": "maint_1",
        "constraint": "a100&ib", "mem": "200G", "gpus-per-node": "4", "time": "2-00:00:00",
        "mail-type": "END,FAIL"}
    assert lines["exclusive"] is None and lines["requeue"] is None
    assert "gres-flags" in lines
    assert lines["signal"] == "USR2@300" and lines["open-mode"] == "append"


def test_submitit_asks_for_the_same_job() -> None:
    """submitit's own sbatch text for the parameters mgft gives it, against the render."""
    from submitit.slurm.slurm import _make_sbatch_string

    spec = cases.spec(**FULL)
    params = options.submitit_parameters(spec)
    submitted = sbatch_lines(_make_sbatch_string(command="run", folder="/logs", **params))
    rendered = sbatch_lines(render_sbatch(spec))
    # Log paths differ on purpose (submitit's folder vs. NAME-%j.out); the time limit is
    # given to submitit in minutes.
    for lines in (submitted, rendered):
        for name in ("output", "error", "time"):
            lines.pop(name, None)
    assert submitted == rendered
    assert params["time"] == 2 * 24 * 60
    assert "--kill-on-bad-exit=1" in params["srun_args"]


@pytest.mark.parametrize("node_id", ["0", "1"])
def test_pyxis_runs_the_node_task_in_the_image(node_id: str, tmp_path: Path) -> None:
    spec = cases.spec(**{"backend": "slurm", "resources.nodes": 2, "resources.gpus": 8,
                         "image": "nvcr.io/acme/mgft:1", "slurm.container": "pyxis",
                         "slurm.container_mounts": ["/lustre:/lustre", "/models:/models:ro"],
                         "train.model": "/models/llama", "train.dataset": "/lustre/d.jsonl",
                         "train.output": "/lustre/runs/a"})
    srun = ('#!/bin/bash\nprintf "%s\\n" "$@" > "$RECORD_DIR/srun"\n'
            'while [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n')
    argv, env = run_recorded(render_sbatch(spec), tmp_path, SLURM_ENV | {"SLURM_NODEID": node_id},
                             stubs={"srun": srun})
    srun_args = (tmp_path / "srun").read_text().split("\n")
    assert "--container-image=nvcr.io/acme/mgft:1" in srun_args
    assert "--container-mounts=/lustre:/lustre,/models:/models:ro" in srun_args
    assert argv[:6] == ["--nnodes=2", "--nproc-per-node=8", "--rdzv-backend=c10d",
                        "--rdzv-endpoint=gpu3:20501", "--rdzv-id=501",
                        "--log-dir=/lustre/runs/a/logs"]
    assert argv[7:] == trainer_argv(spec)
    assert env["PET_RDZV_CONF"] == f"is_host={int(node_id == '0')}"


def test_apptainer_wraps_the_node_task(tmp_path: Path) -> None:
    spec = cases.spec(**{"backend": "slurm", "resources.gpus": 2, "image": "/images/mgft.sif",
                         "slurm.container": "apptainer", "slurm.container_mounts": ["/data"],
                         "train.model": "/data/m", "train.dataset": "/data/d.jsonl",
                         "train.output": "/data/out"})
    # A stand-in apptainer: records its options and image, then runs the rest.
    apptainer = ('#!/bin/bash\nprintf "%s\\n" "$@" > "$RECORD_DIR/apptainer"\n'
                 'shift; while [ "${1#-}" != "$1" ]; do [ "$1" = --bind ] && shift; shift; done\n'
                 'shift; exec "$@"\n')
    argv, _ = run_recorded(render_sbatch(spec), tmp_path, SLURM_ENV,
                           stubs={"apptainer": apptainer})
    words = (tmp_path / "apptainer").read_text().split("\n")
    assert words[:6] == ["exec", "--nv", "--bind", "/data", "/images/mgft.sif", "python3"]
    assert argv[-len(trainer_argv(spec)):] == trainer_argv(spec)
