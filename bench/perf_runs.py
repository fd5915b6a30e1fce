"""The pure parts of bench/perf.py: run names, the default matrices, model FLOPs per token,
matching mgft's micro-batch to the recipe's global batch, and a run's figures from its
metrics.json, by the same arithmetic for both sides. No torch, no subprocesses: unit-tested
in tests/bench/."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgft_train.rates import steady_tokens_per_s  # one rule for both sides

GiB = 1024**3
LORA_R = 16
IMPLS = ("mgft", "base")
TUNINGS = ("lora", "qlora", "full")
# The recipe's global batch: micro-batch 2 x grad-accum 4 samples per GPU per step.
BASE_SAMPLES_PER_STEP = 8
BATCH_TOLERANCE = 0.10  # tokens per optimizer step of the two sides agree within this
LOSS_TOLERANCE = 0.05  # mean relative gap of the loss curves over their second half

# name -> (impl it applies to, extra flags). mgft's flags go to `mgft submit`; the
# baseline's to bench/perf_baseline.py.
ABLATIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "nokernels": ("mgft", ("--kernels", "none")),
    "nopack": ("mgft", ("--no-packing",)),
    "ckpt": ("mgft", ("--activation-checkpointing",)),
    "nockpt": ("base", ("--checkpointing", "off")),
    # The recipe as a skilled TRL user tunes it (issue 19): packing (BFD), padding-free,
    # Liger, no checkpointing, mgft's micro-batch in tokens (perf_baseline.py --recipe).
    "tuned": ("base", ("--recipe", "tuned")),
    # mgft with LoRA's frozen base weights in FP8 (mgft_train.fp8).
    "fp8": ("mgft", ("--kernels", "fp8")),
}
NAME = re.compile(r"^(?P<impl>[a-z]+)-(?P<tuning>[a-z]+)-(?P<strategy>[a-z0-9-]+)-(?P<gpus>\d+)g"
                  r"(?:@(?P<ablations>[a-z0-9+]+))?$")


@dataclass(frozen=True, kw_only=True)
class Run:
    """`<impl>-<tuning>-<strategy>-<gpus>g[@<ablation>[+<ablation>...]]`, e.g.
    mgft-lora-ddp-4g, base-full-fsdp-4g, mgft-lora-ddp-1g@nokernels."""

    impl: str
    tuning: str
    strategy: str
    gpus: int
    ablations: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        suffix = f"@{'+'.join(self.ablations)}" if self.ablations else ""
        return f"{self.impl}-{self.config}{suffix}"

    @property
    def config(self) -> str:
        """What the two sides are compared on: tuning, strategy and GPU count."""
        return f"{self.tuning}-{self.strategy}-{self.gpus}g"

    @property
    def flags(self) -> list[str]:
        return [flag for a in self.ablations for flag in ABLATIONS[a][1]]

    @property
    def packing(self) -> bool:
        return (self.impl == "mgft" and "nopack" not in self.ablations) or self.tuned

    @property
    def tuned(self) -> bool:
        """The tuned recipe (TRL with packing, padding-free and Liger), not the plain one."""
        return self.impl == "base" and "tuned" in self.ablations

    @classmethod
    def parse(cls, name: str) -> Run:
        """Raises ValueError with the fix in its message."""
        m = NAME.match(name)
        if not m:
            raise ValueError(f"run {name!r}: expected <impl>-<tuning>-<strategy>-<gpus>g"
                             "[@<ablation>], e.g. mgft-lora-ddp-4g or base-full-fsdp-4g")
        impl, tuning, gpus = m["impl"], m["tuning"], int(m["gpus"])
        ablations = tuple(m["ablations"].split("+")) if m["ablations"] else ()
        if impl not in IMPLS:
            raise ValueError(f"run {name!r}: impl {impl!r}; use one of {', '.join(IMPLS)}")
        if tuning not in TUNINGS:
            raise ValueError(f"run {name!r}: tuning {tuning!r}; use one of {', '.join(TUNINGS)}")
        if gpus < 1:
            raise ValueError(f"run {name!r}: {gpus} GPUs; use 1 or more")
        for a in ablations:
            if a not in ABLATIONS:
                raise ValueError(f"run {name!r}: ablation {a!r}; known: "
                                 f"{', '.join(f'{k} ({v[0]})' for k, v in ABLATIONS.items())}")
            if ABLATIONS[a][0] != impl:
                raise ValueError(f"run {name!r}: ablation {a!r} applies to "
                                 f"{ABLATIONS[a][0]} runs only")
        # The strategy is checked by whoever runs it: a run mgft or the recipe refuses is
        # recorded as failed, and the matrix goes on.
        return cls(impl=impl, tuning=tuning, strategy=m["strategy"], gpus=gpus,
                   ablations=ablations)


def default_configs(gpus: int) -> list[str]:
    """LoRA DDP at 1, 2, ..., `gpus` GPUs (doubling); every other strategy at `gpus`."""
    scales, n = [], 1
    while n < gpus:
        scales.append(n)
        n *= 2
    scales.append(gpus)
    return ([f"lora-ddp-{n}g" for n in scales] + [f"lora-{s}-{gpus}g" for s in
            ("zero2", "zero3", "fsdp")] + [f"full-fsdp-{gpus}g"])


def matrix(configs: Sequence[str]) -> list[Run]:
    """Each config as an mgft run followed by its baseline run."""
    return [Run.parse(f"{impl}-{config}") for config in configs for impl in IMPLS]


def mean_context(lengths: Sequence[int]) -> float:
    """Keys each token attends to, averaged over tokens: a causal sample of length L gives
    its i-th token i + 1 keys, L(L + 1)/2 in all. Packed samples attend only within
    themselves, so this holds for mgft's packs and the recipe's padded rows alike."""
    return sum(n * (n + 1) / 2 for n in lengths) / sum(lengths)


def flops_per_token(arch: Any, tuning: str, lora_r: int, context: float) -> dict[str, Any]:
    """Model FLOPs per trained token (what MFU counts; recomputation under activation
    checkpointing is not counted, nor are norms, activations or the embedding lookup).

    `arch` is an mgft.plan.arch.Arch. N is every weight a token is multiplied by: the decoder
    layers' Linears and the output head. A matmul costs 2 FLOPs per weight forward, 2 more for
    the activation gradient, 2 more for the weight gradient: full fine-tuning 6N; LoRA 4N for
    the frozen base (no weight gradients) plus 6 per adapter weight. Attention (QK^T and AV)
    costs 4 * layers * q_dim * context forward, twice that backward, under either tuning.
    """
    matmul = arch.linear_params + arch.vocab * arch.hidden
    # QLoRA multiplies by the same weights (dequantized); dequantizing is not model FLOPs.
    adapter = arch.lora_params(lora_r) if tuning in ("lora", "qlora") else 0
    weights = (6 * matmul) if tuning == "full" else (4 * matmul + 6 * adapter)
    attention = 3 * 4 * arch.layers * arch.q_dim * context
    return {"total": weights + attention, "weights": weights, "attention": attention,
            "matmul_params": matmul, "lora_params": adapter, "mean_context": context,
            "formula": ("full: 6*N + 12*layers*q_dim*ctx; lora: 4*N + 6*N_lora + "
                        "12*layers*q_dim*ctx; N = decoder Linear weights + lm_head, ctx = "
                        "token-mean causal context sum(L(L+1)/2)/sum(L) of the real samples")}


def match_micro_batch(mean_len: float, mean_pack: float,
                      samples: int = BASE_SAMPLES_PER_STEP) -> int:
    """mgft's --micro-batch (packs of about `mean_pack` tokens, grad-accum 1) whose tokens
    per optimizer step come closest to the recipe's `samples` rows of `mean_len` tokens."""
    return max(1, round(samples * mean_len / mean_pack))


