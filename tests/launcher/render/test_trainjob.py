from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mgft.render.trainjob import render_trainjob

from tests.conftest import KUBEFLOW, TORCH_RUNTIME
from tests.k8s_schema import (
    DNS1035,
    TRAINJOB_CRD,
    TRAINJOB_CRDS,
    needs_crds,
    runtime_patch_errors,
    schema_errors,
    trainjob_rule_errors,
    trainjob_webhook_errors,
)
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


# The stock torch-distributed runtime of each Trainer release at hand: v2.3.0 is carried, the
# newest (main at 2026-08-21) comes with the CRDs (`bash .ci/fetch-kubeflow-crds.sh`).
RUNTIMES = {"v2.3.0": TORCH_RUNTIME,
            "main-2026-08-21": KUBEFLOW / "runtimes" / "torch_distributed.master-2026-08-21.yaml"}


def _at_hand(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path.name} not found under {path.parent}: `bash "
                    ".ci/fetch-kubeflow-crds.sh` downloads it")
    return path


@pytest.mark.parametrize("release", TRAINJOB_CRDS)
@pytest.mark.parametrize("case", CASES)
def test_valid_against_every_trainer_release(case: str, release: str) -> None:
    """One document for v2.3 and the newest: no setting picks a Trainer version."""
    doc = yaml.safe_load(render_trainjob(CASES[case]))
    assert schema_errors(doc, _at_hand(TRAINJOB_CRDS[release])) == []
    assert trainjob_webhook_errors(doc) == []


@pytest.mark.parametrize("release", RUNTIMES)
@pytest.mark.parametrize("case", CASES)
def test_runtime_patches_pass_the_trainer_webhook(case: str, release: str) -> None:
    runtime = yaml.safe_load(_at_hand(RUNTIMES[release]).read_text())
    doc = yaml.safe_load(render_trainjob(CASES[case]))
    assert runtime_patch_errors(doc, runtime) == []


def test_the_webhook_mirror_catches_what_upstream_refuses() -> None:
    """The rules above are live: each broken patch is refused for the reason upstream gives."""
    runtime = yaml.safe_load(TORCH_RUNTIME.read_text())
    doc = yaml.safe_load(render_trainjob(CASES["zero2-2x4"]))
    patch = doc["spec"]["runtimePatches"][0]
    (rjob,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    container = rjob["template"]["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "X", "value": "1"}]
    assert runtime_patch_errors(doc, runtime) == ["container 'node' may not get env from a patch"]
    del container["env"]
    patch["manager"] = "mgft"
    assert runtime_patch_errors(doc, runtime) == ["manager 'mgft' is not a domain-prefixed path"]
    patch["manager"] = "mgft.dev/launcher"
    rjob["name"] = "trainer"
    assert runtime_patch_errors(doc, runtime) == ["replicated job 'trainer' is not in the runtime"]
    runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["name"] = "node-with-a-long-name-x"
    assert "over 20 characters" in runtime_patch_errors(doc, runtime)[0]


def test_pod_hostnames_fit_a_dns_label_at_the_longest_name_and_most_nodes() -> None:
    """JobSet names each pod `<jobset>-<replicated job>-<job index>-<pod index>` (the TrainJob's
    name is the JobSet's; kubeflow/trainer#2735), and that must be a DNS-1035 label."""
    from dataclasses import replace

    from mgft.spec.names import MAX_NAME_LEN

    spec = CASES["zero2-2x4"]
    spec = replace(spec, name="a" * MAX_NAME_LEN,
                   resources=replace(spec.resources, nodes=4096))
    doc = yaml.safe_load(render_trainjob(spec))
    (rjob,) = doc["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
        "replicatedJobs"]
    last = f"{doc['metadata']['name']}-{rjob['name']}-0-{doc['spec']['trainer']['numNodes'] - 1}"
    assert len(last) <= 63 and DNS1035.match(last)
