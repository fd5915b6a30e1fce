"""bench/compile_report.py on hand-made metrics files whose figures are worked out here."""

from __future__ import annotations

import json

import compile_report
import pytest

GIB = 2**30


def metrics(step_s: list[float], tokens: int, peak_gib: float, loss: float) -> dict:
    return {"step_s": step_s, "step_tokens": [tokens] * len(step_s),
            "peak_memory_bytes": int(peak_gib * GIB), "last_loss": loss}


def test_speed_up_is_the_median_step_and_compile_time_the_first_two_steps(tmp_path):
    # eager: 1,000-token steps of 1 s after a 5 s first step; compiled: 0.5 s steps after
    # 20 s and 10 s of compiling. Medians 1,000 and 2,000 tok/s: 2.00x. Extra time in the
    # first two steps: eager 5 + 1 - 2 = 4 s, compiled 20 + 10 - 1 = 29 s; compiling: 25 s.
    (tmp_path / "e.metrics.json").write_text(json.dumps(metrics([5, 1, 1, 1, 1], 1000, 40, 2.0)))
    (tmp_path / "c.metrics.json").write_text(
        json.dumps(metrics([20, 10, 0.5, 0.5, 0.5], 1000, 41, 2.01)))
    assert compile_report.main(["--out", str(tmp_path), "--pair", "LoRA", "e", "c"]) == 0
    [row] = json.loads((tmp_path / "compile.json").read_text())
    assert row["eager"]["tokens_per_s_median_step"] == pytest.approx(1000)
    assert row["compiled"]["tokens_per_s_median_step"] == pytest.approx(2000)
    assert row["speedup"] == pytest.approx(2.0)
    assert row["compile_s"] == pytest.approx(25.0)
    assert row["loss_gap"] == pytest.approx(0.005)
    assert "| LoRA | 1,000 | 2,000 | 2.00× | 40.0 → 41.0 | 25 | 0.50% |" in (
        tmp_path / "compile.md").read_text()
    assert (tmp_path / "compile.png").stat().st_size > 10_000
