"""Kubernetes options: bad values stop before rendering, naming the option, value and fix."""

from __future__ import annotations

import pytest
from mgft.render import render
from mgft.spec.errors import SpecError

from tests.launcher.render import cases

K8S = {"backend": "k8s", "image": cases.IMAGE}


@pytest.mark.parametrize("flags,field,value,fix", [
    ({"k8s.pvc": "Bad_Claim"}, "--pvc", "Bad_Claim", "lowercase"),
    ({"k8s.pvc_size": "8 GB"}, "--pvc-size", "8 GB", "100Gi"),
    ({"k8s.storage_class": "fast"}, "--storage-class", "fast", "--pvc-size"),
    ({"k8s.mount_path": "relative/dir"}, "--mount-path", "relative/dir", "/workspace"),
    ({"k8s.mount_path": "/etc"}, "--mount-path", "/etc", "outside system paths"),
    ({"k8s.mount_path": "/a/../b"}, "--mount-path", "/a/../b", "normalized"),
    ({"k8s.hf_token_secret": "hf token"}, "--hf-token-secret", "hf token", "SECRET:KEY"),
    ({"k8s.secret_env": {"X": "no-key"}}, "k8s.secret_env.X", "no-key", "SECRET:KEY"),
    ({"k8s.secret_env": {"RANK": "s:k"}}, "k8s.secret_env.RANK", "RANK", "not a name mgft"),
    ({"k8s.wandb_secret": "w", "env.WANDB_API_KEY": "x"}, "--env WANDB_API_KEY",
     "WANDB_API_KEY", "keep secrets out of --env"),
    ({"k8s.image_pull_secrets": "ok,Not OK"}, "--image-pull-secret", "Not OK", "lowercase"),
    ({"k8s.node_selector": {"bad key!": "v"}}, "--node-selector", "bad key!", "key=value"),
    ({"k8s.tolerations": [{"operator": "Equal", "value": "x"}]}, "k8s.tolerations", None,
     "Exists"),
    ({"k8s.kueue_queue": "a", "k8s.volcano_queue": "b"}, "--volcano-queue", "b", "pick one"),
    ({"k8s.max_restarts": 3}, "--elastic-max-restarts", 3, "--elastic-min-nodes"),
    ({"k8s.elastic_min_nodes": 3, "resources.nodes": 2}, "--nodes", 2, "between 3 and 3"),
    ({"k8s.elastic_min_nodes": 3, "k8s.elastic_max_nodes": 2}, "--elastic-min-nodes", 3,
     "at most 2"),
    ({"k8s.api": "trainjob", "k8s.priority_class": "high"}, "--priority-class", "high",
     "--k8s-api pytorchjob"),
    ({"k8s.api": "trainjob", "k8s.elastic_max_nodes": 4}, "--elastic-max-nodes", 4,
     "Trainer v2"),
    ({"env.PET_NNODES": "3"}, "--env PET_NNODES", "PET_NNODES", "remove it"),
])
def test_bad_k8s_options_name_the_option(flags: dict, field: str, value: object,
                                         fix: str) -> None:
    with pytest.raises(SpecError) as err:
        cases.spec(**K8S | flags)
    assert err.value.field == field and err.value.value == value
    assert fix in str(err.value)


def test_flag_strings_become_lists_and_mappings() -> None:
    spec = cases.spec(**K8S | {"k8s.image_pull_secrets": "a, b", "k8s.node_selector":
                               "gpu=a100,zone=b"})
    assert spec.k8s.image_pull_secrets == ("a", "b")
    assert spec.k8s.node_selector == {"gpu": "a100", "zone": "b"}
    with pytest.raises(SpecError) as err:
        cases.spec(**K8S | {"k8s.node_selector": "gpu"})
    assert err.value.field == "--node-selector"


def test_hostile_text_in_free_k8s_fields_is_rejected_or_quoted() -> None:
    """Names that land in YAML keys or references take no YAML or shell specials."""
    for field in ("k8s.pvc", "k8s.priority_class", "k8s.kueue_queue", "k8s.hf_token_secret"):
        with pytest.raises(SpecError):
            cases.spec(**K8S | {field: 'a"\n  b: c'})
    spec = cases.spec(**K8S | {"k8s.node_selector": {"team": "ml"},
                               "k8s.pvc": "ckpt", "k8s.mount_path": "/data/my ckpt"})
    assert '"/data/my ckpt"' in render(spec)
