"""bench/plan_accuracy.py's own parts on CPU: perf.json configurations read by any of their
key spellings and re-predicted, and the allocator-history summary of --snapshot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
from memory_snapshot import summarize  # noqa: E402
from plan_from_perf import GIB, eval_len, perf_runs, read_config  # noqa: E402

CONFIG = {"arch": "llama-3-8b", "tuning": "lora", "strategy": "zero3", "gpus": 4,
          "micro_batch": 5, "grad_accum": 1, "seq_len": 1024, "kernels": "auto",
          "packing": True, "activation_checkpointing": False, "lora_r": 16,
          "peak_gib_per_gpu": 30.5}


def perf_json(tmp_path: Path, runs: list[dict]) -> Path:
    path = tmp_path / "perf.json"
    path.write_text(json.dumps({"settings": {"arch": "llama-3-8b", "lengths": "128-768",
                                             "seq_len": 1024}, "runs": runs}))
    return path


def test_config_keys_are_read_by_any_spelling() -> None:
    canonical = read_config(CONFIG, {})
    assert isinstance(canonical, dict)
    assert canonical["peak_bytes"] == 30.5 * GIB and canonical["micro_batch"] == 5
    renamed = {"model": "llama-3-8b", "Tuning": "lora", "strategy": "zero3",
               "world-size": 4, "micro-batch": "5", "max_seq_len": 1024, "kernels": "auto",
               "packed": "true", "gradient_checkpointing": "no", "lora_rank": 16,
               "peak_gib_max": [29.0, 30.5]}
    assert read_config(renamed, {}) == canonical
    # the run entry and the file's settings fill what the config lacks
    entry = {"tuning": "lora", "strategy": "zero3", "gpus": 4}
    partial = {k: v for k, v in CONFIG.items() if k not in ("tuning", "strategy", "gpus")}
    assert read_config(partial, {"entry": entry}) == canonical
    assert read_config({"arch": "llama-3-8b"}, {}) == (
        "no tuning, strategy, gpus, micro_batch, seq_len, peak_gib in its config")


def test_perf_runs_skip_what_is_not_mgft_or_not_measured(tmp_path: Path) -> None:
    runs = [{"name": "mgft-lora-zero3-4g", "impl": "mgft", "status": "ok", "config": CONFIG},
            {"name": "base-lora-zero3-4g", "impl": "base", "status": "ok"},
            {"name": "mgft-full-fsdp-4g", "impl": "mgft", "status": "failed"},
            {"name": "mgft-odd", "impl": "mgft", "status": "ok", "config": {"arch": "x"}}]
    read = dict(perf_runs(perf_json(tmp_path, runs)))
    assert set(read) == {"mgft-lora-zero3-4g", "mgft-odd"}
    assert read["mgft-lora-zero3-4g"]["eval_len"] == 768  # the data's longest sample
    assert isinstance(read["mgft-odd"], str)
    assert eval_len({"lengths": [128, 4096]}, 1024) == 1024
    assert eval_len({}, 2048) == 2048


def test_from_perf_predicts_each_run_and_writes_the_table(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    runs = [{"name": "mgft-lora-zero3-4g", "impl": "mgft", "status": "ok", "config": CONFIG},
            {"name": "mgft-tiny", "impl": "mgft", "status": "ok",
             "config": CONFIG | {"arch": "no-such-model"}}]
    out = tmp_path / "accuracy.json"
    # --from-perf alone: re-predicts the measured runs and runs none of its own
    proc = subprocess.run([sys.executable, str(BENCH / "plan_accuracy.py"),
                           "--from-perf", str(perf_json(tmp_path, runs)), "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {r["config"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"perf:mgft-lora-zero3-4g", "perf:mgft-tiny"}
    row = rows["perf:mgft-lora-zero3-4g"]
    from mgft.plan.arch import KNOWN
    from mgft.plan.memory import Assumptions, Job, estimate
    from mgft.spec.job import Strategy

    job = Job(arch=KNOWN["llama-3-8b"], micro_batch=5, seq_len=1024, gpus_per_node=4)
    expected = estimate(job, Strategy.ZERO3, Assumptions(eval_len=768))
    assert row["predicted"]["peak"] == pytest.approx(expected.peak)
    assert row["predicted"]["loss"] == expected.loss and row["predicted"]["peak_at"]
    assert row["error"] == pytest.approx((expected.peak - 30.5 * GIB) / (30.5 * GIB))
    assert rows["perf:mgft-tiny"]["status"].startswith("skipped: ")
    assert "perf:mgft-lora-zero3-4g" in proc.stdout


def alloc(addr: int, size: int, name: str) -> dict:
    return {"action": "alloc", "addr": addr, "size": size,
            "frames": [{"filename": "/x/torch/nn/modules/module.py", "line": 1, "name": "call"},
                       {"filename": "/x/site-packages/transformers/llama.py", "line": 7,
                        "name": name}]}


def test_snapshot_summary_lists_what_was_alive_at_the_peak() -> None:
    events = [alloc(1, 100, "weights"), alloc(2, 500, "logits"),
              {"action": "free_requested", "addr": 2, "size": 500},
              {"action": "free_completed", "addr": 2, "size": 500},  # counted once
              alloc(3, 300, "activations"), alloc(4, 50, "small"),
              {"action": "free_completed", "addr": 3, "size": 300}, alloc(5, 10, "late")]
    summary = summarize({"device_traces": [events]}, device=0, top=2)
    assert summary["peak_bytes"] == 600  # weights + logits, before the logits were freed
    assert [t["bytes"] for t in summary["top"]] == [500, 100]
    # noise frames are dropped; site-packages prefixes are cut
    assert summary["top"][0]["frames"] == ["transformers/llama.py:7 logits"]
    assert summarize({"device_traces": []})["peak_bytes"] == 0


def test_snapshot_sites_add_up_to_the_whole_peak(capsys) -> None:
    backward = {"action": "alloc", "addr": 9, "size": 70, "frames": []}
    events = [alloc(1, 100, "weights"), alloc(2, 40, "act"), alloc(3, 40, "act"),
              alloc(4, 30, "act"), backward, {"action": "free_completed", "addr": 4},
              alloc(6, 5, "late")]
    summary = summarize({"device_traces": [events]}, device=0, top=1)
    assert summary["by_site"] == [
        {"site": "transformers/llama.py:7 act", "bytes": 110, "count": 3},
        {"site": "transformers/llama.py:7 weights", "bytes": 100, "count": 1},
        {"site": "(no Python frame: autograd's backward)", "bytes": 70, "count": 1}]
    assert sum(s["bytes"] for s in summary["by_site"]) == summary["peak_bytes"] == 280
    from plan_accuracy import print_sites

    print_sites([{"config": "no-snapshot"}, {"config": "8b-x", "snapshot": summary}], n=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("8b-x: rank 0 at its peak (0.00 GiB)")
    assert [line.split()[-1] for line in lines[1:]] == ["act", "weights"]  # the 2 largest


def test_snapshot_hook_wraps_the_trainer_in_its_workers_only(tmp_path: Path) -> None:
    """--snapshot's sitecustomize: in a torchrun worker (LOCAL_RANK set) model loading starts
    the allocator history and reading the peaks writes its summary; elsewhere nothing."""
    pytest.importorskip("torch")
    code = ("import mgft_train.model as a, mgft_train.memory as b; "
            "print(a.load_model.__name__, b.peaks.__name__)")
    env = {"PYTHONPATH": str(BENCH / "snapshot_hook"), "MGFT_BENCH_SNAPSHOT_DIR": str(tmp_path)}
    import os

    def names(extra: dict) -> str:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=os.environ | env | extra)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    assert names({"LOCAL_RANK": "0"}) == ["recorded", "recorded"]
    assert names({}) == ["load_model", "peaks"]
