from __future__ import annotations

import sys
import types

import pytest
import torch
from mgft.spec.job import Kernels, Strategy, TrainSpec
from mgft_train import kernels
from mgft_train.errors import UsageError

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")


def spec(**kw) -> TrainSpec:
    return TrainSpec(model="m", dataset="d", **kw)


def test_no_liger_where_it_cannot_or_should_not_run(monkeypatch):
    assert kernels.apply_liger(spec(kernels=Kernels.NONE), CUDA, "llama") == []
    assert kernels.apply_liger(spec(), CPU, "llama") == []  # auto on a CPU
    with pytest.raises(UsageError, match="--kernels liger: .*CPU.*auto or none"):
        kernels.apply_liger(spec(kernels=Kernels.LIGER), CPU, "llama")
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.monkey_patch", None)
    assert kernels.apply_liger(spec(), CUDA, "llama") == []  # auto: not installed, no kernels
    with pytest.raises(UsageError, match="cannot be imported.*pip install liger-kernel"):
        kernels.apply_liger(spec(kernels=Kernels.LIGER), CUDA, "llama")


@pytest.fixture
def recording_liger(monkeypatch):
    """Liger is Triton-only, so on this CPU machine its patch table is stood in for by one
    that records what mgft asks of it (the kernels themselves run in bench/perf.py on GPUs)."""
    calls: list[dict] = []

    def apply_to_llama(rope=True, cross_entropy=False, fused_linear_cross_entropy=True,
                       rms_norm=True, swiglu=True, model=None):
        calls.append({"rope": rope, "cross_entropy": cross_entropy, "rms_norm": rms_norm,
                      "fused_linear_cross_entropy": fused_linear_cross_entropy,
                      "swiglu": swiglu})

    fake = types.ModuleType("liger_kernel.transformers.monkey_patch")
    fake.MODEL_TYPE_TO_APPLY_LIGER_FN = {"llama": apply_to_llama}
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.monkey_patch", fake)
    return calls


def test_liger_fuses_the_loss_except_where_zero3_hides_the_head_weight(recording_liger):
    assert kernels.apply_liger(spec(), CUDA, "llama") == [
        "fused_linear_cross_entropy", "rms_norm", "rope", "swiglu"]
    assert kernels.applied() == ["liger:fused_linear_cross_entropy", "liger:rms_norm",
                                 "liger:rope", "liger:swiglu"]
    for stage in (Strategy.ZERO3, Strategy.ZERO3_OFFLOAD):
        assert "fused_linear_cross_entropy" not in kernels.apply_liger(
            spec(strategy=stage), CUDA, "llama")
    assert [c["fused_linear_cross_entropy"] for c in recording_liger] == [True, False, False]
    assert not any(c["cross_entropy"] for c in recording_liger)  # the unfused one: never
    assert kernels.apply_liger(spec(), CUDA, "gpt_neox") == []  # auto: no kernels for it
    with pytest.raises(UsageError, match="no kernels for model type 'gpt_neox'"):
        kernels.apply_liger(spec(kernels=Kernels.LIGER), CUDA, "gpt_neox")
