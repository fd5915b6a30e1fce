"""bench/fidelity.py's CPU plumbing (--tiny): the GPU table's comparison runs end to end, and
its control is large where the family has a feature to drop."""

from __future__ import annotations

import json

import fidelity


def test_tiny_fidelity_and_speed_rows(tmp_path):
    assert fidelity.main(["--tiny", "--out", str(tmp_path), "--families", "gemma2,mistral",
                          "--steps", "2"]) == 0
    report = json.loads((tmp_path / "fidelity.json").read_text())
    rows = {r["family"]: r for r in report["fidelity"]}
    for row in rows.values():  # fp32 on the CPU: the per-sample kernel is exact
        assert row["loss_gap_per_token"]["mgft_vs_eager"] < 1e-5
        assert row["lora_grad_rel_error"]["mgft_vs_eager"] < 1e-5
        assert row["attention_kernels"] == {"per_sample": "CPU"}
    for family in rows:  # softcap and window (gemma2), window (mistral)
        assert rows[family]["loss_gap_per_token"]["features_dropped_vs_eager"] > 1e-3
    speed = {(r["family"], r["forced"]): r for r in report["speed"]}
    assert set(speed) == {("gemma2", None), ("mistral", None)}
    assert all(r["exit"] == 0 and len(r["losses"]) == 2 for r in speed.values())