def loss_curve(losses: Sequence[float], step_tokens: Sequence[float]) -> list[tuple[float, float]]:
    """(tokens trained so far, including this step's; this step's loss) per step."""
    points, seen = [], 0.0
    for loss, tokens in zip(losses, step_tokens, strict=True):
        seen += tokens
        points.append((seen, loss))
    return points


def loss_gap(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]],
             from_fraction: float = 0.5) -> float | None:
    """Mean of |a - b| / b over a's points in the last (1 - from_fraction) of the token range
    both curves cover, b linearly interpolated. The early steps are left out: there the loss
    falls steeply and a small shift in tokens per step is a large gap in loss."""
    if not a or not b:
        return None
    lo, hi = max(a[0][0], b[0][0]), min(a[-1][0], b[-1][0])
    start = lo + from_fraction * (hi - lo)
    gaps = [abs(y - other) / abs(other) for x, y in a if start <= x <= hi
            if (other := _interpolate(b, x)) != 0]
    return sum(gaps) / len(gaps) if gaps else None


def _interpolate(curve: Sequence[tuple[float, float]], x: float) -> float:
    for (x0, y0), (x1, y1) in zip(curve, curve[1:], strict=False):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return curve[0][1] if x < curve[0][0] else curve[-1][1]


@dataclass(frozen=True)
class Assets:
    """The model and data every run of an invocation shares."""

    model_dir: Path
    data: Path
    lengths: list[int]
    mean_pack: float  # tokens per pack when mgft packs this dataset at --seq-len
    flops: dict[str, dict[str, Any]]  # per tuning

    @property
    def mean_len(self) -> float:
        return sum(self.lengths) / len(self.lengths)


