"""bench/generate_probe_report.py: the slow-down beside other processes, throughput by batch
size, and the chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from generate_probe_report import by_batch_size, chart, contention

from tests.bench.conftest import BENCH


def group(call: int, variant: str, steady: list[float], batch: int = 32,
          omp: str | None = "4") -> dict:
    return {"call": call, "variant": variant, "batch_size": batch, "omp_num_threads": omp,
            "processes": len(steady), "steady_batch_s": steady,
            "runs": [{"peak_gib": 2.0 + batch / 64} for _ in steady]}


GROUPS = [group(1, "alone", [1.0], omp=None), group(1, "together", [1.1, 1.2, 1.0, 1.1], omp=None),
          group(2, "alone", [2.0]), group(2, "alone, taskset", [1.0]),
          group(2, "together", [2.2, 2.2, 2.2, 2.2]),
          group(2, "liger, together", [9.0, 9.0, 9.0, 9.0]),
          group(3, "together", [5.0, 5.0, 5.0, 5.0]),  # no process alone in call 3
          group(4, "batch 64", [1.6], batch=64), group(4, "batch 16", [1.0], batch=16)]


def test_together_is_compared_with_alone_in_the_same_call_and_batch() -> None:
    rows = contention(GROUPS)
    assert [(r["call"], r["batch_size"]) for r in rows] == [(1, 32), (2, 32)]
    first, second = rows
    assert first["together_s"] == pytest.approx(1.1) and first["slowest_s"] == 1.2
    assert first["slower"] == pytest.approx(0.1) and first["omp_num_threads"] is None
    assert second["alone_s"] == 2.0 and second["slower"] == pytest.approx(0.1)


def test_throughput_is_prompts_over_seconds_in_batch_order(tmp_path: Path) -> None:
    rows = by_batch_size(GROUPS)
    assert [r["batch_size"] for r in rows] == [16, 64]
    assert [r["prompts_per_s"] for r in rows] == [pytest.approx(16.0), pytest.approx(40.0)]
    png = tmp_path / "probe.png"
    chart(contention(GROUPS), rows, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_committed_results_show_what_perf_notes_says() -> None:
    groups = json.loads((BENCH / "results" / "generate-probe.json").read_text())["groups"]
    slower = [r["slower"] for r in contention(groups)]
    assert len(slower) == 4 and all(0.03 < s < 0.08 for s in slower)  # "4-7% slower"
    sizes = {r["batch_size"]: r for r in by_batch_size(groups)}
    assert sizes[128]["prompts_per_s"] / sizes[16]["prompts_per_s"] == pytest.approx(6, rel=0.05)
