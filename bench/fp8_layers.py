"""FP8 base weights (mgft_train.fp8) layer by layer, on Llama-3-8B's seven Linear shapes:
the error against bf16 and the time of the forward plus input-gradient matmuls (what a frozen
LoRA base layer costs per micro-batch), bf16 against FP8, with the activation quantization
eager, compiled and the Triton kernel, and one whole block with each input quantized once
for all its consumers (q/k/v, gate/up), as the trainer does. PERF-NOTES.md §7 has the figures.

    python bench/fp8_layers.py --out fp8_layers.json [--tokens 5120] [--cpu] [--error-only]

--error-only measures the error alone, at the real shapes, on any device (the CPU runs
torch._scaled_mm with the same operands, scales and fp32 accumulation): what
bench/results/fp8-layer-error-cpu.json holds (--cpu --error-only --tokens 512).

Weights are normal(0, 0.02) as a random-init model's; activations are normal with a few
outlier channels (x40), as trained LLMs' are, so per-row scales meet what they are for.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from mgft_train import fp8  # noqa: E402

# (name, in, out) per decoder block of Llama-3-8B; 32 blocks.
SHAPES = [("q_proj", 4096, 4096), ("k_proj", 4096, 1024), ("v_proj", 4096, 1024),
          ("o_proj", 4096, 4096), ("gate_proj", 4096, 14336), ("up_proj", 4096, 14336),
          ("down_proj", 14336, 4096)]
BLOCKS = 32


def quantizers() -> dict[str, Any]:
    """The activation quantizers to time on CUDA (fp8._fast_quantizer picks among them)."""
    from mgft_train import fp8_triton

    return {"eager": fp8.quantize_rows,
            "compiled": torch.compile(fp8.quantize_rows, dynamic=True, fullgraph=True),
            "triton": lambda x: fp8_triton.quantize_rows(x, fp8.TINY, fp8.E4M3_MAX,
                                                          fp8.INV_E4M3_MAX)}


def activations(m: int, k: int, device: torch.device, seed: int) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(m, k, generator=g, device=device)
    x[:, torch.arange(0, k, k // 8, device=device)] *= 40.0
    return x.to(torch.bfloat16)


def timed(fn: Any, device: torch.device, repeat: int) -> float:
    """Median seconds of fn() over `repeat` calls, after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def layer(name: str, k: int, n: int, tokens: int, device: torch.device,
          repeat: int, error_only: bool = False) -> dict[str, Any]:
    torch.manual_seed(0)
    linear = torch.nn.Linear(k, n, bias=False, device=device, dtype=torch.bfloat16)
    torch.nn.init.normal_(linear.weight, std=0.02)
    linear.weight.requires_grad_(False)
    x = activations(tokens, k, device, 1)
    dy = activations(tokens, n, device, 2) * 1e-3
    errors = fp8.layer_error(linear, x, dy)
    quantized = fp8.Fp8Linear(linear)
    xg = x.detach().requires_grad_(True)

    def bf16() -> None:
        y = linear(xg)
        y.backward(dy)

    def fp8_step() -> None:
        fp8._shared = ()  # a new micro-batch: nothing quantized yet
        y = quantized(xg)
        y.backward(dy)

    row: dict[str, Any] = {"layer": name, "in": k, "out": n, "tokens": tokens, **{
        f"rel_err_{key}": value for key, value in errors.items()}}
    if error_only:
        return row
    row["bf16_s"] = timed(bf16, device, repeat)
    for label, quantize in (quantizers() if device.type == "cuda"
                            else {"eager": fp8.quantize_rows}).items():
        fp8._quantize = quantize
        row[f"fp8_{label}_s"] = timed(fp8_step, device, repeat)
        row[f"quantize_{label}_s"] = timed(lambda q=quantize: q(x), device, repeat)
    fp8._quantize = fp8.quantize_rows
    flops = 2 * 2 * tokens * k * n  # forward and input gradient
    row["bf16_tflops"] = flops / row["bf16_s"] / 1e12
    best = min(value for key, value in row.items()
               if key.startswith("fp8_") and key.endswith("_s"))
    row["fp8_tflops"] = flops / best / 1e12
    row["speedup"] = row["bf16_s"] / best
    return row


