"""Validate rendered Kubeflow objects with no API server: the real CRD schemas in strict mode,
plus the admission-webhook rules the CRD schema cannot express (training-operator v1.9.4)."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import SHARED

CRDS = SHARED / "k8s" / "crds"
PYTORCHJOB_CRD = CRDS / "kubeflow.org_pytorchjobs.v1.9.4.yaml"
TRAINJOB_CRD = CRDS / "trainer.kubeflow.org_trainjobs.v2.3.0.yaml"
needs_crds = pytest.mark.skipif(
    not (PYTORCHJOB_CRD.is_file() and TRAINJOB_CRD.is_file()),
    reason=f"Kubeflow CRD schemas not found under {CRDS}: ../shared is absent beside the repo")
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _strict(node: Any) -> Any:
    """OpenAPI v3 (structural CRD schema) -> JSON Schema that rejects unknown fields,
    as the API server does with strict field validation."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def strict_schema(crd_file: Path) -> dict[str, Any]:
    crd = yaml.safe_load(crd_file.read_text())
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    return _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))


def schema_errors(doc: dict[str, Any], crd_file: Path) -> list[str]:
    validator = jsonschema.Draft7Validator(strict_schema(crd_file))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(doc)]


def pytorchjob_webhook_errors(doc: dict[str, Any]) -> list[str]:
    """training-operator v1.9.4 pkg/webhooks/pytorch, rule by rule."""
    errors = []
    name = doc["metadata"]["name"]
    if len(name) > 63 or not DNS1035.match(name):
        errors.append(f"metadata.name {name!r} is not a DNS-1035 label")
    spec = doc["spec"]
    replicas = spec["pytorchReplicaSpecs"]
    if set(replicas) - {"Master", "Worker"}:
        errors.append(f"replica types must be Master/Worker, got {sorted(replicas)}")
    if "Master" in replicas and replicas["Master"].get("replicas", 1) != 1:
        errors.append("Master replicas must be 1")
    for role, rspec in replicas.items():
        containers = rspec["template"]["spec"].get("containers", [])
        pytorch = [c for c in containers if c.get("name") == "pytorch"]
        if not pytorch or not pytorch[0].get("image"):
            errors.append(f"{role}: needs a container named 'pytorch' with an image")
    if "elasticPolicy" in spec:
        if "Worker" not in replicas:
            errors.append("elasticPolicy needs a Worker replica")
        if spec["elasticPolicy"].get("nProcPerNode") is not None and "nprocPerNode" in spec:
            errors.append("elasticPolicy.nProcPerNode and nprocPerNode are mutually exclusive")
    return errors


def trainjob_rule_errors(doc: dict[str, Any]) -> list[str]:
    """The CEL rules on the TrainJob CRD (x-kubernetes-validations) that jsonschema skips."""
    name = doc["metadata"]["name"]
    if len(name) > 63 or not DNS1035.match(name):
        return [f"metadata.name {name!r} must match RFC 1035 and be at most 63 characters"]
    return []
