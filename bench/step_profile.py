"""Where one real training step's time goes: the real trainer (mgft_train.main.main), unchanged,
under torch.profiler, with the window opened and closed at optimizer-step boundaries. Written
for issue 19 (LoRA on Llama-3-8B at 43.7% MFU on an H100); it also runs on CPU/gloo.

    python -m torch.distributed.run --standalone --nproc-per-node 1 bench/step_profile.py \\
        --out DIR [--wait 6] [--active 3] -- <mgft-train flags, with --max-steps>

The first --wait optimizer steps are not recorded, the next one warms the profiler up, the
--active ones after it are recorded whole (forward, backward, optimizer step, the loop's own
work), and one more step closes the window: --max-steps must be at least wait + active + 2.

Rank 0 writes DIR/step_profile.json (the summary, torch version, device, trainer argv, wait,
active) and DIR/step_profile.txt (the profiler's table of the top 40 operators), and prints
one line per category. On CUDA every device kernel is put, by its name, in the first category
whose pattern it matches, in this order: fp8 matmul (a gemm naming e4m3/f8/fp8), matmul,
attention, fp8 quantize (mgft_train.fp8's _quantize_rows), fused loss, norm/rope/swiglu,
optimizer, communication (nccl), copies/elementwise, other; with the wall time and the GPU busy
time (the union of the kernel intervals) per step. On CPU, which has no kernels, the operators
are put in the same categories by their self CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "trainer"), str(ROOT / "launcher")]

# Most specific first: an fp8 gemm is also a gemm, a fused linear+cross-entropy also a "linear".
CATEGORIES = [
    # cuBLAS's nvjet kernels name FP8 operands "qq" (nvjet_sm90_qqtst_... on an H100)
    ("fp8 matmul", r"(?=.*(gemm|xmma|cutlass|matmul|_mm\b|nvjet))"
                   r"(?=.*(e4m3|e5m2|fp8|f8f8|f8_|_f8|_qq))"),
    ("matmul", r"gemm|xmma|cutlass|cublas|nvjet|sm90_|sm80_|gemv|matmul"
               r"|^aten::(mm|addmm|bmm|baddbmm)$"),
    ("attention", r"flash|fmha|attention|attn"),
    ("fp8 quantize", r"_quantize_rows"),
    ("fused loss", r"cross_entropy|linear_cross"),
    ("norm/rope/swiglu", r"rms|rope|swiglu|silu|layer_norm"),
    ("optimizer", r"adam|multi_tensor|foreach"),
    ("communication", r"nccl|gloo|all_reduce|allreduce|reduce_scatter|all_gather|broadcast"),
    ("copies/elementwise",
     r"elementwise|vectorized|copy|memcpy|memset|cat|fill|reduce|index|scatter|gather"
     r"|^aten::(add|sub|mul|div|neg|pow|exp|where|bernoulli|clone|to|_to_copy)_?$"),
]
PATTERNS = [(name, re.compile(pattern, re.IGNORECASE)) for name, pattern in CATEGORIES]
STEP = re.compile(r"^ProfilerStep(#\d+|\*)$")  # events() names them all ProfilerStep*
LAUNCH = re.compile(r"^(cudaLaunchKernel|cuLaunchKernel|cudaLaunchKernelExC|cudaGraphLaunch)")


class Event(NamedTuple):
    name: str
    device: str  # "cpu" or "cuda"
    start_us: float
    end_us: float
    self_us: float  # a kernel's whole duration; a CPU op's time outside its children


def category(name: str) -> str:
    return next((cat for cat, pattern in PATTERNS if pattern.search(name)), "other")


def union_us(intervals: list[tuple[float, float]]) -> float:
    """Time covered by at least one interval: overlapping kernels (streams) count once."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def summarize(events: Sequence[Event], steps: int) -> dict[str, Any]:
    """Per-step figures of the `steps` recorded steps: by category, and the wall and busy time.
    The wall time spans the ProfilerStep#N annotations if present, else all the events."""
    marks = [e for e in events if STEP.match(e.name)] or list(events)
    wall_us = max(e.end_us for e in marks) - min(e.start_us for e in marks)
    kernels = [e for e in events if e.device != "cpu"]
    device = "cuda" if kernels else "cpu"
    timed = kernels or [e for e in events if not STEP.match(e.name)]
    totals: dict[str, list[float]] = {}
    for e in timed:
        row = totals.setdefault(category(e.name), [0.0, 0])
        row[0] += e.self_us
        row[1] += 1
    all_us = sum(us for us, _ in totals.values()) or 1.0
    order = [name for name, _ in CATEGORIES] + ["other"]
    result: dict[str, Any] = {
        "device": device, "steps": steps, "wall_ms_per_step": wall_us / steps / 1e3,
        "categories": {name: {"ms_per_step": totals[name][0] / steps / 1e3,
                              "share": totals[name][0] / all_us,
                              "count_per_step": totals[name][1] / steps}
                       for name in order if name in totals}}
    if kernels:
        busy_us = union_us([(e.start_us, e.end_us) for e in kernels])
        launches = sum(1 for e in events if e.device == "cpu" and LAUNCH.match(e.name))
        result |= {"busy_ms_per_step": busy_us / steps / 1e3, "busy_fraction": busy_us / wall_us,
                   "kernels_per_step": len(kernels) / steps, "launches_per_step": launches / steps}
    return result


