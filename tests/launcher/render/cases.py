"""Specs the renderer tests share: the README's examples and a few edges."""

from __future__ import annotations

from typing import Any

from mgft.config import build_spec, merge
from mgft.spec import JobSpec

MODEL = "/models/llama"
DATASET = "/data/train.jsonl"
IMAGE = "ghcr.io/acme/mgft:cuda"


def spec(**flags: Any) -> JobSpec:
    base = {"train.model": MODEL, "train.dataset": DATASET}
    return build_spec(merge({}, base | flags, []))


def k8s(api: str) -> dict[str, JobSpec]:
    common = {"backend": "k8s", "image": IMAGE, "k8s.api": api}
    return {
        "zero2-2x4": spec(**common, **{"resources.gpus": 4, "resources.nodes": 2,
                                       "train.strategy": "zero2"}),
        "ddp-1x1": spec(**common, **{"resources.gpus": 1, "name": "llama-lora-1"}),
        "cpu-3x2": spec(**common, **{"resources.gpus": 0, "resources.nodes": 3,
                                     "resources.nproc_per_node": 2, "k8s.namespace": "ml-team",
                                     "env.WANDB_MODE": "offline"}),
    }


def slurm() -> dict[str, JobSpec]:
    common = {"backend": "slurm"}
    return {
        "fsdp-4x8": spec(**common, **{"resources.gpus": 8, "resources.nodes": 4,
                                      "train.strategy": "fsdp", "slurm.partition": "gpu"}),
        "cpu-2x2": spec(**common, **{"resources.gpus": 0, "resources.nodes": 2,
                                     "resources.nproc_per_node": 2, "slurm.time": "30"}),
    }


def local() -> dict[str, JobSpec]:
    return {
        "cpu-2": spec(**{"resources.gpus": 0, "resources.nproc_per_node": 2,
                         "train.output": "runs/demo", "train.max_steps": 20}),
        "gpu-4": spec(**{"resources.gpus": 4, "train.tuning": "full"}),
    }
