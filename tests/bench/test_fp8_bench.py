"""bench/fp8_layers.py and bench/fp8_fidelity.py on the CPU: their records, at small sizes."""

from __future__ import annotations

import json

import fp8_fidelity
import fp8_layers


def test_fp8_layers_records_error_and_times_per_layer(tmp_path):
    out = tmp_path / "layers.json"
    assert fp8_layers.main(["--cpu", "--out", str(out), "--repeat", "1"]) == 0
    result = json.loads(out.read_text())
    assert [r["layer"] for r in result["layers"]] == [s[0] for s in fp8_layers.SHAPES]
    for r in result["layers"]:
        assert 0.01 < r["rel_err_output"] < 0.0625 and 0.01 < r["rel_err_input_grad"] < 0.0625
        assert r["bf16_s"] > 0 and r["fp8_eager_s"] > 0
    assert set(result["per_micro_batch_s"]) == {"bf16_s", "fp8_eager_s"}


def test_fp8_fidelity_trains_both_and_compares_the_losses(tmp_path):
    out = tmp_path / "fidelity.json"
    assert fp8_fidelity.main(["--out", str(out), "--steps", "4", "--families", "llama"]) == 0
    (row,) = json.loads(out.read_text())["families"]
    assert row["fp8_layers"] == 28 and len(row["losses"]["fp8"]) == 4
    assert row["losses"]["fp8"] != row["losses"]["full"]  # it did run in FP8
    assert abs(row["last_tenth_rel_diff"]) < 0.01
