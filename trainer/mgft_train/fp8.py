"""--kernels fp8: a LoRA model's frozen base Linear layers computed in FP8 (e4m3).

Under LoRA the base weights never change, so each is quantized once, when the model is
built, and its bf16 copy is freed. Every frozen matmul then runs through `torch._scaled_mm`
with row-wise scales:

    forward     y  = x @ W.T    x quantized per token row, W per output row (N scales)
    backward    dx = dy @ W     dy quantized per token row, W per input column (K scales)

W is kept twice in FP8 (W and W.T, each contiguous, each scaled along the dimension its
matmul does not sum over), so the two copies take what the bf16 weight took; no transpose
or rescale runs per step. The LoRA branch (peft's lora_A/lora_B, their dropout and scale)
is untouched and computes in bf16 with fp32 master weights, as without fp8. The output
head and the embedding stay bf16.

This changes what the model computes: a frozen matmul's result carries e4m3's rounding
(3 mantissa bits: a relative error of at most 2^-4 per element, about 2-3% per output in
practice). So it is a choice the user makes, never a default, and metrics.json records it
(`kernels`: "fp8:..."). Row-wise `_scaled_mm` needs an sm90+ GPU (H100, H200, B200).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from mgft_train.errors import UsageError

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448
INV_E4M3_MAX = 1.0 / E4M3_MAX  # rounded to fp32 where it multiplies
# An all-zero row gets this amax, so its scale is not 0 (0/0 would be NaN).
TINY = 1e-12
# Row-wise scaled matmuls on CUDA: Hopper and newer.
MIN_CAPABILITY = (9, 0)
NAME = "fp8:e4m3-rowwise"


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., K) -> (q, scale): q e4m3 of x's shape, scale fp32 (..., 1), x ~ q * scale.

    Each row's largest magnitude maps to e4m3's largest finite value (448), so nothing
    saturates and every element is off by at most half an e4m3 spacing at its magnitude
    (relative 2^-4) plus the subnormal floor (2^-10 * scale)."""
    amax = torch.linalg.vector_norm(x, float("inf"), dim=-1, keepdim=True, dtype=torch.float32)
    # A product, not amax / 448: CUDA's torch divides by a Python number as a multiplication
    # by its reciprocal (the CPU divides), so only this form is the same number everywhere.
    scale = amax.clamp(min=TINY) * INV_E4M3_MAX
    q = (x.to(torch.float32) / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return q, scale


_quantize = quantize_rows  # on CUDA, the fast one that proved equal (_fast_quantizer)
_quantizer = "eager"  # what metrics.json says ran: triton, compiled, or eager and why


def _sample_rows(width: int, device: torch.device) -> torch.Tensor:
    """Rows that exercise every branch of the quantizer: magnitudes from 1e-3 to 1e3 (e4m3
    subnormals among each row's small elements), an outlier channel, an all-zero row, a
    row below TINY (its scale clamps) and a row of powers of two."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(64, width, generator=g) * torch.logspace(-3, 3, 64)[:, None]
    x[:, 3] *= 40.0
    x[1] = 0.0
    x[2] *= 1e-30
    x[3] = 2.0 ** torch.randint(-12, 12, (width,), generator=g).float()
    return x.to(device=device, dtype=torch.bfloat16)


def _difference(candidate: Any, device: torch.device) -> str | None:
    """How the candidate quantizer's result differs from quantize_rows' on a sample of
    Llama's widths (4096, 14336) and odd ones, or None where it is the same, bit for bit."""
    for width in (32, 4096, 14336, 1000):
        x = _sample_rows(width, device)
        q, scale = candidate(x)
        q_ref, scale_ref = quantize_rows(x)
        bytes_off = int((q.view(torch.uint8) != q_ref.view(torch.uint8)).sum())
        scales_off = int((scale != scale_ref).sum())
        if bytes_off or scales_off:
            return (f"differs from the reference: {scales_off} of {scale.numel()} scales, "
                    f"{bytes_off} of {q.numel()} values at width {width}")
    return None


def pick_quantizer(candidates: list[tuple[str, Any]], device: torch.device) -> tuple[Any, str]:
    """The first candidate (name, factory) whose quantizer gives quantize_rows' result
    exactly on a sample; else quantize_rows itself. Returns it and what metrics.json
    records: its name, with why any faster one before it was passed over."""
    reasons: list[str] = []
    for name, make in candidates:
        try:
            candidate = make()
            difference = _difference(candidate, device)
            if difference is None:
                return candidate, name + (f" ({'; '.join(reasons)})" if reasons else "")
            reasons.append(f"{name} {difference}")
        except Exception as err:  # noqa: BLE001 - cannot import or build: the next one
            reasons.append(f"{name} failed: {type(err).__name__}")
    return quantize_rows, f"eager ({'; '.join(reasons)})" if reasons else "eager"


def _triton_quantizer() -> Any:
    from mgft_train import fp8_triton

    def triton_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return fp8_triton.quantize_rows(x, TINY, E4M3_MAX, INV_E4M3_MAX)

    return triton_rows


def _fast_quantizer(device: torch.device) -> Any:
    """The activation quantizer for a CUDA run, the fastest that computes quantize_rows'
    result exactly: the Triton kernel (fp8_triton.py: one pass, launched directly), else
    torch.compile of quantize_rows (one pass, but ~0.7 ms of CPU per call in the compiled
    region's guards), else quantize_rows itself (four passes)."""
    global _quantize, _quantizer
    if _quantize is quantize_rows and _quantizer == "eager":
        _quantize, _quantizer = pick_quantizer([
            ("triton", _triton_quantizer),
            ("compiled", lambda: torch.compile(quantize_rows, dynamic=True, fullgraph=True)),
        ], device)
    return _quantize


# The last input quantized and its FP8 copy: (weak reference, version, q, scale).
_shared: tuple[Any, ...] = ()


def quantize_input(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x's rows in FP8, quantized once per input tensor: q, k and v read the same hidden
    states, as do gate and up, so the second and third consumer reuse the first's copy
    (7 forward quantizations per Llama block become 4). The key is the tensor itself and
    its version counter: another tensor, or this one changed in place, is quantized anew."""
    global _shared
    if _shared and _shared[0]() is x and _shared[1] == x._version:
        return _shared[2], _shared[3]
    q, scale = _quantize(x.detach().reshape(-1, x.shape[-1]).contiguous())
    _shared = (weakref.ref(x), x._version, q, scale)
    return q, scale


class _Fp8Matmul(torch.autograd.Function):
    """y = x @ W.T from x's FP8 rows (q, scale) and W's two FP8 copies; gradient to x only
    (W is frozen). x itself is an input only so that its gradient flows."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor,
                w: torch.Tensor, w_scale: torch.Tensor, wt: torch.Tensor,
                wt_scale: torch.Tensor) -> torch.Tensor:
        ctx.wt, ctx.wt_scale, ctx.dtype = wt, wt_scale, x.dtype
        # _scaled_mm wants its second operand column-major: W (N, K) row-major, transposed.
        y = torch._scaled_mm(q, w.t(), scale_a=scale, scale_b=w_scale, out_dtype=x.dtype)
        return y.view(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if not ctx.needs_input_grad[0]:
            return (None,) * 7
        rows = dy.reshape(-1, dy.shape[-1]).to(ctx.dtype).contiguous()
        q, scale = _quantize(rows)
        dx = torch._scaled_mm(q, ctx.wt.t(), scale_a=scale, scale_b=ctx.wt_scale,
                              out_dtype=ctx.dtype)
        return (dx.view(*dy.shape[:-1], ctx.wt.shape[0]),) + (None,) * 6


class Fp8Linear(torch.nn.Module):
    """A frozen nn.Linear whose weight lives only as FP8 (W and W.T with their scales).

    The FP8 tensors are plain attributes, not parameters or buffers: nothing trains them,
    every rank builds the same ones from the same seeded weights, and no optimizer, DDP
    broadcast or state dict should see them (an adapter checkpoint holds only LoRA)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        with torch.no_grad():
            w = linear.weight.detach()
            self.w, scale = quantize_rows(w)
            self.w_scale = scale.reshape(1, -1).contiguous()  # (1, N): per output column of y
            self.wt, scale = quantize_rows(w.t().contiguous())
            self.wt_scale = scale.reshape(1, -1).contiguous()  # (1, K): per column of dx
        self.bias = linear.bias  # frozen, bf16 (None for Llama-style layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, scale = quantize_input(x)
        y = _Fp8Matmul.apply(x, q, scale, self.w, self.w_scale, self.wt, self.wt_scale)
        return y if self.bias is None else y + self.bias

    def dequantized(self) -> torch.Tensor:
        """The weight the forward pass multiplies by, in fp32 (for error measurements)."""
        return self.w.to(torch.float32) * self.w_scale.reshape(-1, 1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {NAME}"


def check_device(device: torch.device) -> None:
    """--kernels fp8 runs where row-wise FP8 matmuls exist, or not at all (no silent
    bf16 fallback: the user asked for FP8's numbers and metrics.json would say fp8)."""
    if device.type != "cuda":
        raise UsageError("--kernels", "fp8", "FP8 matmuls need a CUDA GPU and this run is on "
                         "the CPU", "use --kernels auto")
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        raise UsageError("--kernels", "fp8", f"row-wise FP8 matmuls need compute capability "
                         f"9.0 or newer (H100, H200, B200); {torch.cuda.get_device_name(device)}"
                         f" is {capability[0]}.{capability[1]}", "use --kernels auto")


def frozen_base_layers(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str]]:
    """(parent, attribute) of every frozen nn.Linear that peft wrapped with an adapter: its
    base_layer. The output head and any Linear without an adapter keep bf16."""
    found = []
    for module in model.modules():
        base = getattr(module, "base_layer", None)
        if (type(base) is torch.nn.Linear and hasattr(module, "lora_A")
                and not base.weight.requires_grad):
            found.append((module, "base_layer"))
    return found


def quantize_base(model: torch.nn.Module, device: torch.device) -> int:
    """Swap each adapted frozen Linear for an Fp8Linear, one at a time (so at most one
    layer's bf16 and FP8 copies exist together); returns how many were swapped."""
    layers = frozen_base_layers(model)
    if not layers:
        raise UsageError("--kernels", "fp8", "the model has no frozen Linear layers with LoRA "
                         "adapters to compute in FP8", "use --tuning lora, or --kernels auto")
    for parent, name in layers:
        setattr(parent, name, Fp8Linear(getattr(parent, name)))
    if device.type == "cuda":
        _fast_quantizer(device)
    return len(layers)


def applied(model: torch.nn.Module) -> list[str]:
    """metrics.json's record: how many layers compute in FP8 (empty when none)."""
    count = sum(1 for m in model.modules() if isinstance(m, Fp8Linear))
    return [f"{NAME}:{count}-linears", f"fp8:quantize-{_quantizer}"] if count else []


def layer_error(linear: torch.nn.Linear, x: torch.Tensor, dy: torch.Tensor) -> dict[str, float]:
    """One layer's FP8 error against bf16 on inputs x and output gradient dy: relative
    Frobenius error of the output and of the input gradient, and of the weight itself."""
    fp8 = Fp8Linear(linear)
    x_ref = x.detach().clone().requires_grad_(True)
    x_fp8 = x.detach().clone().requires_grad_(True)
    y_ref = torch.nn.functional.linear(x_ref, linear.weight.detach(), linear.bias)
    y_ref.backward(dy)
    y_fp8 = fp8(x_fp8)
    y_fp8.backward(dy)
    w = linear.weight.detach().float()
    return {"output": _rel(y_fp8, y_ref), "input_grad": _rel(x_fp8.grad, x_ref.grad),
            "weight": _rel(fp8.dequantized(), w)}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm().clamp(min=TINY))