def micro_batch(run: Run, assets: Assets) -> int:
    if run.impl == "base":  # tuned: packs of --seq-len, as many as mgft's micro-batch
        return match_micro_batch(assets.mean_len, assets.mean_pack) if run.tuned else 2
    if not run.packing:  # padded rows, one optimizer step of the recipe's 8 samples
        return BASE_SAMPLES_PER_STEP
    return match_micro_batch(assets.mean_len, assets.mean_pack)


def summarize(run: Run, metrics: dict[str, Any], assets: Assets, matmul: dict[str, Any] | None,
              launched_at: float, *, arch: str, seq_len: int) -> dict[str, Any]:
    """The run's figures, by the same definitions for both sides."""
    world, steps = metrics["world_size"], metrics["steps"]
    step_s, step_tokens = metrics.get("step_s"), metrics.get("step_tokens")
    if step_s and step_tokens:
        steady = steady_tokens_per_s(step_s, step_tokens)
    else:  # an mgft without per-step records: its own figure, by the same rule
        steady = metrics["tokens_per_s_after_warmup"]
        step_tokens = [metrics["tokens"] / steps] * steps
    per_gpu = steady / world if steady else None
    flops = assets.flops[run.tuning]["total"]
    peak_tflops = None
    if matmul:
        used = matmul["devices"][:world]  # on CPU: the one entry
        peak_tflops = sum(d["tflops"] for d in used) / len(used)
    peaks = [p["bytes"] / GiB for p in metrics["peak_memory_per_device"]]
    row = {
        "ran": {k: metrics.get(k) for k in ("strategy", "strategy_evidence", "world_size",
                                            "backend", "device", "model_wrapper", "kernels",
                                            "attention", "activation_checkpointing")},
        "ran_as_requested": metrics.get("strategy") == run.strategy or (
            run.gpus == 1 and metrics.get("strategy") in ("single", run.strategy)),
        "steps": steps, "tokens": metrics["tokens"],
        "tokens_per_step": sum(step_tokens) / len(step_tokens),
        "tokens_per_step_per_gpu": sum(step_tokens) / len(step_tokens) / world,
        "per_step_records": bool(metrics.get("step_s")),
        "step_s": metrics.get("step_s"), "step_tokens": metrics.get("step_tokens"),
        "tokens_per_s_per_gpu": per_gpu,
        "flops_per_token": flops,
        "achieved_tflops_per_gpu": per_gpu * flops / 1e12 if per_gpu else None,
        "matmul_tflops_per_gpu": peak_tflops,
        "mfu": per_gpu * flops / (peak_tflops * 1e12) if per_gpu and peak_tflops else None,
        "peak_gib_per_gpu": [round(p, 3) for p in peaks], "peak_gib_max": max(peaks),
        "time_to_first_step_s": (metrics["first_step_at"] - launched_at
                                 if metrics.get("first_step_at") else None),
        "losses": metrics["losses"], "first_loss": metrics["first_loss"],
        "last_loss": metrics["last_loss"],
        "loss_curve": loss_curve(metrics["losses"], step_tokens),
        "trainable_params": metrics.get("trainable_params"),
        "total_params": metrics.get("total_params"), "versions": metrics.get("versions"),
    }
    if run.impl == "mgft":  # what bench/plan_accuracy.py --from-perf re-predicts memory from
        row["config"] = {
            "arch": arch, "tuning": run.tuning, "strategy": run.strategy,
            "gpus": run.gpus, "micro_batch": micro_batch(run, assets), "grad_accum": 1,
            "seq_len": seq_len,
            "kernels": "none" if "nokernels" in run.ablations else (
                "fp8" if "fp8" in run.ablations else "auto"),
            "kernels_used": _flat(metrics.get("kernels")), "packing": run.packing,
            "activation_checkpointing": metrics.get("activation_checkpointing",
                                                    "ckpt" in run.ablations),
            "lora_r": LORA_R,
            "peak_gib_per_gpu": max(peaks)}
    else:
        row["recipe"] = metrics.get("recipe")
    return row


def _flat(value: Any) -> Any:
    """A scalar for the flat config record: lists (mgft's applied kernels) comma-joined."""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return value if value is None or isinstance(value, str | int | float | bool) else \
        json.dumps(value, sort_keys=True)
