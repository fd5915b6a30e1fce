from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner
from mgft.cli.main import main, render, submit

from tests.launcher.imports import heavy_modules_after
from tests.launcher.render import cases

K8S = ["--backend", "k8s", "--gpus", "4", "--nodes", "2", "--strategy", "zero2",
       "--model", "/models/llama", "--dataset", "/data/train.jsonl", "--image",
       "ghcr.io/acme/mgft:cuda"]
REQUIRED_FLAGS = [
    "--backend", "--gpus", "--nodes", "--nproc-per-node", "--strategy", "--tuning", "--model",
    "--dataset", "--output", "--max-steps", "--epochs", "--lr", "--micro-batch",
    "--grad-accum", "--seq-len", "--image", "--name", "--namespace", "--partition", "--config",
    "--set",
]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("command", [render, submit])
def test_required_flags_exist_and_all_have_help(command: click.Command) -> None:
    params = command.get_params(click.Context(command))
    flags = {opt for p in params for opt in p.opts}
    assert set(REQUIRED_FLAGS) <= flags
    assert all(p.help for p in params if isinstance(p, click.Option))


def test_render_k8s_matches_the_renderer() -> None:
    result = invoke("render", *K8S)
    assert result.exit_code == 0, result.output
    expected = (Path(__file__).parents[1] / "render/golden/pytorchjob-zero2-2x4.yaml").read_text()
    assert result.output == expected
    trainjob = yaml.safe_load(invoke("render", *K8S, "--k8s-api", "trainjob").output)
    assert trainjob["kind"] == "TrainJob"


def test_data_flags_reach_the_trainer_and_booleans_pair_with_no() -> None:
    slurm = ["--backend", "slurm", "--model", "/m", "--dataset", "/d.parquet"]
    default = invoke("render", *slurm)
    assert "--packing=True" in default.output and "--train-on-prompt=False" in default.output
    assert "--chat-template" not in default.output
    result = invoke("render", *slurm, "--no-packing", "--train-on-prompt", "--data-format",
                    "sharegpt", "--chat-template", "llama3", "--overlong", "drop")
    assert result.exit_code == 0, result.output
    for word in ("--packing=False", "--train-on-prompt=True", "--data-format=sharegpt",
                 "--chat-template=llama3", "--overlong=drop"):
        assert word in result.output
    bad = invoke("render", *slurm, "--data-format", "csv")
    assert bad.exit_code == 2 and "--data-format" in bad.output


def test_eval_flags_reach_the_trainer_and_two_eval_sets_are_one_line() -> None:
    slurm = ["--backend", "slurm", "--model", "/m", "--dataset", "/d.parquet"]
    assert "--eval" not in invoke("render", *slurm).output  # unset: not written
    result = invoke("render", *slurm, "--eval-split", "0.05", "--eval-every", "200")
    assert result.exit_code == 0, result.output
    assert "--eval-split=0.05" in result.output and "--eval-every=200" in result.output
    result = invoke("render", *slurm, "--eval-dataset", "/e.jsonl")
    assert result.exit_code == 0 and "--eval-dataset=/e.jsonl" in result.output
    both = invoke("render", *slurm, "--eval-dataset", "/e.jsonl", "--eval-split", "0.1")
    assert both.exit_code == 2 and both.stderr.count("\n") == 1, both.output
    assert both.stderr.startswith("mgft: error: --eval-split 0.1: --eval-dataset /e.jsonl "
                                  "already names the eval set; drop --eval-split")


def test_config_file_and_set(tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"backend": "slurm", "train": {
        "model": "/m", "dataset": "/d.jsonl", "strategy": "fsdp"}, "resources": {"gpus": 8}}))
    result = invoke("render", "--config", str(config), "--nodes", "2", "--set",
                    "slurm.partition=big", "--set", "train.max_steps=9")
    assert result.exit_code == 0, result.output
    assert "#SBATCH --partition=big" in result.output and "--max-steps=9" in result.output
    assert "--strategy=fsdp" in result.output and "#SBATCH --gpus-per-node=8" in result.output


