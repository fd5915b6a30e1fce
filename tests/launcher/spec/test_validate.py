from __future__ import annotations

from typing import Any

import pytest
from mgft.spec.build import build_spec, merge
from mgft.spec.errors import SpecError

BASE = {"train.model": "/m", "train.dataset": "/d.jsonl"}


def fails(**flags: Any) -> SpecError:
    with pytest.raises(SpecError) as err:
        build_spec(merge({}, BASE | flags, []))
    return err.value


@pytest.mark.parametrize("flags,field,value,fix", [
    ({"resources.nodes": 0}, "--nodes", 0, "1 or more"),
    ({"train.strategy": "zero4"}, "--strategy", "zero4", "zero2"),
    ({"name": "Bad_Name"}, "--name", "Bad_Name", "lowercase"),
    ({"name": "a" * 49}, "--name", "a" * 49, "lowercase"),
    ({"resources.gpus": 0, "train.strategy": "mp"}, "--strategy", "mp", "--gpus 2"),
    ({"resources.gpus": 0, "train.strategy": "zero3-offload"}, "--strategy", "zero3-offload",
     "--gpus"),
    ({"resources.gpus": 4, "resources.nproc_per_node": 2}, "--nproc-per-node", 2, "set it to 4"),
    ({"resources.gpus": 1, "train.strategy": "mp"}, "--gpus", 1, "--gpus 2"),
    ({"resources.gpus": 2, "train.strategy": "mp", "resources.nproc_per_node": 2},
     "--nproc-per-node", 2, "set it to 1"),
    ({"resources.nodes": 2}, "--nodes", 2, "--backend slurm or k8s"),
    ({"backend": "k8s"}, "--image", None, "--image"),
    ({"backend": "k8s", "image": "a b"}, "--image", "a b", "registry/name:tag"),
    ({"backend": "k8s", "image": "r/i", "k8s.namespace": "Team"}, "--namespace", "Team",
     "lowercase"),
    ({"backend": "k8s", "image": "r/i", "k8s.shm_size": "8 GB"}, "--shm-size", "8 GB", "16Gi"),
    ({"backend": "slurm", "slurm.partition": "gpu;rm"}, "--partition", "gpu;rm", "sinfo"),
    ({"backend": "slurm", "slurm.time": "1h"}, "--time", "1h", "HH:MM:SS"),
    ({"env.RANK": "3"}, "--env RANK", "RANK", "remove it"),
    ({"env.1BAD": "x"}, "--env 1BAD", "1BAD", "letters"),
    ({"train.model": "a\x00b"}, "--model", "a\x00b", "remove it"),
    ({"train.lr": "fast"}, "--lr", "fast", "number"),
    ({"train.micro_batch": 0}, "--micro-batch", 0, "1 or more"),
    ({"resources.gpus": 4, "train.strategy": "zero3-offload", "train.tuning": "qlora"},
     "--tuning", "qlora", "--strategy zero3 with qlora"),
    ({"train.tuning": "full", "train.save_merged": True}, "--save-merged", True,
     "drop --save-merged"),
    ({"train.kernels": "fp8", "train.tuning": "qlora"}, "--kernels", "fp8", "--tuning lora"),
    ({"train.kernels": "fp8", "train.tuning": "full"}, "--kernels", "fp8", "--tuning lora"),
    ({"resources.gpus": 4, "train.kernels": "fp8", "train.strategy": "fsdp"}, "--kernels", "fp8",
     "--strategy ddp"),
    ({"train.kernels": "fp8", "train.strategy": "ddp", "train.save_merged": True},
     "--save-merged", True, "merge the saved adapter"),
    *(({"resources.gpus": 2, "train.lora_dropout_recompute": True, "train.strategy": s},
       "--lora-dropout-recompute", True, "--strategy ddp, zero1, zero2 or mp")
      for s in ("fsdp", "zero3", "zero3-offload")),
    *(({"resources.gpus": 2, "train.compile": "blocks", "train.strategy": s},
       "--compile", "blocks", "--strategy ddp") for s in ("fsdp", "zero2", "zero3", "mp")),
    ({"train.compile": "blocks", "train.lora_dropout_recompute": True}, "--compile", "blocks",
     "drop --lora-dropout-recompute"),
    ({"train.lora_targets": "q_proj;rm -rf"}, "--lora-targets", "q_proj;rm -rf",
     "q_proj,k_proj"),
    ({"backend": "slurm", "max_restarts": 2}, "--max-restarts", 2, "resumes"),
    ({"train.save_every": 0}, "--save-every", 0, "1 or more"),
    ({"resources.gpus": 4, "train.strategy": "zero2", "train.precision": "bf16-kahan"},
     "--precision", "bf16-kahan", "--precision mixed with ZeRO"),
    ({"resources.gpus": 4, "train.strategy": "zero3-offload", "train.precision": "bf16"},
     "--precision", "bf16", "--strategy ddp, fsdp or mp"),
    ({"train.precision": "fp8"}, "--precision", "fp8", "mixed"),
    ({"train.eval_dataset": "/e.jsonl", "train.eval_split": 0.1}, "--eval-split", 0.1,
     "drop --eval-split"),
    ({"train.eval_every": 10}, "--eval-every", 10, "--eval-dataset FILE or --eval-split"),
    ({"train.eval_split": 1.0}, "--eval-split", 1.0, "below 1"),
    ({"train.eval_split": 0}, "--eval-split", 0, "above 0"),
    ({"train.eval_dataset": "e\x00"}, "--eval-dataset", "e\x00", "remove it"),
])
def test_error_names_field_value_and_fix(flags: dict, field: str, value: Any, fix: str) -> None:
    err = fails(**flags)
    assert (err.field, err.value) == (field, value)
    assert fix in err.fix, err.fix


