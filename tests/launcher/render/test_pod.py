"""Every object `mgft render --backend k8s` emits, for every Kubernetes option, checked the way
a cluster would: the job against the real CRD schema (strict) and the operator's webhook, core
objects with kubernetes-validate (strict, Kubernetes 1.37), the pods the operator creates as
core Pods, and the `restricted` Pod Security Standard."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mgft.render import render
from mgft.spec.build import build_spec

from tests import k8s_operators as ops
from tests.conftest import TORCH_RUNTIME
from tests.k8s_schema import (
    PYTORCHJOB_CRD,
    TRAINJOB_CRD,
    core_errors,
    needs_crds,
    pytorchjob_webhook_errors,
    restricted_violations,
    schema_errors,
    trainjob_rule_errors,
    trainjob_webhook_errors,
)
from tests.launcher.render import cases

GOLDEN = Path(__file__).parent / "golden"
OPTIONS = {f"{api}-{name}": s for api in ("pytorchjob", "trainjob")
           for name, s in cases.k8s_options(api).items()}
SPECS = OPTIONS | {f"{api}-{name}": s for api in ("pytorchjob", "trainjob")
                   for name, s in cases.k8s(api).items()}


def documents(case: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(render(SPECS[case])) if d is not None]


def operator_pods(job: dict, restricted_init: bool = False) -> list[ops.OperatorPod]:
    if job["kind"] == "PyTorchJob":
        return ops.pytorchjob(job, restricted_init_template=restricted_init).pods
    return ops.trainjob(job, yaml.safe_load(TORCH_RUNTIME.read_text())).pods


@pytest.mark.parametrize("case", OPTIONS)
def test_golden(case: str, golden) -> None:
    golden(GOLDEN / f"k8s-{case}.yaml", render(SPECS[case]))


@needs_crds
@pytest.mark.parametrize("case", SPECS)
def test_every_object_is_valid(case: str) -> None:
    *companions, job = documents(case)
    if job["kind"] == "PyTorchJob":
        assert schema_errors(job, PYTORCHJOB_CRD) == []
        assert pytorchjob_webhook_errors(job) == []
    else:
        assert schema_errors(job, TRAINJOB_CRD) == []
        assert trainjob_rule_errors(job) == [] and trainjob_webhook_errors(job) == []
    for doc in companions:
        assert core_errors(doc) == [], doc["kind"]
        assert doc["metadata"]["namespace"] == job["metadata"]["namespace"]
    for pod in operator_pods(job):
        assert core_errors(pod.as_pod(job["metadata"]["namespace"])) == [], pod.name


@needs_crds
@pytest.mark.parametrize("case", SPECS)
def test_pods_meet_the_restricted_pod_security_standard(case: str) -> None:
    """What mgft renders is `restricted`-clean unless --pod-security none. The one gap is the
    training operator's own `init-pytorch` container on v1 Worker pods, which has no
    securityContext unless the operator runs with a restricted init-container template."""
    *_, job = documents(case)
    restricted = SPECS[case].k8s.pod_security.value == "restricted"
    for pod in operator_pods(job, restricted_init=True):
        assert (restricted_violations(pod.spec) == []) == restricted, pod.name
    if job["kind"] == "PyTorchJob" and restricted:
        for pod in operator_pods(job):
            gaps = restricted_violations(pod.spec)
            assert all("init-pytorch" in g for g in gaps)
            assert bool(gaps) == (pod.name.split("-")[-2] == "worker"
                                  and "Master" in job["spec"]["pytorchReplicaSpecs"])


@pytest.mark.parametrize("api", ["pytorchjob", "trainjob"])
def test_companions_and_pod_wiring(api: str) -> None:
    spec = cases.k8s_options(api)["all"]
    config_map, claim, job = documents(f"{api}-all")
    assert [config_map["kind"], claim["kind"]] == ["ConfigMap", "PersistentVolumeClaim"]
    # The ConfigMap holds the job itself: it renders back to exactly this job.
    assert build_spec(yaml.safe_load(config_map["data"]["job.yaml"])) == spec
    assert claim["metadata"]["name"] == "llama-ft-output"
    assert claim["spec"] == {"accessModes": ["ReadWriteMany"], "storageClassName": "fast-rwx",
                             "resources": {"requests": {"storage": "200Gi"}}}
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    pod = operator_pods(job)[0]
    trainer = pod.trainer
    env = {e["name"]: e for e in trainer["env"]}
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf-token", "key": "token"}}
    assert env["WANDB_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "wandb", "key": "key"}}
    assert env["S3_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "s3-creds", "key": "secret"}}
    secrets = {"hf-token": {"token": "hf_x"}, "wandb": {"key": "w"}, "s3-creds": {"secret": "s"}}
    resolved = ops.container_env(trainer, secrets)
    assert resolved["A_FIRST"] == "$(HOME)", "a user's $(...) must reach the process unexpanded"
    assert resolved["HF_TOKEN"] == "hf_x"
    assert ops.container_command(trainer, resolved)[:5] == [
        "mgft-node", "--nproc-per-node=4", "--master-wait=600", "--workdir=/workspace", "--"]
    mounts = {m["name"]: m for m in trainer["volumeMounts"]}
    assert mounts["output"]["mountPath"] == "/workspace"
    assert mounts["mgft-config"] == {"name": "mgft-config", "mountPath": "/etc/mgft",
                                     "readOnly": True}
    volumes = {v["name"]: v for v in pod.spec["volumes"]}
    assert volumes["output"]["persistentVolumeClaim"] == {"claimName": "llama-ft-output"}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert pod.spec["nodeSelector"] == {"nvidia.com/gpu.product": "H100-SXM", "pool": "train"}
    assert pod.spec["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    assert pod.spec["tolerations"][1] == {"key": "team", "operator": "Equal", "value": "ml",
                                          "effect": "NoExecute"}


def test_existing_claim_is_mounted_not_created() -> None:
    docs = documents("pytorchjob-existing-claim")
    assert [d["kind"] for d in docs] == ["PyTorchJob"]
    pod = operator_pods(docs[0])[0]
    assert {"name": "output", "persistentVolumeClaim": {"claimName": "shared-ckpt"}} in \
        pod.spec["volumes"]
    assert "--workdir=/mnt/ckpt" in pod.trainer["command"]


def test_volcano_priority_and_backoff() -> None:
    (job,) = documents("pytorchjob-volcano")
    assert job["spec"]["runPolicy"]["schedulingPolicy"] == {"queue": "gpu",
                                                            "priorityClass": "high"}
    assert job["spec"]["runPolicy"]["backoffLimit"] == 5
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        assert replica["restartPolicy"] == "OnFailure"
        pod = replica["template"]["spec"]
        assert pod["schedulerName"] == "volcano" and pod["priorityClassName"] == "high"


def test_elastic_job_rendezvous_on_worker_0() -> None:
    (job,) = documents("pytorchjob-elastic")
    assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Worker"]
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3
    assert job["spec"]["elasticPolicy"] == {"rdzvBackend": "c10d", "minReplicas": 2,
                                            "maxReplicas": 4, "maxRestarts": 3}
    pods = operator_pods(job)
    env = {e["name"]: e["value"] for e in pods[1].trainer["env"] if "value" in e}
    assert env["PET_RDZV_ENDPOINT"] == "llama-ft-worker-0:23456"
    assert env["PET_NNODES"] == "2:4" and "MASTER_ADDR" not in env
    assert all("initContainers" not in p.spec for p in pods)


def test_open_pod_security_drops_every_security_context() -> None:
    (job,) = documents("pytorchjob-open")
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        pod = replica["template"]["spec"]
        assert "securityContext" not in pod
        assert "securityContext" not in pod["containers"][0]


def test_validators_catch_what_the_cluster_would() -> None:
    """The checks above must be able to fail."""
    config_map, claim, job = documents("pytorchjob-all")
    claim["spec"]["resources"]["requests"]["storage"] = "8 GB"
    config_map["metadata"]["lables"] = {}
    assert any("8 GB" in e for e in core_errors(claim))
    assert any("lables" in e for e in core_errors(config_map))
    pod = operator_pods(job, restricted_init=True)[0]
    pod.trainer["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
    del pod.spec["securityContext"]["seccompProfile"]
    pod.spec["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    gaps = restricted_violations(pod.spec)
    assert any("must drop ALL" in g for g in gaps)
    assert any("seccompProfile" in g for g in gaps)
    assert any("hostPath" in g for g in gaps)
    pod.trainer["env"].append({"name": "X", "value": 1})
    assert any("env" in e for e in core_errors(pod.as_pod("default")))
