"""Specs the renderer tests share: the README's examples and a few edges."""

from __future__ import annotations

from typing import Any

from mgft.spec.build import build_spec, merge
from mgft.spec.job import JobSpec

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


def k8s_options(api: str) -> dict[str, JobSpec]:
    """Every Kubernetes option, alone or together, on top of the README's example."""
    common = {"backend": "k8s", "image": IMAGE, "k8s.api": api, "resources.gpus": 4,
              "resources.nodes": 2, "train.strategy": "zero2", "name": "llama-ft"}
    pod = {"k8s.config_map": True, "k8s.pvc_size": "200Gi", "k8s.storage_class": "fast-rwx",
           "k8s.hf_token_secret": "hf-token", "k8s.wandb_secret": "wandb:key",
           "k8s.secret_env": {"S3_KEY": "s3-creds:secret"},
           "k8s.image_pull_secrets": ["regcred", "mirror"],
           "k8s.node_selector": {"nvidia.com/gpu.product": "H100-SXM", "pool": "train"},
           "k8s.tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                "effect": "NoSchedule"},
                               {"key": "team", "value": "ml", "effect": "NoExecute"}],
           "k8s.kueue_queue": "team-a", "env.WANDB_PROJECT": "ft", "env.A_FIRST": "$(HOME)",
           "k8s.shm_size": "64Gi"}
    out = {"all": spec(**common | pod),
           "existing-claim": spec(**common | {"k8s.pvc": "shared-ckpt",
                                              "k8s.mount_path": "/mnt/ckpt"}),
           "open": spec(**common | {"k8s.pod_security": "none"})}
    if api == "pytorchjob":
        out["volcano"] = spec(**common | {"k8s.volcano_queue": "gpu",
                                          "k8s.priority_class": "high", "k8s.backoff_limit": 5})
        out["elastic"] = spec(**common | {"resources.nodes": 3, "k8s.elastic_min_nodes": 2,
                                          "k8s.elastic_max_nodes": 4, "k8s.max_restarts": 3})
    return out
