"""`mgft generate` as a job on every backend: the renderers run the generate module in place
of the trainer, and the results pass the same checks as training jobs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mgft.contract.generate import BATCH_SIZE, generate_argv
from mgft.contract.process import trainer_argv
from mgft.generate.launch import build_generate_spec
from mgft.render import render

from tests.k8s_operators import kubelet_expand
from tests.k8s_schema import (
    PYTORCHJOB_CRD,
    TRAINJOB_CRD,
    needs_crds,
    pytorchjob_webhook_errors,
    schema_errors,
)
from tests.launcher.render.stubs import run_recorded

IMAGE = "ghcr.io/acme/mgft:cuda"
NASTY = "a'b\"c $(touch mgft-pwned) `touch mgft-pwned`\nkey: v\n- x #c \\ 😀"


def spec(notes: list[str] | None = None, **flags):
    base = {"model": "/models/llama", "prompts": "/data/eval.jsonl", "output": "/runs/gen"}
    return build_generate_spec(config_file=None, overrides=(), env_items=(),
                               note=(notes if notes is not None else []).append,
                               **(base | flags))


def test_argv_is_the_generate_module_with_only_generation_flags() -> None:
    s = spec(backend="slurm", gpus="4", adapter="/runs/r1/adapter", temperature="0.7")
    argv = trainer_argv(s)
    assert argv == generate_argv(s)
    assert argv[:2] == ["-m", "mgft_train.generate"]
    assert "--prompts=/data/eval.jsonl" in argv and "--adapter=/runs/r1/adapter" in argv
    assert f"--batch-size={BATCH_SIZE}" in argv and "--temperature=0.7" in argv
    assert not any(w.startswith(("--lr=", "--lora-r=", "--dataset=")) for w in argv)


@pytest.mark.parametrize("node_id", ["0", "1"])
def test_sbatch_runs_the_generate_module_on_every_node(node_id: str, tmp_path: Path) -> None:
    s = spec(backend="slurm", gpus="8", nodes="2", prompts=NASTY, adapter=NASTY)
    script = render(s)
    subprocess.run(["bash", "-n", "-c", script], check=True)
    argv, env = run_recorded(script, tmp_path, {"SLURM_JOB_ID": "7", "SLURM_NODEID": node_id,
                                                "SLURM_JOB_NODELIST": "node[1-2]"})
    assert argv[-len(generate_argv(s)):] == generate_argv(s)
    assert f"--prompts={NASTY}" in argv and "--nproc-per-node=8" in argv
    assert not (tmp_path / "mgft-pwned").exists()


@needs_crds
@pytest.mark.parametrize("api", ["pytorchjob", "trainjob"])
def test_kubeflow_jobs_run_it_and_stay_valid(api: str) -> None:
    s = spec(backend="k8s", image=IMAGE, gpus="4", nodes="2", k8s_api=api, adapter=NASTY)
    doc = yaml.safe_load(render(s))
    if api == "pytorchjob":
        assert schema_errors(doc, PYTORCHJOB_CRD) == [] and pytorchjob_webhook_errors(doc) == []
        commands = [r["template"]["spec"]["containers"][0]["command"]
                    for r in doc["spec"]["pytorchReplicaSpecs"].values()]
    else:
        assert schema_errors(doc, TRAINJOB_CRD) == []
        commands = [doc["spec"]["trainer"]["command"]]
    for command in commands:
        # What the container runs, after the kubelet's $(VAR) expansion ($$ -> $).
        expanded = [kubelet_expand(word, lambda _: None) for word in command]
        assert expanded[-len(generate_argv(s)):] == generate_argv(s)  # YAML gave back NASTY


def test_local_runs_torchrun_with_it(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    s = spec(gpus="0", nproc_per_node="2", model=str(tmp_path / "m"),
             prompts=str(tmp_path / "p.jsonl"), output=str(tmp_path / "out"))
    line = render(s)
    assert "torchrun --standalone --nnodes=1 --nproc-per-node=2" in line
    assert "-m mgft_train.generate" in line and "MGFT_DEVICE=cpu" in line


def test_yaml_generate_section_through_mgft_render(tmp_path: Path) -> None:
    config = tmp_path / "gen.yaml"
    config.write_text(yaml.safe_dump({
        "backend": "slurm", "resources": {"gpus": 2},
        "train": {"model": "/m", "dataset": "/p.jsonl", "output": "/o", "micro_batch": 32},
        "generate": {"max_new_tokens": 64, "chat_template": True}}))
    proc = subprocess.run([sys.executable, "-m", "mgft.cli", "render", "--config", str(config)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "mgft_train.generate" in proc.stdout and "--max-new-tokens=64" in proc.stdout
    assert "--batch-size=32" in proc.stdout and "--chat-template=True" in proc.stdout


def test_generation_and_training_jobs_get_different_names() -> None:
    from tests.launcher.render import cases

    train = cases.spec(**{"backend": "slurm", "train.model": "/models/llama",
                          "train.dataset": "/data/eval.jsonl", "train.output": "/runs/gen",
                          "train.micro_batch": 16})
    assert spec(backend="slurm").job_name != train.job_name


def test_auto_strategy_is_ddp_for_generation() -> None:
    notes: list[str] = []
    s = spec(notes, backend="slurm", gpus="4", strategy="auto")
    assert s.train.strategy.value == "ddp" and "generation" in notes[0]


@pytest.mark.parametrize("args,needle", [
    (["--strategy", "fsdp"], "--strategy fsdp: generation runs a whole model"),
    (["--batch-size", "0"], "--batch-size 0:"),
    (["--temperature", "-1"], "--temperature -1:"),
    (["--prompts", "/no/such.jsonl"], "--prompts /no/such.jsonl: file not found"),
    (["--adapter", "/no/adapter"], "--adapter /no/adapter: no adapter_config.json"),
    (["--model", "/no/model"], "--model /no/model: no model directory"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "hi"}) + "\n")
    base = ["--gpus", "0", "--model", str(tmp_path / "m"), "--prompts", str(tmp_path / "p.jsonl"),
            "--output", str(tmp_path / "out")]
    proc = subprocess.run([sys.executable, "-m", "mgft.cli", "generate", *base, *args],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"mgft: error: {needle}"), proc.stderr
    assert proc.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,needle", [
    (["--model", "/m"], "--prompts is required; pass --prompts"),
    ([], "--model and --prompts are required; pass them"),
])
def test_missing_prompts_names_the_generate_flag(args: list[str], needle: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "mgft.cli", "generate", "--backend", "slurm",
                           *args, "--dry-run"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"mgft: error: {needle}"), proc.stderr


def test_dist_and_gpu_switches_are_on_off_flags_as_for_render() -> None:
    from click.testing import CliRunner
    from mgft.cli.main import main

    base = ["generate", "--backend", "slurm", "--model", "/m", "--prompts", "/p.jsonl",
            "--output", "/o", "--dry-run"]
    on = CliRunner().invoke(main, [*base, "--debug-dist", "--preflight"])
    assert on.exit_code == 0, on.output
    assert "NCCL_DEBUG=INFO" in on.output and "MGFT_PREFLIGHT=1" in on.output
    off = CliRunner().invoke(main, [*base, "--no-debug-dist", "--no-preflight"])
    assert off.exit_code == 0, off.output
    assert "NCCL_DEBUG=INFO" not in off.output and "MGFT_PREFLIGHT" not in off.output
    exclusive = CliRunner().invoke(main, [*base, "--exclusive"])  # a flag: no value after it
    assert exclusive.exit_code == 2 and "--exclusive True: --backend slurm" in exclusive.output
    assert CliRunner().invoke(main, [*base, "--no-exclusive"]).exit_code == 0


def test_options_of_another_backend_are_one_warning(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    proc = subprocess.run([sys.executable, "-m", "mgft.cli", "generate", "--model",
                           str(tmp_path / "m"), "--prompts", str(tmp_path / "p.jsonl"),
                           "--partition", "gpu", "--dry-run"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "mgft: warning: --backend local ignores --partition" in proc.stderr
