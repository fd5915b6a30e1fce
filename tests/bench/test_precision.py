"""bench/precision.py: a choice the plan rules out is recorded, not run; end to end on CPU
(the tiny Llama, 2 gloo processes per run, ~45 s), every choice runs and records what ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import precision as bench
import pytest

from tests.conftest import REPO

SCRIPT = REPO / "bench" / "precision.py"


def test_a_choice_the_plan_rules_out_is_recorded_with_the_plans_numbers(tmp_path):
    args = bench.parse_args(["--out", str(tmp_path), "--gpu-memory", "80"])
    row = bench.run_one(args, Path("llama-3-8b"), tmp_path / "unused.jsonl", "mixed")
    assert row["status"].startswith("skipped: the plan's peak")
    assert row["plan"]["bytes_per_param"]["total"] == 16 and not row["plan"]["fits"]
    assert "| mixed | 2+2+8+4 = 16 |" in bench.markdown(
        {"settings": vars(args), "host": "h", "runs": [row]})


def test_unknown_precisions_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--out", str(tmp_path), "--precisions", "mixed,fp8"])
    assert "--precisions fp8" in capsys.readouterr().err


@pytest.mark.e2e
def test_tiny_runs_every_choice_and_records_what_ran(tmp_path):
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--steps", "3", "--out",
                           str(tmp_path / "out"), "--work", str(tmp_path / "work")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "precision-tiny-1g.json").read_text())
    runs = {r["precision"]: r for r in result["runs"]}
    assert list(runs) == ["mixed", "bf16-kahan", "bf16"]
    for name, run in runs.items():
        assert run["status"] == "ok" and run["world_size"] == 2 and run["strategy"] == "ddp"
        # CPUs train in fp32 whatever the setting, and say so
        assert run["ran"]["setting"] == name and run["ran"]["weights"] == "float32"
        assert len(run["losses"]) == 3 and run["peak_gib"] > 0
    assert "| bf16-kahan |" in (tmp_path / "out" / "precision-tiny-1g.md").read_text()
    # a later invocation with the same settings redoes its choices and keeps the others
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--steps", "3", "--out",
                           str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                           "--precisions", "bf16"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    again = json.loads((tmp_path / "out" / "precision-tiny-1g.json").read_text())
    assert [r["precision"] for r in again["runs"]] == ["mixed", "bf16-kahan", "bf16"]
    assert again["runs"][0] == runs["mixed"] and again["runs"][2]["status"] == "ok"
