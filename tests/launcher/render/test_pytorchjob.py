from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mgft.render.pytorchjob import render_pytorchjob

from tests.k8s_schema import PYTORCHJOB_CRD, needs_crds, pytorchjob_webhook_errors, schema_errors
from tests.launcher.render import cases

GOLDEN = Path(__file__).parent / "golden"
CASES = cases.k8s("pytorchjob")


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, golden) -> None:
    golden(GOLDEN / f"pytorchjob-{case}.yaml", render_pytorchjob(CASES[case]))


@needs_crds
@pytest.mark.parametrize("case", CASES)
def test_valid_against_crd_and_webhook(case: str) -> None:
    doc = yaml.safe_load(render_pytorchjob(CASES[case]))
    assert schema_errors(doc, PYTORCHJOB_CRD) == []
    assert pytorchjob_webhook_errors(doc) == []


@needs_crds
def test_strict_schema_catches_what_the_api_server_would() -> None:
    """The validator itself must reject the classic mistakes, or the test above proves nothing."""
    doc = yaml.safe_load(render_pytorchjob(CASES["zero2-2x4"]))
    doc["spec"]["nprocPerNode"] = 4  # must be a string in v1
    master = doc["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    master["containers"][0]["imagePullPolicyy"] = "Always"  # typo: unknown field
    errors = schema_errors(doc, PYTORCHJOB_CRD)
    assert any("nprocPerNode" in e for e in errors)
    assert any("imagePullPolicyy" in e for e in errors)


def test_issue_example_shape() -> None:
    doc = yaml.safe_load(render_pytorchjob(CASES["zero2-2x4"]))
    assert doc["apiVersion"] == "kubeflow.org/v1" and doc["kind"] == "PyTorchJob"
    replicas = doc["spec"]["pytorchReplicaSpecs"]
    assert {r: s["replicas"] for r, s in replicas.items()} == {"Master": 1, "Worker": 1}
    assert doc["spec"]["nprocPerNode"] == "4"
    for role in replicas.values():
        pod = role["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
        assert container["command"][:6] == ["mgft-node", "--nproc-per-node=4",
                                            "--master-wait=600", "--", "-m", "mgft_train"]
        assert "--strategy=zero2" in container["command"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "3" and env["MGFT_DEVICE"] == "cuda"
        (shm,) = pod["volumes"]
        assert shm["emptyDir"]["medium"] == "Memory"
        assert {"name": shm["name"], "mountPath": "/dev/shm"} in container["volumeMounts"]
        assert pod["securityContext"]["runAsNonRoot"] is True


def test_single_node_has_no_worker_and_cpu_has_no_gpu_limit() -> None:
    one = yaml.safe_load(render_pytorchjob(CASES["ddp-1x1"]))
    assert list(one["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    cpu = yaml.safe_load(render_pytorchjob(CASES["cpu-3x2"]))
    assert cpu["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    container = cpu["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert "resources" not in container
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MGFT_DEVICE"] == "cpu" and env["WANDB_MODE"] == "offline"
    assert not any(k.startswith("NCCL") for k in env)
