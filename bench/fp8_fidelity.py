"""FP8 base weights (mgft_train.fp8) against the same LoRA run in full precision, on the CPU:
tiny random-init models of several families, the same data, seed and steps, with and without
the frozen base Linears in FP8. torch._scaled_mm runs on the CPU too, so this is the
arithmetic the GPU runs (e4m3 operands, row-wise scales, fp32 accumulation); only the speed
is not. Issue 19's criterion: the loss after the run within 1% of the bf16 run's.

    python bench/fp8_fidelity.py --out bench/results/fp8-fidelity-cpu.json [--steps 200]

It also draws the loss curves beside the JSON (.png).

The data is learnable: each row follows next = (a * token + b) mod vocab for its own (a, b)
drawn from 4 pairs, so the loss falls well below log(vocab) as the adapters learn the rule.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mgft_train import fp8, tiny_families  # noqa: E402

RULES = [(3, 1), (5, 7), (7, 3), (11, 5)]


def batch(step: int, rows: int, length: int, vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + step)
    rule = torch.randint(len(RULES), (rows,), generator=g)
    tokens = torch.empty(rows, length, dtype=torch.long)
    tokens[:, 0] = torch.randint(3, vocab, (rows,), generator=g)
    for i in range(1, length):
        a = torch.tensor([RULES[r][0] for r in rule])
        b = torch.tensor([RULES[r][1] for r in rule])
        tokens[:, i] = (a * tokens[:, i - 1] + b) % (vocab - 3) + 3
    return tokens


def model_for(family: str, seed: int) -> torch.nn.Module:
    from mgft.spec.job import TrainSpec
    from mgft_train.model import add_lora
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_config(
        tiny_families.config(family, initializer_range=0.02))
    return add_lora(base, TrainSpec(model="m", dataset="d", lora_r=8, lora_alpha=16,
                                    lora_dropout=0.0))


def train(model: torch.nn.Module, steps: int, lr: float, rows: int,
          length: int) -> list[float]:
    vocab = model.config.vocab_size
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    losses = []
    for step in range(steps):
        ids = batch(step, rows, length, vocab)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def compare(family: str, steps: int, lr: float, seed: int) -> dict[str, Any]:
    full = model_for(family, seed)
    quantized = copy.deepcopy(full)
    layers = fp8.quantize_base(quantized, torch.device("cpu"))
    ref = train(full, steps, lr, rows=8, length=64)
    low = train(quantized, steps, lr, rows=8, length=64)
    tail = max(1, steps // 10)
    ref_tail, low_tail = sum(ref[-tail:]) / tail, sum(low[-tail:]) / tail
    return {"family": family, "fp8_layers": layers, "steps": steps,
            "first_loss": {"full": ref[0], "fp8": low[0]},
            "last_loss": {"full": ref[-1], "fp8": low[-1]},
            "last_tenth_mean": {"full": ref_tail, "fp8": low_tail},
            "last_tenth_rel_diff": low_tail / ref_tail - 1,
            "mean_abs_rel_diff": sum(abs(a / b - 1) for a, b in zip(low, ref, strict=True))
            / steps,
            "losses": {"full": ref, "fp8": low}}


def chart(result: dict[str, Any], path: Path) -> None:
    from plotting import pyplot, save

    fig, ax = pyplot().subplots(figsize=(8, 4.5))
    for r in result["families"]:
        line = ax.plot(r["losses"]["full"], linewidth=1, label=f"{r['family']} fp32 base")[0]
        ax.plot(r["losses"]["fp8"], linewidth=1, linestyle="--", color=line.get_color(),
                label=f"{r['family']} FP8 base ({r['last_tenth_rel_diff']:+.2%} last tenth)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("LoRA on an FP8 base against the same run in full precision (CPU, tiny models)",
                 fontsize=9)
    ax.legend(fontsize=7)
    save(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--families", default="llama,qwen2,gemma2")
    args = p.parse_args(argv)
    torch.set_num_threads(min(8, torch.get_num_threads()))
    rows = [compare(f, args.steps, args.lr, args.seed) for f in args.families.split(",")]
    result = {"benchmark": "bench/fp8_fidelity.py (issue 19)", "device": "cpu",
              "torch": torch.__version__, "python": platform.python_version(),
              "settings": {"steps": args.steps, "lr": args.lr, "seed": args.seed,
                           "lora_r": 8, "rows": 8, "length": 64,
                           "reference": "the same model with fp32 base Linears"},
              "families": rows}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    chart(result, args.out.with_suffix(".png"))
    for r in rows:
        print(f"{r['family']:>8}: {r['fp8_layers']} FP8 layers; loss {r['first_loss']['full']:.4f}"
              f" -> full {r['last_tenth_mean']['full']:.4f}, fp8 {r['last_tenth_mean']['fp8']:.4f}"
              f" (last tenth {r['last_tenth_rel_diff']:+.2%}, mean |diff| "
              f"{r['mean_abs_rel_diff']:.2%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