@pytest.mark.parametrize("flags", [
    {"resources.gpus": 0, "resources.nproc_per_node": 2},
    {"resources.gpus": 8, "train.strategy": "zero3"},
    {"resources.gpus": 2, "train.strategy": "mp"},
    {"backend": "slurm", "resources.nodes": 4, "slurm.time": "2-00:00:00",
     "slurm.partition": "a.b"},
    {"backend": "k8s", "image": "ghcr.io/a/b:c@sha256:00", "resources.nodes": 8},
    {"train.model": "-weird path/with 'quotes'", "env.HF_HOME": "$(not run)"},
    # QLoRA works with every data-parallel strategy and with mp (4-bit layers split by GPU).
    *({"resources.gpus": 2, "train.tuning": "qlora", "train.strategy": s}
      for s in ("ddp", "fsdp", "zero1", "zero2", "zero3", "mp")),
    {"resources.gpus": 0, "resources.nproc_per_node": 2, "train.tuning": "qlora",
     "train.strategy": "zero3"},
    {"train.save_merged": True, "train.strategy": "zero3", "train.lora_targets": "q_proj,v_proj"},
    {"max_restarts": 3, "train.save_every": 50, "train.keep_checkpoints": 5},
    *({"resources.gpus": 2, "train.tuning": "full", "train.strategy": s, "train.precision": p}
      for s in ("ddp", "fsdp", "mp") for p in ("bf16-kahan", "bf16")),
    {"resources.gpus": 2, "train.strategy": "zero3", "train.precision": "mixed"},
    {"train.eval_dataset": "/e.jsonl", "train.eval_every": 50},
    {"train.eval_split": 0.05},
    {"resources.gpus": 2, "train.kernels": "fp8", "train.strategy": "ddp"},
    *({"resources.gpus": 2, "train.lora_dropout_recompute": True, "train.strategy": s}
      for s in ("ddp", "zero1", "zero2", "mp")),
    *({"train.compile": "blocks", "train.tuning": t, "train.kernels": k,
       "train.activation_checkpointing": True}
      for t, k in (("lora", "fp8"), ("qlora", "auto"), ("full", "none"))),
    # --lora-dropout-recompute on a run with nothing to recompute (no dropout) is moot
    {"train.compile": "blocks", "train.lora_dropout_recompute": True, "train.lora_dropout": 0},
])
def test_valid_combinations_pass(flags: dict) -> None:
    build_spec(merge({}, BASE | flags, []))


@pytest.mark.parametrize("flags,warning", [
    ({"slurm.partition": "gpu", "k8s.namespace": "team", "image": "r/i"},
     "--backend local ignores --image, --namespace, --partition (options of another backend)"),
    ({"backend": "slurm", "k8s.namespace": "team"}, "--backend slurm ignores --namespace"),
    ({"backend": "k8s", "image": "r/i", "slurm.time": "1:00:00"},
     "--backend k8s ignores --time"),
])
def test_options_of_another_backend_are_one_warning(flags: dict, warning: str) -> None:
    from mgft.spec.validate import warnings

    texts = warnings(build_spec(merge({}, BASE | flags, [])))
    assert len(texts) == 1 and texts[0].startswith(warning), texts


def test_options_of_this_backend_warn_nothing() -> None:
    from mgft.spec.validate import warnings

    spec = build_spec(merge({}, BASE | {"backend": "slurm", "slurm.partition": "gpu"}, []))
    assert warnings(spec) == []
