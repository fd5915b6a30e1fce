"""Bus-bandwidth arithmetic (nccl-tests convention) and a real 2-rank gloo sweep through
`mgft doctor --bandwidth`, which proves the torchrun plumbing without a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mgft.doctor import bandwidth as bw


@pytest.mark.parametrize("ranks,factor", [(1, 0.0), (2, 1.0), (4, 1.5), (8, 1.75)])
def test_bus_factor_is_two_n_minus_one_over_n(ranks: int, factor: float) -> None:
    assert bw.bus_factor(ranks) == factor


def test_busbw_of_the_h200_reference_figure() -> None:
    # 1 GiB all-reduced by 4 ranks in 4.52 ms: algbw 237.5 GB/s, busbw 356 GB/s.
    assert bw.busbw(1 << 30, 4.52e-3, 4) == pytest.approx(356.3, abs=0.1)


@pytest.mark.parametrize("text,sizes", [
    ("1M,16M,1G", [1 << 20, 16 << 20, 1 << 30]),
    ("64K, 1GiB, 512", [64 << 10, 1 << 30, 512]),
    ("2mb", [2 << 20]),
])
def test_parse_sizes(text: str, sizes: list[int]) -> None:
    assert bw.parse_sizes(text) == sizes


@pytest.mark.parametrize("bad", ["", "1T", "0M", "x"])
def test_parse_sizes_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        bw.parse_sizes(bad)


def result(busbw: float, expected: float | None) -> dict:
    return {"results": [{"bytes": 1 << 20, "busbw_gbs": 10.0},
                        {"bytes": 1 << 30, "busbw_gbs": busbw}],
            "expected": {"gbs": expected, "basis": "NVLink v4 x18 per GPU"} if expected else None}


def test_verdict_compares_the_largest_size_with_the_nominal() -> None:
    good = bw.verdict(result(356.0, 450.0))
    assert good.status == "pass"
    assert good.text == ("356.0 GB/s at 1 GiB = 79% of nominal 450 GB/s "
                         "(NVLink v4 x18 per GPU)")
    assert bw.verdict(result(200.0, 450.0)).status == "warn"
    assert bw.verdict(result(1.0, None)).status == "info"


@pytest.mark.e2e
def test_two_gloo_ranks_through_mgft_doctor(tmp_path: Path) -> None:
    out = tmp_path / "doctor.json"
    proc = subprocess.run([sys.executable, "-m", "mgft.cli", "doctor", "--bandwidth", "--cpu",
                           "2", "--sizes", "64K,1M", "--iters", "3", "--warmup", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    sweep = report["bandwidth"]
    assert (sweep["world_size"], sweep["backend"], sweep["dtype"]) == (2, "gloo", "float32")
    assert [r["bytes"] for r in sweep["results"]] == [64 << 10, 1 << 20]
    for r in sweep["results"]:
        assert r["seconds"] > 0
        assert r["algbw_gbs"] == pytest.approx(r["bytes"] / r["seconds"] / 1e9)
        assert r["busbw_gbs"] == pytest.approx(r["algbw_gbs"] * 2 * (2 - 1) / 2)
    assert "busbw (GB/s)" in proc.stdout and "1 MiB" in proc.stdout
    assert {c["name"] for c in report["checks"]} >= {"driver", "gpus", "shm", "rendezvous"}
