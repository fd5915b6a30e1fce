"""The row quantizer of --kernels fp8 as one Triton kernel, called directly.

torch.compile fused the reference quantizer (fp8.quantize_rows) into one kernel, but every
call then went through the compiled region's guards and dynamic-shape bookkeeping: about
0.7 ms of CPU per quantization, and a step has 448 of them (PERF-NOTES §7), so the CPU, not
the GPU, set the pace. This kernel is launched like any Triton kernel (tens of µs), reads
each row once and writes it once in FP8.

It computes what quantize_rows computes, bit for bit: the same fp32 amax, the same fp32
product for the scale, the same IEEE division for each element (`div_rn`, not Triton's
default approximate division) and the same round-to-nearest-even cast of the clamped
value. fp8.py checks that on a sample before using it, and falls back to the reference
where it differs.

Imported only on CUDA machines with Triton (torch's CUDA wheels ship it).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# One program holds a whole row in registers; Llama-3-8B's widest input is 14,336.
MAX_COLUMNS = 32768


@triton.jit
def _quantize_rows_kernel(x_ptr, q_ptr, scale_ptr, n_cols, x_stride, q_stride, tiny, fmax,
                          inv_fmax, BLOCK: tl.constexpr):
    # Launched directly, Triton passes Python floats as fp32; inside a torch.compile graph
    # Inductor passes them as fp64, which div_rn refuses. The values are fp32 numbers.
    tiny, fmax, inv_fmax = tiny.to(tl.float32), fmax.to(tl.float32), inv_fmax.to(tl.float32)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    inside = cols < n_cols
    v = tl.load(x_ptr + row * x_stride + cols, mask=inside, other=0.0).to(tl.float32)
    amax = tl.max(tl.abs(v), axis=0)
    scale = tl.maximum(amax, tiny) * inv_fmax
    q = tl.clamp(tl.math.div_rn(v, scale), -fmax, fmax)
    tl.store(q_ptr + row * q_stride + cols, q.to(tl.float8e4nv), mask=inside)
    tl.store(scale_ptr + row, scale)


def quantize_rows(x: torch.Tensor, tiny: float, fmax: float,
                  inv_fmax: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) with unit column stride -> (q e4m3 (M, K), scale fp32 (M, 1))."""
    m, k = x.shape
    if k > MAX_COLUMNS or x.stride(1) != 1:
        raise ValueError(f"rows of {k} columns with stride {x.stride(1)}: the kernel takes "
                         f"contiguous rows of at most {MAX_COLUMNS}")
    q = torch.empty((m, k), device=x.device, dtype=torch.float8_e4m3fn)
    scale = torch.empty((m, 1), device=x.device, dtype=torch.float32)
    if m:
        block = triton.next_power_of_2(k)
        warps = 4 if block <= 4096 else 8 if block <= 8192 else 16
        _quantize_rows_kernel[(m,)](x, q, scale, k, x.stride(0), q.stride(0), tiny, fmax,
                                    inv_fmax, BLOCK=block, num_warps=warps)
    return q, scale
