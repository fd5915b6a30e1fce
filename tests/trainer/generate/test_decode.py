"""The attention backends generation runs under."""

from __future__ import annotations

import torch
from mgft_train.generate.decode import planless_attention


def test_generation_attention_leaves_out_cudnn_and_restores_it_after():
    before = torch.backends.cuda.cudnn_sdp_enabled()
    with planless_attention():
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled()
        assert torch.backends.cuda.mem_efficient_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
