"""`--strategy auto`: build_spec replaces it before validation and says what it chose."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mgft.plan.arch import KNOWN
from mgft.plan.auto import resolve_auto
from mgft.plan.memory import Job
from mgft.plan.pick import Budget, make_plan
from mgft.spec.build import build_spec, merge
from mgft.spec.errors import SpecError
from mgft.spec.job import Strategy, Tuning

K8S = {"backend": "k8s", "image": "r/i:t", "train.dataset": "/d.jsonl"}


def build(notes: list[str] | None = None, **flags):
    return build_spec(merge({}, K8S | flags, []), note=None if notes is None else notes.append,
                      resolve_auto=resolve_auto)


def test_auto_becomes_what_the_plan_recommends() -> None:
    notes: list[str] = []
    spec = build(notes, **{"train.model": "/models/Meta-Llama-3-8B", "train.strategy": "auto",
                           "train.tuning": "full", "resources.gpus": 8,
                           "train.micro_batch": 2})
    expected = make_plan(Job(arch=KNOWN["llama-3-8b"], tuning=Tuning.FULL, gpus_per_node=8,
                             micro_batch=2), Budget(gpu_memory_gib=80)).choice
    assert spec.train.strategy is expected is Strategy.ZERO2
    (note,) = notes
    assert note.startswith("--strategy auto: zero2 for llama-3-8b full on 8 x 80 GiB GPUs")
    assert "too big: ddp" in note


def test_gpu_memory_and_arch_options_steer_it() -> None:
    flags = {"train.model": "/models/custom", "train.strategy": "auto", "train.tuning": "full",
             "resources.gpus": 8, "train.micro_batch": 2, "plan.arch": "llama-3-8b"}
    assert build(**flags).train.strategy is Strategy.ZERO2
    assert build(**flags, **{"plan.gpu_memory_gib": 200}).train.strategy is Strategy.DDP
    # fp32 masters (16 bytes per parameter, 120 GiB) and DDP's buckets overflow 141 GiB;
    # bf16-kahan's 12 bytes fit
    big = flags | {"plan.gpu_memory_gib": 141}
    assert build(**big).train.strategy is Strategy.ZERO2
    assert build(**big, **{"train.precision": "bf16-kahan"}).train.strategy is Strategy.DDP


def test_model_directory_here_is_read(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(KNOWN["llama-3.2-1b"].hf_config()))
    notes: list[str] = []
    spec = build(notes, **{"train.model": str(tmp_path), "train.strategy": "auto"})
    assert spec.train.strategy is Strategy.DDP and "ddp for " in notes[0]


def test_same_name_as_choosing_the_strategy_by_hand() -> None:
    flags = {"train.model": "/m/llama-3-8b", "resources.gpus": 8, "train.tuning": "full"}
    auto = build(**flags, **{"train.strategy": "auto"})
    assert auto.job_name == build(**flags, **{"train.strategy": "zero2"}).job_name


@pytest.mark.parametrize("flags,field,needle", [
    ({"train.model": "/models/mystery"}, "--strategy", "cannot size --model /models/mystery"),
    ({"train.model": "/m", "plan.arch": "gpt-9"}, "--arch", "neither a config.json"),
    ({"train.model": "/m/llama-3-70b", "train.tuning": "full", "train.seq_len": 65536},
     "--strategy", "no strategy fits llama-3-70b"),
])
def test_what_auto_cannot_do_is_one_clear_error(flags, field, needle) -> None:
    with pytest.raises(SpecError) as err:
        build(**flags, **{"train.strategy": "auto", "resources.gpus": 1})
    assert err.value.field == field and needle in str(err.value)


def test_cpu_and_mp_rules() -> None:
    notes: list[str] = []
    cpu = build(notes, **{"train.model": "/m/x", "train.strategy": "auto", "resources.gpus": 0})
    assert cpu.train.strategy is Strategy.DDP and "on CPU" in notes[0]
    # 70B LoRA without checkpointing on 8 x 48 GiB: of the preferred strategies only splitting
    # the layers fits...
    flags = {"train.model": "/m/llama-3-70b", "train.strategy": "auto", "resources.gpus": 8,
             "train.micro_batch": 1, "plan.gpu_memory_gib": 48}
    assert build(**flags).train.strategy is Strategy.MP
    # ...and an explicit process per GPU rules mp out, leaving offload.
    per_gpu = build(**flags, **{"resources.nproc_per_node": 8})
    assert per_gpu.train.strategy is Strategy.ZERO3_OFFLOAD
    with pytest.raises(SpecError, match="no strategy fits"):
        build(**flags | {"plan.gpu_memory_gib": 40}, **{"resources.nproc_per_node": 8})


def test_render_prints_the_choice_on_stderr_and_the_job_on_stdout() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mgft.cli", "render", "--backend", "slurm", "--gpus", "8",
         "--model", "/models/Meta-Llama-3-8B", "--dataset", "/d.jsonl", "--strategy", "auto",
         "--tuning", "full", "--micro-batch", "2"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("mgft: --strategy auto: zero2 ")
    assert "--strategy=zero2" in proc.stdout and "--strategy=auto" not in proc.stdout


def test_the_plan_reads_kernels_packing_and_checkpointing_from_the_spec() -> None:
    from mgft.plan.memory import Job
    from mgft.spec.job import Kernels

    spec = build(**{"train.model": "/m/llama-3-8b", "resources.gpus": 4,
                    "train.kernels": "none", "train.packing": False,
                    "train.activation_checkpointing": True})
    job = Job.of_spec(spec, KNOWN["llama-3-8b"])
    assert (job.kernels, job.packing, job.checkpointing) == (Kernels.NONE, False, True)
    default = Job.of_spec(build(**{"train.model": "/m/llama-3-8b", "resources.gpus": 4}),
                     KNOWN["llama-3-8b"])
    assert (default.kernels, default.packing, default.checkpointing) == (
        Kernels.AUTO, True, False)
