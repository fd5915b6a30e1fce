from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mgft.render.trainjob import render_trainjob

from tests.conftest import TORCH_RUNTIME
from tests.k8s_schema import TRAINJOB_CRD, needs_crds, schema_errors, trainjob_rule_errors
from tests.launcher.render import cases

GOLDEN = Path(__file__).parent / "golden"
CASES = cases.k8s("trainjob")


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, golden) -> None:
    golden(GOLDEN / f"trainjob-{case}.yaml", render_trainjob(CASES[case]))


@needs_crds
@pytest.mark.parametrize("case", CASES)
def test_valid_against_crd(case: str) -> None:
    doc = yaml.safe_load(render_trainjob(CASES[case]))
    assert schema_errors(doc, TRAINJOB_CRD) == []
    assert trainjob_rule_errors(doc) == []


@needs_crds
def test_strict_schema_rejects_string_proc_count() -> None:
    doc = yaml.safe_load(render_trainjob(CASES["zero2-2x4"]))
    doc["spec"]["trainer"]["numProcPerNode"] = "4"  # an integer in v2, unlike PyTorchJob
    assert any("numProcPerNode" in e for e in schema_errors(doc, TRAINJOB_CRD))


def test_shape() -> None:
    doc = yaml.safe_load(render_trainjob(CASES["zero2-2x4"]))
    assert doc["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and doc["kind"] == "TrainJob"
    assert doc["spec"]["runtimeRef"]["name"] == "torch-distributed"
    trainer = doc["spec"]["trainer"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 4
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 4
    assert trainer["command"][:6] == ["mgft-node", "--nproc-per-node=4", "--master-wait=600",
                                      "--", "-m", "mgft_train"]
    (patch,) = doc["spec"]["runtimePatches"]
    (job,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = job["template"]["spec"]["template"]["spec"]
    assert pod["volumes"][0]["emptyDir"]["medium"] == "Memory"
    assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == "/dev/shm"


def test_patch_targets_the_stock_runtime() -> None:
    """The patch names must match the runtime's replicated job and container, or it is a no-op."""
    runtime = yaml.safe_load(TORCH_RUNTIME.read_text())
    (rjob,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    containers = [c["name"] for c in rjob["template"]["spec"]["template"]["spec"]["containers"]]
    doc = yaml.safe_load(render_trainjob(CASES["zero2-2x4"]))
    (job,) = doc["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
        "replicatedJobs"]
    assert job["name"] == rjob["name"]
    assert job["template"]["spec"]["template"]["spec"]["containers"][0]["name"] in containers