def events_of(prof: Any) -> list[Event]:
    from torch.autograd import DeviceType

    out = []
    for e in prof.events():
        cpu = e.device_type == DeviceType.CPU
        if not cpu and getattr(e, "is_user_annotation", False):
            # ProfilerStep#N, DDP's forward: labels spanning a whole step on the GPU's
            # timeline, not kernels (counted, they made every step 100% busy)
            continue
        start, end = e.time_range.start, e.time_range.end
        out.append(Event(e.name, "cpu" if cpu else "cuda", start, end,
                         e.self_cpu_time_total if cpu else end - start))
    return out


def lines(summary: dict[str, Any]) -> list[str]:
    head = f"{summary['device']}: {summary['wall_ms_per_step']:.1f} ms/step wall"
    if "busy_ms_per_step" in summary:
        head += (f", GPU busy {summary['busy_ms_per_step']:.1f} ms "
                 f"({summary['busy_fraction']:.1%}), {summary['kernels_per_step']:.0f} kernels, "
                 f"{summary['launches_per_step']:.0f} launches per step")
    rows = [f"  {name:<20} {c['ms_per_step']:9.2f} ms {c['share']:7.1%} {c['count_per_step']:8.0f}"
            for name, c in summary["categories"].items()]
    return [head, f"  {'category':<20} {'per step':>12} {'share':>7} {'count':>8}", *rows]


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--wait", type=int, default=6, help="steps not recorded (default 6)")
    parser.add_argument("--active", type=int, default=3, help="steps recorded (default 3)")
    return parser.parse_args(argv[:split]), argv[split + 1:]


def main(argv: Sequence[str] | None = None) -> int:
    args, trainer_argv = parse(sys.argv[1:] if argv is None else argv)
    from mgft.contract.argv import parse_train

    need = args.wait + args.active + 2
    max_steps = parse_train(trainer_argv, prog="mgft-train").max_steps  # exits 2 on bad flags
    if max_steps is None or max_steps < need:
        print(f"--max-steps {max_steps} with --wait {args.wait} --active {args.active}: needs "
              f"--max-steps >= {need} (wait, 1 warm-up, active, 1 to close the window)",
              file=sys.stderr)
        return 2

    import torch
    from mgft_train import loop
    from mgft_train.main import main as train
    from torch.profiler import ProfilerActivity, profile, schedule

    cuda = torch.cuda.is_available()
    rank = int(os.environ.get("RANK", "0"))

    def ready(prof: Any) -> None:
        if rank != 0:
            return
        summary = summarize(events_of(prof), args.active)
        device = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
        record = {**summary, "torch": torch.__version__, "device_name": device,
                  "trainer_argv": trainer_argv, "wait": args.wait, "active": args.active}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "step_profile.json").write_text(json.dumps(record, indent=2) + "\n")
        sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=40)
        (args.out / "step_profile.txt").write_text(table + "\n")
        print("\n".join(lines(summary)), flush=True)

    # Step 0 is the set-up before the first train_step, hence wait + 1: prof.step() runs
    # before each optimizer step, so each recorded step is one whole optimizer step.
    prof = profile(activities=[ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * cuda,
                   schedule=schedule(wait=args.wait + 1, warmup=1, active=args.active, repeat=1),
                   on_trace_ready=ready)
    train_step = loop.train_step

    def stepped(*a: Any, **kw: Any) -> Any:
        prof.step()
        return train_step(*a, **kw)

    loop.train_step = stepped
    prof.start()
    try:
        code = train(trainer_argv)
    finally:
        prof.stop()
        loop.train_step = train_step
    return code


if __name__ == "__main__":
    sys.exit(main())
