from __future__ import annotations

import torch
from mgft_train import memory
from mgft_train.distributed import Dist


def test_cpu_peak_memory_is_this_process_rss_in_bytes():
    ctx = Dist(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="none")
    (peak,) = memory.peaks(torch.nn.Linear(2, 2), ctx)
    assert (peak["rank"], peak["device"]) == (0, "cpu")
    # The test process holds torch and a model: well over 50 MB, well under 1 TB.
    assert 50e6 < peak["bytes"] < 1e12
