"""--kernels fp8 (mgft_train/fp8.py) on the CPU: torch._scaled_mm runs here too (row-wise
scales, e4m3 operands), so the layer's own path is checked against an emulation written
from the definition (dequantize each operand, multiply in fp32) and against the bf16/fp32
layer it replaces, within e4m3's error bound. The GPU speed is bench/perf.py's."""

from __future__ import annotations

import pytest
import torch
from mgft_train import fp8
from mgft_train.errors import UsageError

E4M3_HALF_SPACING = 2.0**-4  # 3 mantissa bits: relative spacing 2^-3 among normals
E4M3_SUBNORMAL_HALF = 2.0**-10  # subnormal spacing 2^-9, in units of the row's scale
# A well-conditioned tiny model: the families config (0.2) makes logits so large that a 1%
# change in them moves the softmax gradient by tens of percent, FP8 or not.
INIT = 0.02


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.to(torch.float32) * scale


def rows_with_outliers(m: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    x[:, 3] *= 40.0  # an outlier column, as LLM activations have
    x[1] = 0.0  # an all-zero row
    x[2] *= 1e-6  # a tiny row
    return x


def test_quantize_rows_is_within_half_an_e4m3_spacing_of_every_element():
    x = rows_with_outliers(9, 80)
    q, scale = fp8.quantize_rows(x)
    assert q.dtype is torch.float8_e4m3fn and q.shape == x.shape
    assert scale.dtype is torch.float32 and scale.shape == (9, 1)
    # Each row's largest magnitude lands exactly on e4m3's largest finite value.
    nonzero = x.abs().amax(dim=1) > 0
    assert torch.equal(q.float().abs().amax(dim=1)[nonzero], torch.full((8,), 448.0))
    err = (dequantize(q, scale) - x).abs()
    bound = torch.maximum(E4M3_HALF_SPACING * x.abs(), E4M3_SUBNORMAL_HALF * scale)
    assert (err <= bound * (1 + 1e-6)).all()
    assert torch.equal(dequantize(q, scale)[1], torch.zeros(80))  # zero row: zeros, no NaN
    # The bound is not vacuous: some elements are close to it.
    assert (err / bound).max() > 0.5


def linear(k: int = 64, n: int = 48, bias: bool = False, dtype=torch.float32) -> torch.nn.Linear:
    torch.manual_seed(1)
    layer = torch.nn.Linear(k, n, bias=bias)
    with torch.no_grad():  # rows and columns of unlike sizes, so each scale axis matters
        layer.weight.mul_(torch.logspace(-1, 1, n)[:, None] * torch.logspace(1, -1, k))
    layer.weight.requires_grad_(False)
    return layer.to(dtype)


def emulated(layer: fp8.Fp8Linear, x: torch.Tensor, dy: torch.Tensor):
    """The definition: y = deq(x_q) deq(W_q)^T with x per row and W per output row; dx =
    deq(dy_q) deq(Wt_q)^T with dy per row and W^T per input column."""
    xq, xs = fp8.quantize_rows(x.reshape(-1, x.shape[-1]).float())
    w = dequantize(layer.w, layer.w_scale.reshape(-1, 1))
    y = dequantize(xq, xs) @ w.t()
    dq, ds = fp8.quantize_rows(dy.reshape(-1, dy.shape[-1]).float())
    wt = dequantize(layer.wt, layer.wt_scale.reshape(-1, 1))
    dx = dequantize(dq, ds) @ wt.t()
    return y.reshape(*x.shape[:-1], -1), dx.reshape(x.shape)


def run(layer: torch.nn.Module, x: torch.Tensor, dy: torch.Tensor):
    x = x.detach().clone().requires_grad_(True)
    y = layer(x)
    y.backward(dy)
    return y.detach(), x.grad


def close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    return float((a.float() - b.float()).norm() / b.float().norm()) <= rtol


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_the_scaled_matmul_computes_the_dequantized_product_forward_and_backward(dtype, rtol):
    layer = fp8.Fp8Linear(linear(dtype=dtype))
    x = rows_with_outliers(2 * 7, 64).reshape(2, 7, 64).to(dtype)
    dy = torch.randn(2, 7, 48, generator=torch.Generator().manual_seed(3)).to(dtype)
    y, dx = run(layer, x, dy)
    y_ref, dx_ref = emulated(layer, x, dy)
    assert y.dtype is dtype and dx.dtype is dtype and y.shape == (2, 7, 48)
    assert close(y, y_ref, rtol) and close(dx, dx_ref, rtol)


def test_a_scale_on_the_wrong_axis_is_caught_by_the_same_check():
    """The emulation check is not vacuous: swap which copy's scales the forward multiplies by
    (per input column instead of per output row) and it fails."""
    layer = fp8.Fp8Linear(linear())
    x = rows_with_outliers(14, 64)
    dy = torch.randn(14, 48, generator=torch.Generator().manual_seed(3))
    y_ref, dx_ref = emulated(layer, x, dy)
    layer.w_scale = layer.w_scale.flip(-1)  # wrong scale per output column
    y, _ = run(layer, x, dy)
    assert not close(y, y_ref, 0.1)
    broken = fp8.Fp8Linear(linear())
    broken.wt_scale = broken.wt_scale.flip(-1)  # wrong scale per input column
    _, dx = run(broken, x, dy)
    assert not close(dx, dx_ref, 0.1)


@pytest.mark.parametrize("bias", [False, True])
def test_fp8_layer_is_within_e4m3_error_of_the_full_precision_layer(bias):
    """Against the layer it replaces: each element of x, W, dy carries at most 2^-4 relative
    rounding, so the products are off by a few percent (well under 2 x 2^-4 = 12.5%)."""
    full = linear(bias=bias)
    if bias:
        torch.nn.init.normal_(full.bias)
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(4))
    dy = torch.randn(32, 48, generator=torch.Generator().manual_seed(5))
    errors = fp8.layer_error(full, x, dy)
    assert 0.005 < errors["output"] < 2 * E4M3_HALF_SPACING
    assert 0.005 < errors["input_grad"] < 2 * E4M3_HALF_SPACING
    assert 0.005 < errors["weight"] < E4M3_HALF_SPACING
    assert fp8.Fp8Linear(full).bias is full.bias


