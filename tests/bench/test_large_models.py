"""bench/large_models.py's CPU plumbing (--tiny): random-init QLoRA trains through
`mgft submit` replicated (ddp) and sharded (fsdp), each row with the plan's prediction."""

from __future__ import annotations

import json

import large_models


def test_tiny_rows(tmp_path):
    assert large_models.main(["--tiny", "--out", str(tmp_path), "--steps", "2"]) == 0
    rows = json.loads((tmp_path / "large-models.json").read_text())["rows"]
    assert [r["run"]["name"] for r in rows] == ["tiny-qlora", "tiny-qlora-fsdp"]
    for row in rows:
        assert row["exit"] == 0 and len(row["losses"]) == 2
        assert row["predicted"]["peak"] > 0 and row["tokens_per_s_per_gpu"] > 0
    ddp, fsdp = (r["quantized_bytes"] for r in rows)
    assert ddp["local"] == ddp["whole"] and abs(fsdp["local"] - fsdp["whole"] / 2) <= 64