def block(tokens: int, device: torch.device, repeat: int) -> dict[str, float]:
    """One Llama-3-8B block's seven frozen matmuls, forward and input gradient, wired as
    the block wires them (q, k and v read one input, gate and up another): bf16 against
    FP8 with each quantizer, so FP8's sharing of one quantized input is counted."""
    torch.manual_seed(0)
    layers = {}
    for name, k, n in SHAPES:
        linear = torch.nn.Linear(k, n, bias=False, device=device, dtype=torch.bfloat16)
        torch.nn.init.normal_(linear.weight, std=0.02)
        linear.weight.requires_grad_(False)
        layers[name] = (linear, fp8.Fp8Linear(linear))
    hidden = activations(tokens, 4096, device, 1).requires_grad_(True)
    feeds = {"q_proj": hidden, "k_proj": hidden, "v_proj": hidden,
             "o_proj": activations(tokens, 4096, device, 3).requires_grad_(True),
             "gate_proj": activations(tokens, 4096, device, 4).requires_grad_(True),
             "down_proj": activations(tokens, 14336, device, 5).requires_grad_(True)}
    feeds["up_proj"] = feeds["gate_proj"]
    grads = {name: activations(tokens, n, device, 9) * 1e-3 for name, _, n in SHAPES}

    def run(which: int) -> None:
        fp8._shared = ()
        outs = [layers[name][which](feeds[name]) for name, _, _ in SHAPES]
        torch.autograd.backward(outs, [grads[name] for name, _, _ in SHAPES])

    result = {"bf16_s": timed(lambda: run(0), device, repeat)}
    for label, quantize in quantizers().items():
        fp8._quantize = quantize
        result[f"fp8_{label}_s"] = timed(lambda: run(1), device, repeat)
    fp8._quantize = fp8.quantize_rows
    return result


def profile(tokens: int, device: torch.device) -> None:
    """Where one q_proj forward + input gradient spends its GPU and CPU time, FP8 (the
    quantizer the trainer picks) against bf16: each kernel's total time over 5 calls."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    linear = torch.nn.Linear(4096, 4096, bias=False, device=device, dtype=torch.bfloat16)
    linear.weight.requires_grad_(False)
    quantized = fp8.Fp8Linear(linear)
    fp8._fast_quantizer(device)
    print(f"quantizer: {fp8._quantizer}")
    x = activations(tokens, 4096, device, 1).requires_grad_(True)
    dy = activations(tokens, 4096, device, 2) * 1e-3
    for label, module in (("fp8", quantized), ("bf16", linear)):
        for _ in range(3):
            module(x).backward(dy)
        torch.cuda.synchronize(device)
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                fp8._shared = ()
                module(x).backward(dy)
            torch.cuda.synchronize(device)
        print(f"--- {label} q_proj x5, tokens {tokens}")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12,
                                        max_name_column_width=70))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tokens", type=int, default=5120, help="tokens per micro-batch (mgft: "
                   "5 packs of ~1,000)")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--cpu", action="store_true", help="on the CPU: small shapes and tokens "
                   "unless --error-only")
    p.add_argument("--error-only", action="store_true", help="errors at the real shapes, "
                   "no timing")
    p.add_argument("--profile", action="store_true", help="also print the CUDA kernels of "
                   "one FP8 and one bf16 q_proj call (torch.profiler), longest first")
    args = p.parse_args(argv)
    device = torch.device("cpu" if args.cpu else "cuda")
    if args.profile and device.type == "cuda":
        profile(args.tokens, device)
    small = args.cpu and not args.error_only
    shapes = [(n, k // 64, o // 64) for n, k, o in SHAPES] if small else SHAPES
    tokens = 64 if small else args.tokens
    rows = [layer(name, k, n, tokens, device, 3 if args.cpu else args.repeat, args.error_only)
            for name, k, n in shapes]
    per_block: dict[str, float] = {}
    if not args.error_only:
        per_block = {key: sum(r[key] for r in rows) for key in rows[0]
                     if key == "bf16_s" or (key.startswith("fp8_") and key.endswith("_s"))}
    if not args.cpu and not args.error_only:
        per_block.update({f"block_{key}": value for key, value in
                          block(tokens, device, args.repeat).items()})
    result = {
        "benchmark": "bench/fp8_layers.py (issue 19)",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "python": platform.python_version(),
        "tokens": tokens, "layers": rows,
        "per_micro_batch_s": {key: value * BLOCKS for key, value in per_block.items()},
        "note": "seconds for one micro-batch's frozen base matmuls (forward + input gradient)"
                " over the 32 blocks; median of --repeat calls per layer (block_*: one block"
                " as wired, each input quantized once for all its consumers)"}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for r in rows:
        times = ", ".join(f"{key[4:-2]} {value * 1e3:.3f}" for key, value in r.items()
                          if key.startswith("fp8_") and key.endswith("_s"))
        print(f"{r['layer']:>9} {r['in']:>5}->{r['out']:<5} err out {r['rel_err_output']:.4f} "
              f"dx {r['rel_err_input_grad']:.4f} w {r['rel_err_weight']:.4f}" + (
                  "" if args.error_only else
                  f" | bf16 {r['bf16_s'] * 1e3:.3f} ms, fp8 {times} ms ({r['speedup']:.2f}x)"))
    print(json.dumps(result["per_micro_batch_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
