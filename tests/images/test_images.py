"""The images and the CI around them, checked here without docker: hadolint on both
Dockerfiles, the pinned versions they install against CI's own venv, and the workflows and
scripts that build and run them (shellcheck; `make image` and `make kind-e2e` cannot run here)."""

from __future__ import annotations

import re
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.tools import tool

DOCKERFILES = sorted((REPO / "images").glob("*/Dockerfile"))


def test_both_images_exist() -> None:
    assert [p.parent.name for p in DOCKERFILES] == ["cpu", "cuda"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_clean(dockerfile: Path) -> None:
    proc = subprocess.run([tool("hadolint"), "--no-color", str(dockerfile)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_image_installs_the_ci_set_as_a_non_root_trainer(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert re.search(r"pip install --no-cache-dir --constraint constraints\.txt\b", text)
    assert '".[train,k8s,track]"' in text and "DS_BUILD_OPS=0" in text  # as `make install` does
    assert "COPY pyproject.toml constraints.txt README.md ./" in text
    assert "USER 1000:1000" in text  # the uid the pods' restricted securityContext runs as
    assert 'ENTRYPOINT ["mgft-train"]' in text
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert base == ("nvidia/cuda:13.0.1-runtime-ubuntu24.04" if "cuda" in str(dockerfile)
                    else "python:3.12-slim-bookworm")


def test_constraints_pin_exactly_what_ci_installed() -> None:
    """The images install through constraints.txt; it must pin every run-time package at the
    version this (CI's) venv has, or an image would run something CI never tested."""
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    installed = {name: metadata.version(name).split("+")[0] for name in pins}
    assert installed == pins
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("lock", REPO / "images" / "lock.py")
    lock = importlib.util.module_from_spec(spec)
    sys.modules["lock"] = lock
    spec.loader.exec_module(lock)
    assert lock.closure() == pins, \
        "constraints.txt is not the closure of mgft[train,k8s,track]: run `make lock`"
    assert {"torch", "transformers", "peft", "kubernetes"} <= set(pins)


def test_dockerignore_sends_only_what_the_images_install() -> None:
    lines = (REPO / ".dockerignore").read_text().split()
    assert lines[lines.index("*") + 1:][:6] == ["!pyproject.toml", "!constraints.txt",
                                                "!README.md", "!launcher/", "!trainer/",
                                                "**/__pycache__"]


@pytest.mark.parametrize("script", [".ci/kind-e2e.sh", ".ci/fetch-kubeflow-crds.sh"])
def test_scripts_are_shellcheck_clean(script: str) -> None:
    proc = subprocess.run([tool("shellcheck"), str(REPO / script)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout


def test_kind_e2e_submits_both_ways_and_checks_the_result() -> None:
    script = (REPO / ".ci" / "kind-e2e.sh").read_text()
    steps = ["kind create cluster", "docker build -f images/cpu/Dockerfile -t mgft:cpu .",
             "kind load docker-image mgft:cpu", "training-operator", 'submit --config "$VALUES" '
             "--backend k8s", 'helm install mgft-e2e-helm charts/mgft -f "$VALUES"',
             "kubectl wait --for=condition=Succeeded", "mgft-train: 20 steps on 4 x cpu"]
    positions = [script.find(step) for step in steps]
    assert -1 not in positions, [s for s, p in zip(steps, positions, strict=True) if p == -1]
    makefile = (REPO / "Makefile").read_text()
    assert "kind-e2e:\n\tbash .ci/kind-e2e.sh" in makefile
    assert "image:\n\tdocker build -f images/cpu/Dockerfile" in makefile


def test_workflows() -> None:
    ci = yaml.safe_load((REPO / ".github/workflows/ci.yml").read_text())
    ci_steps = [s.get("run", "") for s in ci["jobs"]["test"]["steps"]]
    assert "bash .ci/run" in ci_steps  # which runs make lint and make test
    e2e = yaml.safe_load((REPO / ".github/workflows/kind-e2e.yml").read_text())
    e2e_steps = e2e["jobs"]["kind-e2e"]["steps"]
    assert "make kind-e2e" in [s.get("run") for s in e2e_steps]
    assert any(s.get("uses", "").startswith("helm/kind-action") for s in e2e_steps)
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_the_cuda_image_adds_liger_pinned_and_the_cpu_image_does_not() -> None:
    """--kernels auto uses Liger where it is installed: the GPU image must have it."""
    cuda = (REPO / "images/cuda/Dockerfile").read_text()
    assert re.search(r'pip install --no-cache-dir --no-deps "liger-kernel==[\d.]+"', cuda)
    assert "liger" not in (REPO / "images/cpu/Dockerfile").read_text()
