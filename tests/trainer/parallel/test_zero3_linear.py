"""ZeRO-3's linear: the same numbers as torch's, no gathered weight kept, no frozen input saved.

DeepSpeed's release is `param.data = torch.empty(0)`, its re-gather puts the full weight
back; both are done here by hand, on the real autograd graph."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mgft_train.parallel.zero3_linear import ReferencedWeight, reference_weights, referenced


def _kept_storages(run) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run `run` while recording every tensor autograd saves."""
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    return out, saved


def _holds(saved: list[torch.Tensor], address: int) -> bool:
    return any(t.untyped_storage().nbytes() > 0 and t.untyped_storage().data_ptr() == address
               for t in saved)


def test_a_released_weight_is_read_again_through_the_parameter() -> None:
    weight = torch.nn.Parameter(torch.randn(96, 32), requires_grad=False)
    gathered = weight.data.clone()
    x = torch.randn(2, 5, 32, requires_grad=True)
    address = weight.untyped_storage().data_ptr()
    out, saved = _kept_storages(lambda: ReferencedWeight.apply(x, weight, None))
    weight.data = torch.empty(0)  # released after the forward
    assert not _holds(saved, address)  # no copy of the gathered weight is kept
    weight.data = gathered  # gathered again before the backward
    out.sum().backward()
    assert torch.allclose(x.grad, torch.ones(2, 5, 96) @ gathered)


def test_deepspeeds_linear_saves_a_frozen_layers_input_and_ours_does_not() -> None:
    from deepspeed.runtime.zero.linear import LinearFunctionForZeroStage3

    weight = torch.nn.Parameter(torch.randn(96, 32), requires_grad=False)
    x = torch.randn(2, 5, 32, requires_grad=True)
    for fn, keeps_input in ((LinearFunctionForZeroStage3.apply, True),
                            (ReferencedWeight.apply, False)):
        _, saved = _kept_storages(lambda: fn(x, weight, None))  # noqa: B023 (called at once)
        assert any(t is weight for t in saved)  # both save the parameter itself
        assert _holds(saved, x.untyped_storage().data_ptr()) is keeps_input


@pytest.mark.parametrize("trains", [False, True], ids=["frozen", "trained"])
def test_gradients_equal_torchs_and_the_input_is_saved_only_for_a_trained_weight(
        trains: bool) -> None:
    torch.manual_seed(0)
    w, b, x, g = torch.randn(7, 4), torch.randn(7), torch.randn(3, 2, 4), torch.randn(3, 2, 7)
    grads = []
    for fn in (F.linear, ReferencedWeight.apply):
        ws, bs = w.clone().requires_grad_(trains), b.clone().requires_grad_(trains)
        xs = x.clone().requires_grad_(True)
        out, saved = _kept_storages(lambda: fn(xs, ws, bs))  # noqa: B023 (called at once)
        out.backward(g)
        grads.append((out.detach(), xs.grad, ws.grad, bs.grad))
        if fn is not F.linear:
            assert any(t is ws for t in saved)
            assert _holds(saved, xs.untyped_storage().data_ptr()) is trains
    (out_t, *grad_t), (out_o, *grad_o) = grads
    assert torch.allclose(out_o, out_t)
    for mine, theirs in zip(grad_o, grad_t, strict=True):
        assert (mine is None and theirs is None) or torch.allclose(mine, theirs, atol=1e-6)


def test_only_plain_linears_are_routed() -> None:
    class Sub(torch.nn.Linear):  # stands for bitsandbytes' Linear4bit
        pass

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), Sub(4, 4), torch.nn.ReLU(),
                                torch.nn.Linear(4, 2, bias=False))
    x = torch.randn(3, 4)
    before = model(x)
    assert reference_weights(model) == referenced(model) == 2
    assert "forward" not in model[1].__dict__
    assert torch.allclose(model(x), before)


@pytest.mark.e2e
def test_under_real_zero3_lora_saves_no_frozen_input_and_the_same_gradients(tiny, cpu_job_env):
    """The trainer's own ZeRO-3 path on 2 gloo ranks, against DeepSpeed's linear: what autograd
    saves drops by exactly the frozen layers' inputs, and loss and gradients are unchanged."""
    script = Path(__file__).with_name("zero3_saved.py")
    reports = {}
    for mode in ("ours", "deepspeed"):
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               "--nproc-per-node=2", str(script), str(tiny.model_dir),
                               str(tiny.data), mode], env=cpu_job_env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        reports[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    ours, theirs = reports["ours"], reports["deepspeed"]
    config = json.loads((tiny.model_dir / "config.json").read_text())
    h, inter, layers = (config[k] for k in ("hidden_size", "intermediate_size",
                                             "num_hidden_layers"))
    # Per token: each block's two normed hidden states and its MLP's gated product, and
    # lm_head's input, in fp32.
    frozen_inputs = ours["tokens"] * (layers * (2 * h + inter) + h) * 4
    assert theirs["saved_bytes"] - ours["saved_bytes"] == frozen_inputs
    assert ours["loss"] == theirs["loss"]
    assert ours["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-6)
