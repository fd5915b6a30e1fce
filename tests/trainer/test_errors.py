from __future__ import annotations

from mgft_train.errors import UsageError


def test_rank_0_reports_as_a_single_process_and_other_ranks_name_themselves() -> None:
    err = UsageError("--output", "/o", "holds a finished run", "pick a new --output")
    assert err.report("mgft-train", 0) == (
        "mgft-train: --output /o: holds a finished run; pick a new --output")
    assert err.report("mgft-train", 3) == (
        "mgft-train: rank 3: --output /o: holds a finished run; pick a new --output")
