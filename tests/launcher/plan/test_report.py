"""`mgft plan` on the command line: table, JSON, bad input, and nothing heavy imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from mgft.cli.main import main
from mgft.plan.arch import KNOWN
from mgft.plan.memory import GIB, Job, estimate
from mgft.spec.job import Strategy, Tuning

from tests.launcher.imports import heavy_modules_after


def plan(*args: str):
    return CliRunner().invoke(main, ["plan", *args])


def test_json_holds_every_strategy_as_estimated() -> None:
    result = plan("--model", "llama-3-8b", "--tuning", "qlora", "--gpus", "4",
                  "--micro-batch", "8", "--seq-len", "2048", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    rows = {r["strategy"]: r for r in data["strategies"]}
    assert set(rows) == {s.value for s in Strategy if s is not Strategy.AUTO}
    job = Job(arch=KNOWN["llama-3-8b"], tuning=Tuning.QLORA, gpus_per_node=4, micro_batch=8,
              seq_len=2048)
    for name, row in rows.items():
        b = estimate(job, Strategy(name))
        assert row["peak_gib"] == round(b.peak / GIB, 2)
        assert row["activations_gib"] == round(b.activations / GIB, 2)
    assert data["recommended"] in rows and data["model"]["params"] == KNOWN["llama-3-8b"].params


def test_table_names_every_strategy_and_the_recommendation() -> None:
    result = plan("--model", "llama-3-70b", "--tuning", "full", "--gpus", "8", "--nodes", "2",
                  "--micro-batch", "1", "--activation-checkpointing", "--gpu-memory", "141",
                  "--host-memory", "2048")  # fsdp's final save gathers 263 GiB on rank 0
    assert result.exit_code == 0, result.output
    for strategy in ("ddp", "fsdp", "zero1", "zero2", "zero3", "zero3-offload", "mp"):
        assert f"│ {strategy}" in result.output
    assert "recommended: fsdp" in result.output and "activation checkpointing on" in result.output


def test_model_list() -> None:
    result = plan("--model", "list")
    assert result.exit_code == 0 and all(name in result.output for name in KNOWN)


@pytest.mark.parametrize("args,needle", [
    ([], "--model is required; pass a known architecture (`mgft plan --model list` shows "
         "them), a model directory or a config.json\n"),
    (["--model", "gpt-9"], "--model gpt-9: neither a config.json"),
    (["--model", "llama-3-8b", "--micro-batch", "0"], "--micro-batch 0:"),
    (["--model", "llama-3-8b", "--dtype", "fp8"], "--dtype fp8: not one of the choices"),
    (["--model", "llama-3-8b", "--gpus", "0"], "--gpus 0: mgft plan sizes GPU memory"),
    (["--model", "llama-3-8b", "--tuning", "dora"], "--tuning dora:"),
    (["--model", "llama-3-8b", "--margin", "0.95"], "--margin 0.95:"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "mgft.cli", "plan", *args],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"mgft: error: {needle}"), proc.stderr
    assert proc.stderr.count("\n") == 1


def test_plan_imports_nothing_heavy() -> None:
    assert heavy_modules_after(["plan", "--model", "llama-3-8b", "--gpus", "8", "--json"]) == []


def test_kernels_and_packing_flags_reach_the_estimate() -> None:
    def peaks(*extra: str) -> dict:
        result = plan("--model", "llama-3-8b", "--gpus", "4", "--micro-batch", "4", "--json",
                      *extra)
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        return data["job"] | {r["strategy"]: r for r in data["strategies"]}

    liger, none = peaks(), peaks("--kernels", "none", "--no-packing")
    assert (liger["kernels"], liger["packing"]) == ("auto", True)
    assert (none["kernels"], none["packing"]) == ("none", False)
    # the logits path holds 12 bytes per token and vocabulary entry; the fused loss does not
    assert none["ddp"]["loss_gib"] > 20 * liger["ddp"]["loss_gib"]
    assert none["ddp"]["activations_gib"] > liger["ddp"]["activations_gib"]
    # ZeRO-3 keeps the logits path whatever the kernels
    assert liger["zero3"]["loss_gib"] == none["zero3"]["loss_gib"]
    assert {"eval_gib", "peak_at", "backward_buffers_gib"} <= set(liger["ddp"])
    bad = plan("--model", "llama-3-8b", "--kernels", "triton")
    assert bad.exit_code == 2 and "--kernels triton" in bad.output


def test_precision_reaches_the_estimate_and_each_choice_shows_its_cost() -> None:
    args = ("--model", "llama-3-8b", "--tuning", "full", "--gpus", "1", "--gpu-memory", "141")
    result = plan(*args, "--precision", "bf16-kahan", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["job"]["precision"] == "bf16-kahan"
    # ZeRO's optimizer keeps fp32 masters of its own: not a candidate for bf16 weights
    assert {r["strategy"] for r in data["strategies"]} == {"ddp", "fsdp"}
    costs = {r["precision"]: r for r in data["precisions"]}
    assert {p: r["bytes_per_param"]["total"] for p, r in costs.items()} == {
        "mixed": 16, "bf16-kahan": 12, "bf16": 8}
    assert costs["mixed"]["bytes_per_param"] == {"weights": 2, "grads": 2, "optimizer": 8,
                                                 "master": 4, "total": 16}
    job = Job(arch=KNOWN["llama-3-8b"], tuning=Tuning.FULL, gpus_per_node=1)
    assert costs["mixed"]["ddp_peak_gib"] == round(estimate(job, Strategy.DDP).peak / GIB, 2)
    table = plan(*args).output
    assert "By --precision" in table and "mixed*" in table and "bf16-kahan " in table


def test_lora_dropout_recompute_reaches_the_estimate() -> None:
    """--lora-dropout-recompute drops the dropout copies where the trainer recomputes them
    (ddp, zero2) and nowhere else (fsdp, zero3 store them whatever the flag); the saving is
    what a dropout of 0 saves."""
    def rows(*extra: str) -> dict:
        result = plan("--model", "llama-3-8b", "--gpus", "4", "--micro-batch", "4", "--json",
                      *extra)
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        return data["job"] | {r["strategy"]: r["activations_gib"] for r in data["strategies"]}

    stored, recomputed, none = (rows(), rows("--lora-dropout-recompute"),
                                rows("--lora-dropout", "0"))
    assert (stored["lora_dropout_recompute"], recomputed["lora_dropout_recompute"]) == (
        False, True)
    for strategy in ("ddp", "zero2"):
        assert recomputed[strategy] == none[strategy] < stored[strategy]
    for strategy in ("fsdp", "zero3"):
        assert recomputed[strategy] == stored[strategy] > none[strategy]