@pytest.mark.parametrize("args,needle", [
    (["--nodes", "0"], "--nodes 0"),
    (["--strategy", "zero4"], "--strategy zero4: not one of the choices"),
    (["--name", "Not_A_Label"], "--name Not_A_Label: not a DNS-1035"),
    (["--backend", "local", "--gpus", "0", "--strategy", "mp"], "--strategy mp: needs GPUs"),
    (["--backend", "local", "--gpus", "0", "--dataset", "/no/such.jsonl"], "--dataset"),
    (["--env", "NOEQUALS"], "--env NOEQUALS: is not KEY=VALUE"),
    (["--backend", "slurm", "--container", "apptainer", "--image", "mgft.sif"],
     "--image mgft.sif: a relative image path"),
])
@pytest.mark.parametrize("command", ["render", "submit"])
def test_bad_input_is_one_line_and_exit_2(command: str, args: list[str], needle: str,
                                          tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    base = ["--model", str(tmp_path / "model"), "--dataset", "/no/such.jsonl"]
    result = subprocess.run([sys.executable, "-m", "mgft.cli", command, *base, *args],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stdout == "", "nothing may be rendered before validation passes"
    assert result.stderr.startswith("mgft: error: ") and needle in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_submit_to_k8s_with_no_cluster_is_one_line(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
           "KUBECONFIG": str(tmp_path / "no-such-kubeconfig")}
    result = subprocess.run([sys.executable, "-m", "mgft.cli", "submit", *K8S],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("mgft: error: no Kubernetes credentials")


def test_replace_is_for_k8s_only() -> None:
    result = invoke("submit", "--replace", "--backend", "slurm", "--model", "m", "--dataset", "d")
    assert result.exit_code == 2
    assert "--replace True: only applies to --backend k8s" in result.stderr


def test_config_schema_is_json_schema() -> None:
    schema = json.loads(invoke("config", "schema").output)
    assert schema["title"] == "mgft job" and "train" in schema["properties"]


def test_cli_imports_nothing_heavy_even_after_rendering_every_backend() -> None:
    assert heavy_modules_after(
        ["render", *K8S], ["render", *K8S, "--k8s-api", "trainjob"],
        ["render", "--backend", "slurm", "--model", "m", "--dataset", "d"],
        ["render", "--backend", "local", "--gpus", "0", "--model", "m", "--dataset", "d"]) == []


def test_version() -> None:
    assert invoke("--version").output.strip() == "mgft, version 0.1.0"


def test_cases_module_matches_cli_defaults() -> None:
    """The golden cases go through build_spec exactly like the CLI does."""
    spec = cases.k8s("pytorchjob")["zero2-2x4"]
    assert spec.k8s.namespace == "default" and spec.train.output == "output"


def test_render_with_nothing_names_the_missing_flags() -> None:
    result = subprocess.run([sys.executable, "-m", "mgft.cli", "render"], capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert result.stderr == ("mgft: error: --model and --dataset are required; pass them (or "
                             "set train.model and train.dataset in the YAML file)\n")


def test_string_options_take_what_was_typed_in_yaml_and_set(tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text("backend: slurm\nslurm:\n  time: 12:00:00\n  account: 0123\n")
    result = invoke("render", "--config", str(config), "--model", "/m", "--dataset", "/d",
                    "--set", "train.output=2024", "--set", "slurm.qos=12345")
    assert result.exit_code == 0, result.output
    for line in ("#SBATCH --time=12:00:00", "#SBATCH --account=0123", "#SBATCH --qos=12345",
                 "--output=2024 "):
        assert line in result.output


def test_options_of_another_backend_warn_in_one_line() -> None:
    result = subprocess.run([sys.executable, "-m", "mgft.cli", "render", "--backend", "slurm",
                             "--model", "/m", "--dataset", "/d", "--namespace", "team"],
                            capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stderr == ("mgft: warning: --backend slurm ignores --namespace (options of "
                             "another backend)\n")


_START_UP = """
import json, sys, typing
import click

hinted = []
real = typing.get_type_hints
typing.get_type_hints = lambda cls, *a, **k: (hinted.append(cls.__name__), real(cls, *a, **k))[1]
from mgft.cli.main import main
loaded = sorted(m for m in ("mgft.plan.report", "mgft.generate.launch") if m in sys.modules)

def commands(group):
    for command in group.commands.values():
        yield from commands(command) if isinstance(command, click.Group) else [command]

options = sum(len(c.get_params(click.Context(c))) for c in commands(main))
print(json.dumps({"loaded": loaded, "hinted": hinted, "options": options}))
"""


def test_start_up_builds_no_options_and_reads_each_spec_class_once() -> None:
    """What made `mgft` start slowly (0.45-0.6 s of CPU for any command): every command's
    options were built at import, and each option's help re-evaluated its whole spec class's
    annotations. Now only the command that runs builds its options, and the annotations of
    the ~8 spec classes are evaluated about once each, not once per option."""
    proc = subprocess.run([sys.executable, "-c", _START_UP], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["loaded"] == [], "importing the CLI built `plan` or `generate` options"
    assert result["options"] > 300
    assert len(result["hinted"]) < 20, result["hinted"]
