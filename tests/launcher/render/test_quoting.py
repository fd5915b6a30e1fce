"""Hostile strings in every free-text field: rendered YAML and shell must give them back
exactly, and no value may add a YAML key or run a command.

Free-text fields (paths, --env values) must be *accepted*, so this cannot pass by rejecting
them; restricted fields (name, namespace, partition, ...) must be rejected or harmless.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path, PurePath
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mgft.contract.process import trainer_argv
from mgft.render import render
from mgft.render.pod import entry_command
from mgft.render.sbatch import render_sbatch
from mgft.spec.errors import SpecError

from tests.k8s_operators import container_command, container_env
from tests.launcher.render import cases
from tests.launcher.render.stubs import run_recorded

PWNED = "mgft-pwned"
FRAGMENTS = [
    "'", '"', "\\", "`id`", f"$(touch {PWNED})", f"`touch {PWNED}`", "${HOME}", "$HOME", ";", "&&",
    "|", ">", "<", "\n", "\r", "\t", "\n#SBATCH --nodes=99\n", ": ", "- ", "#", "{", "}", "[", "]",
    "&anchor", "*alias", "!!python/object", "%", "@", "?", "key: value\n  injected: true",
    "---\n", "...", "~", "null", "true", "0x1F", "1e3", "\x85", "\u2028", "\ufeff", "\x7f",
    "é", "日本", "😀", "-", "--model=evil", " ", "",
]
hostile = st.lists(st.one_of(st.sampled_from(FRAGMENTS),
                             st.text(st.characters(exclude_categories=("Cs",),
                                                   exclude_characters="\x00"), max_size=8)),
                   min_size=1, max_size=6).map("".join).filter(bool)
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
NASTY = "a'b\"c $(touch mgft-pwned) `touch mgft-pwned`\nkey: v\n- x #c \\ 😀\x85"


def free_text_spec(model: str, dataset: str, output: str, env_value: str, **more: Any):
    return cases.spec(**{"train.model": model, "train.dataset": dataset, "train.output": output,
                         "env.USER_VALUE": env_value}, **more)


def shape(node: Any) -> Any:
    """The document's structure with every scalar replaced by its type."""
    if isinstance(node, dict):
        return {k: shape(v) for k, v in node.items()}
    if isinstance(node, list):
        return [shape(v) for v in node]
    return type(node).__name__


def k8s_containers(doc: dict) -> list[dict]:
    if doc["kind"] == "PyTorchJob":
        return [r["template"]["spec"]["containers"][0]
                for r in doc["spec"]["pytorchReplicaSpecs"].values()]
    return [doc["spec"]["trainer"]]


@pytest.mark.parametrize("api", ["pytorchjob", "trainjob"])
@SETTINGS
@given(model=hostile, dataset=hostile, output=hostile, env_value=hostile)
@example(model=NASTY, dataset="-x", output="\n", env_value="${IFS}")
def test_k8s_yaml_round_trips(api: str, model: str, dataset: str, output: str,
                              env_value: str) -> None:
    extra = {"backend": "k8s", "image": cases.IMAGE, "k8s.api": api, "resources.nodes": 2}
    spec = free_text_spec(model, dataset, output, env_value, **extra)
    benign = free_text_spec("m", "d", "o", "v", **extra)
    doc = yaml.safe_load(render(spec))
    assert shape(doc) == shape(yaml.safe_load(render(benign))), "a value changed the structure"
    for container in k8s_containers(doc):
        # What the process gets after the kubelet's $(VAR) expansion, not the YAML text.
        env = container_env(container, secrets={})
        assert container_command(container, env) == entry_command(spec)
        assert entry_command(spec)[-len(trainer_argv(spec)):] == trainer_argv(spec)
        assert trainer_argv(spec)[2:5] == [f"--model={model}", f"--dataset={dataset}",
                                           f"--output={output}"]
        assert env["USER_VALUE"] == env_value


@SETTINGS
@given(model=hostile, dataset=hostile, output=hostile, env_value=hostile)
@example(model=NASTY, dataset="-x", output="\n", env_value="${IFS}")
def test_sbatch_shell_words_round_trip(model: str, dataset: str, output: str,
                                       env_value: str) -> None:
    spec = free_text_spec(model, dataset, output, env_value, backend="slurm",
                          **{"resources.nodes": 2, "resources.gpus": 2})
    with tempfile.TemporaryDirectory() as tmp:
        argv, env = run_recorded(render_sbatch(spec), Path(tmp),
                                 {"SLURM_JOB_ID": "7", "SLURM_NODEID": "0",
                                  "SLURM_JOB_NODELIST": "node[1-2]"})
        assert not (Path(tmp) / PWNED).exists(), "a value ran a command"
    assert argv[-len(trainer_argv(spec)):] == trainer_argv(spec)
    assert f"--log-dir={PurePath(output, 'logs')}" in argv
    assert env["USER_VALUE"] == env_value


@SETTINGS
@given(model=hostile, dataset=hostile, env_value=hostile)
def test_local_command_words_round_trip(model: str, dataset: str, env_value: str) -> None:
    spec = free_text_spec(model, dataset, "out", env_value, **{"resources.gpus": 0})
    with tempfile.TemporaryDirectory() as tmp:
        argv, env = run_recorded(render(spec), Path(tmp))
        assert not (Path(tmp) / PWNED).exists(), "a value ran a command"
    assert argv[-len(trainer_argv(spec)):] == trainer_argv(spec)
    assert env["USER_VALUE"] == env_value


_SAFE = re.compile(r"^[A-Za-z0-9_.:/@+-]*$")


@pytest.mark.parametrize("field,extra", [
    ("name", {}),
    ("image", {"backend": "k8s"}),
    ("k8s.namespace", {"backend": "k8s", "image": cases.IMAGE}),
    ("k8s.shm_size", {"backend": "k8s", "image": cases.IMAGE}),
    ("slurm.partition", {"backend": "slurm"}),
    ("slurm.time", {"backend": "slurm"}),
])
@SETTINGS
@given(value=hostile)
def test_restricted_fields_reject_or_stay_inert(field: str, extra: dict, value: str) -> None:
    """Fields that land unquoted (#SBATCH lines) or in Kubernetes names take no specials."""
    try:
        spec = cases.spec(**extra, **{field: value})
    except SpecError as err:
        assert err.value == value
        return
    assert _SAFE.match(value)
    text = render(spec)
    assert value in text