def lora_model(model_type: str = "llama"):
    from mgft.spec.job import TrainSpec
    from mgft_train import tiny_families
    from mgft_train.model import add_lora
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = tiny_families.config(model_type, initializer_range=INIT)
    model = AutoModelForCausalLM.from_config(config)
    return add_lora(model, TrainSpec(model="m", dataset="d", lora_dropout=0.0))


def test_quantize_base_swaps_only_adapted_frozen_linears_and_adapters_still_train():
    import copy

    model = lora_model()
    reference = copy.deepcopy(model)
    adapters = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen_linears = len(fp8.frozen_base_layers(model))
    assert frozen_linears == 4 * 7  # 4 blocks x q,k,v,o,gate,up,down
    assert fp8.quantize_base(model, torch.device("cpu")) == frozen_linears
    assert fp8.applied(model) == [f"fp8:e4m3-rowwise:{frozen_linears}-linears",
                                  "fp8:quantize-eager"]  # Triton or compiled on CUDA only
    assert fp8.applied(reference) == []
    assert {n for n, p in model.named_parameters() if p.requires_grad} == adapters
    # The output head and embedding keep their full-precision weights; no FP8 parameter
    # or buffer exists for an optimizer, DDP or a state dict to meet.
    head = model.get_base_model().lm_head
    assert type(head) is torch.nn.Linear and head.weight.dtype is torch.float32
    assert all(p.dtype is torch.float32 for p in model.parameters())
    assert all(b.dtype is not torch.float8_e4m3fn for b in model.buffers())
    assert not any("base_layer.weight" in k for k in model.state_dict())

    g = torch.Generator().manual_seed(6)
    ids = torch.randint(3, 256, (2, 24), generator=g)
    # B starts at zero, so both models compute the base alone: perturb it to see the adapters.
    for m in (model, reference):
        torch.manual_seed(7)
        for n, p in m.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.05)
    out, ref = model(input_ids=ids, labels=ids), reference(input_ids=ids, labels=ids)
    assert abs(out.loss.item() - ref.loss.item()) / ref.loss.item() < 0.01
    assert out.loss.item() != ref.loss.item()  # it did compute in FP8
    out.loss.backward()
    ref.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    ref_grads = {n: p.grad for n, p in reference.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    a = torch.cat([grads[n].flatten() for n in sorted(grads)])
    b = torch.cat([ref_grads[n].flatten() for n in sorted(ref_grads)])
    # Each FP8 matmul is ~3.5% off (the test above); through 4 blocks forward and back the
    # adapters' gradients stay within 25% and point the same way.
    assert close(a, b, 0.25)
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.97


def test_no_fp8_without_adapters_nor_on_a_cpu():
    with pytest.raises(UsageError, match="--kernels fp8: .*no frozen Linear layers"):
        fp8.quantize_base(torch.nn.Sequential(torch.nn.Linear(16, 16)), torch.device("cpu"))
    with pytest.raises(UsageError, match="--kernels fp8: .*CPU.*--kernels auto"):
        fp8.check_device(torch.device("cpu"))


def test_the_trainer_refuses_fp8_on_a_cpu_before_building_the_model(tiny):
    from types import SimpleNamespace

    from mgft.spec.job import Kernels, TrainSpec
    from mgft_train.model import load_model

    spec = TrainSpec(model=str(tiny.model_dir), dataset="d", kernels=Kernels.FP8)
    with pytest.raises(UsageError, match="--kernels fp8: .*CPU"):
        load_model(spec, SimpleNamespace(device=torch.device("cpu")))


@pytest.mark.parametrize("kw,flag,words", [
    ({"tuning": "full"}, "--kernels fp8", "--tuning lora"),
    ({"tuning": "qlora"}, "--kernels fp8", "--tuning lora"),
    ({"strategy": "zero2"}, "--kernels fp8", "--strategy ddp"),
    ({"save_merged": True}, "--save-merged True", "merge the saved adapter"),
])
def test_a_trainer_started_by_hand_refuses_fp8_as_the_launcher_does(kw, flag, words):
    """The one rule (mgft.spec.rules.kernels): without it a --tuning full run would train
    with no FP8 at all and metrics.json would not say so."""
    from mgft.spec.job import Kernels, Strategy, TrainSpec, Tuning
    from mgft_train.checks import check_kernels

    kw = {k: {"tuning": Tuning, "strategy": Strategy}.get(k, lambda v: v)(v)
          for k, v in kw.items()}
    with pytest.raises(UsageError, match=f"{flag}: .*{words}"):
        check_kernels(TrainSpec(model="m", dataset="d", kernels=Kernels.FP8, **kw))
    check_kernels(TrainSpec(model="m", dataset="d", kernels=Kernels.FP8))  # lora, ddp: runs


def test_a_faster_quantizer_is_used_only_where_it_gives_the_reference_bytes():
    """The Triton kernel (or torch.compile) replaces quantize_rows only after computing its
    exact result on the sample; one element one e4m3 step off is enough to refuse it."""
    def one_step_off(x):
        q, scale = fp8.quantize_rows(x)
        raw = q.view(torch.uint8).clone()
        raw.view(-1)[7] ^= 1  # the last mantissa bit of one element
        return raw.view(torch.float8_e4m3fn), scale

    def missing():
        raise ImportError("no triton")

    cpu = torch.device("cpu")
    exact = lambda x: fp8.quantize_rows(x)  # noqa: E731 - another function, same result
    chosen, record = fp8.pick_quantizer(
        [("triton", missing), ("off", lambda: one_step_off), ("exact", lambda: exact)], cpu)
    assert chosen is exact
    off = "off differs from the reference: 0 of 64 scales, 1 of 2048 values at width 32"
    assert record == f"exact (triton failed: ImportError; {off})"
    chosen, record = fp8.pick_quantizer([("off", lambda: one_step_off)], cpu)
    assert chosen is fp8.quantize_rows and record == f"eager ({off})"


class CountingQuantizer:
    def __init__(self):
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return fp8.quantize_rows(x)


@pytest.fixture
def counting(monkeypatch):
    counter = CountingQuantizer()
    monkeypatch.setattr(fp8, "_quantize", counter)
    monkeypatch.setattr(fp8, "_shared", ())
    return counter


def test_layers_reading_one_input_quantize_it_once_and_compute_what_they_would_alone(
        counting):
    """q, k and v read the same hidden states: one quantization serves the three, and
    each output and the summed input gradient equal those of layers quantizing alone."""
    layers = [fp8.Fp8Linear(linear(64, n)) for n in (48, 16, 16)]
    x = rows_with_outliers(12, 64).reshape(3, 4, 64).requires_grad_(True)
    dys = [torch.randn(3, 4, n, generator=torch.Generator().manual_seed(n)) for n in
           (48, 16, 16)]
    shared = [layer(x) for layer in layers]
    assert counting.calls == 1
    torch.autograd.backward(shared, dys)
    assert counting.calls == 1 + 3  # and one per output gradient
    alone_grad = torch.zeros_like(x)
    for layer, y_shared, dy in zip(layers, shared, dys, strict=True):
        fp8._shared = ()
        x_alone = x.detach().clone().requires_grad_(True)
        y = layer(x_alone)
        y.backward(dy)
        assert torch.equal(y, y_shared)
        alone_grad += x_alone.grad
    torch.testing.assert_close(x.grad, alone_grad, rtol=1e-6, atol=0)


def test_an_input_changed_in_place_or_a_new_one_is_quantized_again(counting):
    layer = fp8.Fp8Linear(linear(64, 48))
    x = rows_with_outliers(8, 64)
    first = layer(x)
    with torch.no_grad():
        x.mul_(2.0)
    second = layer(x)  # same tensor, new contents: a stale FP8 copy would give `first`
    assert counting.calls == 2
    torch.testing.assert_close(second, 2.0 * first, rtol=1e-6, atol=1e-6)
    layer(x.clone())
    assert counting.calls == 3


def test_a_llama_block_quantizes_four_inputs_in_its_forward_not_seven(counting):
    """Wired through transformers and peft as training runs it: per block, the hidden
    states feed q, k and v, the attention output feeds o, the normed residual feeds gate
    and up, and the SwiGLU product feeds down: 4 quantizations, not one per layer."""
    model = lora_model()
    fp8.quantize_base(model, torch.device("cpu"))
    ids = torch.randint(3, 256, (2, 24), generator=torch.Generator().manual_seed(6))
    model(input_ids=ids, labels=ids)
    assert counting.calls == 4 * 4  # 4 blocks
