"""Family fidelity and speed on one GPU: does mgft's fast path compute each family as
transformers does, in bf16, and how fast does each family train?

    python bench/fidelity.py --out OUT [--families gemma2,llama] [--no-speed] [--tiny]

1. Fidelity, per family (mgft_train.tiny_families, widened, windows shorter than samples):
   the summed loss and LoRA gradients of one packed micro-batch through mgft's real path
   (mgft_varlen attention, Liger's kernels where installed, loop.loss_sum) against
   transformers' eager attention run on each sample alone. Both in bf16; eager in fp32 gives
   the scale of bf16's own rounding, so the gap is judged against it. A control drops the
   family's features (window, softcap) from mgft's path: the defect these runs guard.
2. Speed, per family: `mgft-train --random-init` LoRA at a 4-12B size (mgft.plan.arch.KNOWN),
   packed, tokens/s after warm-up and peak memory from metrics.json. On Llama also with
   the flex kernel forced (flex against varlen).

Writes OUT/fidelity.json and prints both tables. --tiny: the CPU plumbing check (per-sample
kernel, tiny shapes, two speed steps).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_assets import GPU_SAFE_ENV, model_config, training_rows  # noqa: E402

SPEED = {"llama": "llama-3-8b", "mistral": "mistral-7b", "qwen2": "qwen2.5-7b",
         "qwen3": "qwen3-8b", "gemma": "gemma-7b", "gemma2": "gemma-2-9b",
         "gemma3_text": "gemma-3-12b-text", "phi3": "phi-3-mini-4k"}
WIDE = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4,
            num_key_value_heads=2, head_dim=64, vocab_size=1024, max_position_embeddings=4096,
            initializer_range=0.05)
GPU_WINDOW, GPU_LENGTHS = 128, (90, 200, 333, 500, 777)
TINY_LENGTHS = (5, 13, 21, 30)


def build(model_type: str, implementation: str, dtype: Any, device: Any, tiny: bool) -> Any:
    import torch
    from mgft_train import attention, tiny_families
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    attention.register()
    wide = {} if tiny else dict(WIDE, **({"sliding_window": GPU_WINDOW}
                                         if tiny_families.EXTRA[model_type].get("sliding_window")
                                         else {}))
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(tiny_families.config(model_type, **wide),
                                                 attn_implementation=implementation,
                                                 dtype=dtype)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False,
                      lora_dropout=0.0)
    return get_peft_model(model, lora, autocast_adapter_dtype=False).train()


def grads(model: Any) -> dict[str, Any]:
    return {n: p.grad.float().clone() for n, p in model.named_parameters() if "lora_" in n}


def eager_run(model: Any, examples: list[Any], device: Any) -> tuple[float, dict[str, Any]]:
    import torch
    from mgft_train.loop import loss_sum

    total = 0.0
    for e in examples:
        ids = torch.tensor([e.input_ids], device=device)
        loss = loss_sum(model, {"input_ids": ids, "labels": torch.tensor([e.labels], device=device),
                                "attention_mask": torch.ones_like(ids)})
        loss.backward()
        total += loss.item()
    return total, grads(model)


def packed_run(model: Any, examples: list[Any], device: Any) -> tuple[float, dict[str, Any]]:
    from mgft_train.data.packing import collate_packed
    from mgft_train.loop import loss_sum

    batch = {k: v.to(device) for k, v in
             collate_packed([tuple(examples)], pad_id=0, flat=True).items()}
    loss = loss_sum(model, batch)
    loss.backward()
    return loss.item(), grads(model)


def grad_error(ours: dict[str, Any], ref: dict[str, Any]) -> float:
    """Largest relative error of any LoRA gradient tensor (norm of difference / norm)."""
    return max(float((ours[n] - ref[n]).norm() / ref[n].norm().clamp(min=1e-12)) for n in ref)


def fidelity(model_type: str, tiny: bool) -> dict[str, Any]:
    import torch
    from mgft.spec.job import TrainSpec
    from mgft_train import attention, kernels, tiny_families

    device = torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    low = torch.float32 if device.type == "cpu" else torch.bfloat16
    examples = tiny_families.samples(TINY_LENGTHS if tiny else GPU_LENGTHS,
                                     256 if tiny else WIDE["vocab_size"])
    tokens = sum(len(e.input_ids) - 1 for e in examples)
    ref32 = eager_run(build(model_type, "eager", torch.float32, device, tiny), examples, device)
    ref = eager_run(build(model_type, "eager", low, device, tiny), examples, device)
    # Liger patches the family's classes, so only after the unpatched references are built.
    liger = kernels.apply_liger(TrainSpec(model="m", dataset="d"), device, model_type)
    attention._used.clear()
    ours = packed_run(build(model_type, attention.VARLEN, low, device, tiny), examples, device)
    used = attention.used()
    real = attention.Features.of.__func__
    attention.Features.of = classmethod(
        lambda cls, kw: replace(real(cls, kw), window=None, softcap=None))
    try:
        dropped = packed_run(build(model_type, attention.VARLEN, low, device, tiny), examples,
                             device)
    finally:
        attention.Features.of = classmethod(real)
    per_token = {"mgft_vs_eager": abs(ours[0] - ref[0]) / tokens,
                 "eager_bf16_vs_fp32": abs(ref[0] - ref32[0]) / tokens,
                 "features_dropped_vs_eager": abs(dropped[0] - ref[0]) / tokens}
    return {"family": model_type, "dtype": str(low).removeprefix("torch."), "tokens": tokens,
            "loss_per_token": ref[0] / tokens, "loss_gap_per_token": per_token,
            "lora_grad_rel_error": {"mgft_vs_eager": grad_error(ours[1], ref[1]),
                                    "eager_bf16_vs_fp32": grad_error(ref[1], ref32[1])},
            "attention_kernels": used, "liger": liger}


def speed(model_type: str, work: Path, out: Path, tiny: bool, steps: int,
          force: str | None = None) -> dict[str, Any]:
    arch = "tiny" if tiny else SPEED[model_type]
    model_dir = model_config(arch, work / f"model-{arch}")
    if tiny and model_type != "llama":
        from mgft_train import tiny_families
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        model_dir = work / f"model-tiny-{model_type}"
        tiny_families.config(model_type, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                             bos_token_id=tok.bos_token_id,
                             eos_token_id=tok.eos_token_id).save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
    seq_len = 128 if tiny else 4096
    data = training_rows(model_dir, work / f"rows-{model_type}.jsonl", 64 if tiny else 400,
                         seq_len, spread=(0.03, 0.25))
    name = f"{model_type}{'-' + force if force else ''}"
    run_out = work / f"run-{name}"
    argv = [sys.executable, "-m", "mgft_train", f"--model={model_dir}", f"--dataset={data}",
            f"--output={run_out}", "--random-init=true", "--save=none", f"--max-steps={steps}",
            f"--seq-len={seq_len}", "--micro-batch=1", "--lr=1e-4"]
    env = dict(os.environ, **GPU_SAFE_ENV, PYTHONUNBUFFERED="1")
    if force:
        env["MGFT_BENCH_ATTENTION"] = force
    start = time.monotonic()
    with open(out / f"speed-{name}.log", "w") as log:
        code = subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=900).returncode
    result: dict[str, Any] = {"family": model_type, "arch": arch, "forced": force,
                              "exit": code, "wall_s": round(time.monotonic() - start, 1)}
    metrics_file = run_out / "metrics.json"
    if code == 0 and metrics_file.is_file():
        m = json.loads(metrics_file.read_text())
        result |= {"tokens_per_s": m["tokens_per_s_after_warmup"],
                   "peak_gib": m["peak_memory_bytes"] / 2**30, "losses": m["losses"],
                   "attention_kernels": m.get("attention_kernels"), "kernels": m["kernels"],
                   "params": m.get("total_params")}
    return result


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    out = {"python": sys.version.split()[0],
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}
    for name in ("torch", "transformers", "peft", "liger-kernel", "triton"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--families", default=",".join(SPEED))
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--no-fidelity", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"command": " ".join(sys.argv), "versions": versions(),
                              "fidelity": [], "speed": []}
    if not args.no_fidelity:
        for family in families:
            report["fidelity"].append(fidelity(family, args.tiny))
            row = report["fidelity"][-1]
            gap = row["loss_gap_per_token"]
            print(f"{family:12} {row['dtype']}  loss/token gap {gap['mgft_vs_eager']:.2e} "
                  f"(bf16 vs fp32 eager {gap['eager_bf16_vs_fp32']:.2e}, features dropped "
                  f"{gap['features_dropped_vs_eager']:.2e})  grad rel err "
                  f"{row['lora_grad_rel_error']['mgft_vs_eager']:.2e}  "
                  f"kernels {sorted(row['attention_kernels'])} liger {row['liger']}", flush=True)
    if not args.no_speed:
        steps = args.steps or (2 if args.tiny else 14)
        runs = [(f, None) for f in families] + ([("llama", "flex")] if "llama" in families
                                                else [])
        for family, force in runs:
            report["speed"].append(speed(family, work, args.out, args.tiny, steps, force))
            row = report["speed"][-1]
            print(f"{family:12} {row['arch']:14} forced={row['forced']} exit={row['exit']} "
                  f"tok/s={row.get('tokens_per_s', 0):,.0f} "
                  f"peak={row.get('peak_gib', 0):.1f} GiB kernels={row.get('attention_kernels')}",
                  flush=True)
    (args.out / "fidelity.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
