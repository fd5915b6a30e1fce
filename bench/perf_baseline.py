"""The common fine-tuning recipe, written plainly: the side of bench/perf.py that mgft must beat.

transformers + peft LoRA (r=16 on every linear layer) + TRL's SFTTrainer, bf16, micro-batch 2 x
grad-accum 4 per GPU, no packing, SFTConfig's defaults otherwise (TRL 1.16: activation
checkpointing on). DDP from torchrun's environment; ZeRO-2/3 through `deepspeed=<dict>`;
FSDP2 through `fsdp="full_shard auto_wrap"`. The model is built from config.json with random
weights, on the GPU, seeded as mgft builds it.

Two more recipes (issue 19), each as its users write it:
- `--recipe tuned`: what a skilled TRL user switches on: `packing=True` (best-fit
  decreasing, to --seq-len), `padding_free=True`, `use_liger_kernel=True`, no activation
  checkpointing, and --micro-batch packs per step (bench/perf.py passes mgft's, so both sides
  take the same tokens per micro-batch), grad-accum 1.
- `--tuning qlora`: the QLoRA guides' recipe: nf4 with double quantization (bf16 compute),
  `prepare_model_for_kbit_training` (which turns on activation checkpointing), paged 8-bit
  AdamW, the plain recipe's batch. The random 4-bit model is built by
  mgft_train.quant.build_random_4bit, the structure from_pretrained's quantizer gives.

    torchrun --standalone --nproc-per-node N bench/perf_baseline.py --model DIR \
        --dataset FILE --output DIR --strategy ddp|fsdp|zero2|zero3 \
        --tuning lora|qlora|full --max-steps K --lr LR [--recipe plain|tuned \
        --micro-batch B --seq-len L] [--cpu]

It measures what mgft's metrics.json holds, by the same definitions, and writes
<output>/metrics.json: real (non-pad) tokens of every micro-batch summed over ranks, each
optimizer step's wall time (step end to step end, after a device sync), the step's token-mean
loss over all ranks, torch.cuda.max_memory_allocated per GPU (process peak RSS on CPU, as
mgft_train.memory), and first_step_at (unix time the first step ended).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mgft_train.rates import steady_tokens_per_s  # mgft's own rule, for a like-for-like figure

STRATEGIES = ("ddp", "fsdp", "zero1", "zero2", "zero3")
MICRO_BATCH, GRAD_ACCUM = 2, 4  # per GPU: the recipe's global batch
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}
# DeepSpeed as the transformers docs write it: "auto" fields filled from the training args, no
# "optimizer" block (the Trainer's AdamW is used, so no FusedAdam JIT build on a fresh host).
ZERO = {"bf16": {"enabled": "auto"}, "gradient_clipping": "auto",
        "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto"}
ZERO_STAGE = {
    1: {"stage": 1},
    2: {"stage": 2, "overlap_comm": True, "contiguous_gradients": True,
        "reduce_bucket_size": "auto", "allgather_bucket_size": 5e8},
    3: {"stage": 3, "overlap_comm": True, "contiguous_gradients": True,
        "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
        "stage3_param_persistence_threshold": "auto",
        "stage3_gather_16bit_weights_on_model_save": True},
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="config.json + tokenizer")
    p.add_argument("--dataset", type=Path, required=True, help="prompt/completion .jsonl")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--strategy", required=True)
    p.add_argument("--tuning", choices=("lora", "qlora", "full"), required=True)
    p.add_argument("--max-steps", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lora-r", type=int, default=LORA["r"])
    p.add_argument("--checkpointing", choices=("default", "on", "off"), default="default",
                   help="activation checkpointing: SFTConfig's default, or forced")
    p.add_argument("--recipe", choices=("plain", "tuned"), default="plain",
                   help="plain: the guides' recipe; tuned: packing, padding-free, Liger")
    p.add_argument("--micro-batch", type=int, help="--recipe tuned: packs per micro-batch")
    p.add_argument("--seq-len", type=int, help="--recipe tuned: tokens per pack")
    p.add_argument("--cpu", action="store_true", help="gloo on CPU (plumbing checks)")
    args = p.parse_args(argv)
    if args.recipe == "tuned" and not (args.micro_batch and args.seq_len):
        p.exit(2, "perf_baseline: error: --recipe tuned: give --micro-batch and --seq-len "
                  "(bench/perf.py passes mgft's)\n")
    if args.strategy not in STRATEGIES:
        # One line and exit 2, before torch is imported: the driver records it as a failure.
        p.exit(2, f"perf_baseline: error: --strategy {args.strategy}: not part of the recipe; use "
                  f"one of {', '.join(STRATEGIES)}\n")
    return args


def sft_config(args: argparse.Namespace) -> Any:
    """SFTConfig's defaults except what the benchmark fixes (batch, steps, lr, seed) and the
    schedule, which follows mgft's (cosine to 10%) so the two loss curves are comparable."""
    from trl import SFTConfig

    tuned = args.recipe == "tuned"
    kwargs: dict[str, Any] = dict(
        output_dir=str(args.output / "trainer"), max_steps=args.max_steps,
        per_device_train_batch_size=args.micro_batch if tuned else MICRO_BATCH,
        gradient_accumulation_steps=1 if tuned else GRAD_ACCUM,
        learning_rate=args.lr, lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1}, seed=args.seed, data_seed=args.seed,
        save_strategy="no", report_to="none", disable_tqdm=True)
    if tuned:
        kwargs |= {"packing": True, "packing_strategy": "bfd", "padding_free": True,
                   "max_length": args.seq_len, "use_liger_kernel": not args.cpu,
                   "gradient_checkpointing": False}
    if args.tuning == "qlora":
        kwargs["optim"] = "paged_adamw_8bit"
    if args.cpu:
        # Without use_cpu each rank trains alone; CPUs have no fast bf16.
        kwargs |= {"use_cpu": True, "bf16": False}
    if args.checkpointing != "default":
        kwargs["gradient_checkpointing"] = args.checkpointing == "on"
    if args.strategy.startswith("zero"):
        stage = int(args.strategy[-1])
        kwargs["deepspeed"] = ZERO | {"zero_optimization": ZERO_STAGE[stage]}
    if args.strategy == "fsdp":
        # FSDP checkpoints inside its own wrapping (the training argument would add an
        # all-gather in the backward pass, transformers warns): same setting, FSDP's place.
        checkpointing = kwargs.pop("gradient_checkpointing", None)
        if checkpointing is None:
            checkpointing = SFTConfig.__dataclass_fields__["gradient_checkpointing"].default
        kwargs |= {"gradient_checkpointing": False, "fsdp": "full_shard auto_wrap",
                   "fsdp_config": {"fsdp_version": 2, "reshard_after_forward": True,
                                   "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
                                   "activation_checkpointing": checkpointing}}
    return SFTConfig(**kwargs)


def build_model(args: argparse.Namespace, device: Any) -> Any:
    """Random weights from config.json, straight onto the device, seeded as mgft seeds it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(args.seed)
    config = AutoConfig.from_pretrained(args.model)
    dtype = torch.float32 if args.cpu else torch.bfloat16
    if args.tuning == "qlora":
        from mgft.spec.job import Strategy
        from mgft_train.quant import build_random_4bit
        from peft import prepare_model_for_kbit_training

        model = build_random_4bit(config, Strategy.DDP, device, dtype, {})
        return prepare_model_for_kbit_training(model)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def load_rows(path: Path) -> Any:
    from datasets import Dataset

    with open(path, encoding="utf-8") as f:
        return Dataset.from_list([json.loads(line) for line in f if line.strip()])


class Meter:
    """Per optimizer step: wall time, real tokens and token-mean loss over all ranks."""

    def __init__(self) -> None:
        self.step_s: list[float] = []
        self.step_tokens: list[int] = []
        self.losses: list[float] = []
        self.first_step_at: float | None = None
        self._tokens: Any = 0
        self._loss: Any = 0.0
        self._last = 0.0

    def micro_batch(self, inputs: dict[str, Any], loss: Any) -> None:
        # Device tensors: no sync here, the step's end syncs once (as mgft's loop does).
        # Padding-free batches are one flat row of real tokens, with no attention mask.
        mask = inputs.get("attention_mask")
        real = mask.sum() if mask is not None else inputs["input_ids"].numel()
        self._tokens = self._tokens + real
        self._loss = self._loss + loss

    def start(self, device: Any) -> None:
        _sync(device)
        self._last = time.perf_counter()

    def step_end(self, device: Any) -> None:
        import torch
        import torch.distributed as dist

        totals = torch.stack([torch.as_tensor(self._tokens, device=device).double(),
                              torch.as_tensor(self._loss, device=device).double()])
        world = 1
        if dist.is_initialized():
            dist.all_reduce(totals)
            world = dist.get_world_size()
        tokens, loss_sum = totals.tolist()  # waits for the step's kernels
        now = time.perf_counter()
        self.step_s.append(now - self._last)
        self._last = now
        self.first_step_at = self.first_step_at or time.time()
        self.step_tokens.append(int(tokens))
        # Each rank's per-micro-batch loss is its summed loss / the step's token count on all
        # ranks x world size (num_items_in_batch, average_tokens_across_devices): the mean over
        # ranks of their sums is the step's token mean.
        self.losses.append(loss_sum / world)
        self._tokens, self._loss = 0, 0.0


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_trainer(args: argparse.Namespace, config: Any, model: Any, meter: Meter) -> Any:
    from peft import LoraConfig
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTTrainer

    class MeteredSFTTrainer(SFTTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            meter.micro_batch(inputs, loss)
            return loss

    class StepClock(TrainerCallback):
        def on_train_begin(self, train_args, state, control, **kwargs):
            meter.start(train_args.device)

        def on_step_end(self, train_args, state, control, **kwargs):
            meter.step_end(train_args.device)

    peft_config = None
    if args.tuning in ("lora", "qlora"):
        peft_config = LoraConfig(**(LORA | {"r": args.lora_r}), task_type="CAUSAL_LM")
    return MeteredSFTTrainer(model=model, args=config, train_dataset=load_rows(args.dataset),
                             processing_class=AutoTokenizer.from_pretrained(args.model),
                             peft_config=peft_config, callbacks=[StepClock()])


def strategy_that_ran(wrapped: Any) -> tuple[str, dict[str, Any]]:
    """Read from the objects the Trainer trained, not from the arguments (on CPU, HF's fsdp=
    silently runs DDP)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if "deepspeed" in sys.modules and isinstance(wrapped, sys.modules["deepspeed"].DeepSpeedEngine):
        stage = wrapped.zero_optimization_stage()
        return f"zero{stage}", {"deepspeed_stage": stage,
                                "optimizer": type(wrapped.optimizer).__name__}
    from torch.distributed.fsdp import FSDPModule

    units = sum(1 for m in wrapped.modules() if isinstance(m, FSDPModule))
    if units:
        return "fsdp", {"fsdp_units": units, "fsdp_version": 2}
    if isinstance(wrapped, DistributedDataParallel):
        return "ddp", {"find_unused_parameters": wrapped.find_unused_parameters}
    if dist.is_initialized() and dist.get_world_size() > 1:
        return "unwrapped", {}
    return "single", {}


def recomputes(wrapped: Any) -> bool:
    """Activation checkpointing as it ran: transformers marks the layers it recomputes, FSDP
    wraps them in CheckpointWrapper."""
    return any(getattr(m, "gradient_checkpointing", False) is True
               or type(m).__name__ == "CheckpointWrapper" for m in wrapped.modules())


def peak_bytes(device: Any) -> int:
    """As mgft_train.memory.device_peak_bytes: max_memory_allocated, or peak RSS on CPU."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def gather(obj: Any) -> list[Any]:
    import torch.distributed as dist

    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def versions() -> dict[str, str]:
    found = {}
    for name in ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "deepspeed",
                 "liger-kernel"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def collect(args: argparse.Namespace, config: Any, trainer: Any, meter: Meter,
            peaks: list[dict[str, Any]], counts: tuple[int, int]) -> dict[str, Any]:
    import torch.distributed as dist

    strategy, evidence = strategy_that_ran(trainer.model_wrapped)
    trainable = next((p for p in trainer.model.parameters() if p.requires_grad), None)
    return {
        "impl": "baseline (transformers + peft + TRL SFTTrainer)",
        "world_size": dist.get_world_size() if dist.is_initialized() else 1,
        "backend": dist.get_backend() if dist.is_initialized() else "none",
        "strategy": strategy, "strategy_evidence": evidence,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "model_wrapper": type(trainer.model_wrapped).__name__,
        "device": config.device.type, "tuning": args.tuning,
        "quantization": quantization(trainer.model),
        "attention": getattr(trainer.model.config, "_attn_implementation", None),
        "activation_checkpointing": recomputes(trainer.model_wrapped),
        "steps": len(meter.losses), "losses": meter.losses,
        "first_loss": meter.losses[0], "last_loss": meter.losses[-1],
        "tokens": sum(meter.step_tokens), "step_s": meter.step_s,
        "step_tokens": meter.step_tokens,
        "tokens_per_s_after_warmup": steady_tokens_per_s(meter.step_s, meter.step_tokens),
        "peak_memory_bytes": max(p["bytes"] for p in peaks),
        "peak_memory_per_device": peaks, "first_step_at": meter.first_step_at,
        "trainable_params": counts[0], "total_params": counts[1],
        "trainable_dtype": str(trainable.dtype) if trainable is not None else None,
        "recipe": recipe_record(args, config), "versions": versions(),
    }


def quantization(model: Any) -> dict[str, Any] | None:
    from mgft_train.quant import describe

    return describe(model)


def recipe_record(args: argparse.Namespace, config: Any) -> dict[str, Any]:
    """The settings that ran, read back from the resolved SFTConfig."""
    from trl import SFTConfig

    fields = ("per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
              "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "weight_decay",
              "max_grad_norm", "optim", "bf16", "gradient_checkpointing",
              "activation_checkpointing", "gradient_checkpointing_kwargs", "packing",
              "packing_strategy", "padding_free", "max_length",
              "completion_only_loss", "loss_type", "logging_steps", "dataloader_num_workers",
              "ddp_find_unused_parameters", "use_liger_kernel", "fsdp_config", "deepspeed",
              "average_tokens_across_devices", "seed")
    defaults = SFTConfig.__dataclass_fields__
    changed = ["max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
               "learning_rate", "lr_scheduler_type (mgft's cosine to 10%)", "seed",
               "save_strategy=no", "report_to=none", "disable_tqdm"]
    if args.recipe == "tuned":
        changed += ["packing=True", "packing_strategy=bfd", "padding_free=True",
                    "use_liger_kernel=True", "gradient_checkpointing=False",
                    f"max_length={args.seq_len}", "gradient_accumulation_steps=1"]
    if args.tuning == "qlora":
        changed += ["nf4 + double quant (bf16 compute)", "prepare_model_for_kbit_training",
                    "optim=paged_adamw_8bit"]
    return {"recipe": args.recipe,
            "settings": {f: _plain(getattr(config, f, None)) for f in fields},
            "sftconfig_default_checkpointing": defaults["gradient_checkpointing"].default,
            "checkpointing_flag": args.checkpointing, "lora": LORA | {"r": args.lora_r}
            if args.tuning != "full" else None, "changed_from_defaults": changed}


def _plain(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if args.cpu else "cuda")
    import torch.distributed as dist

    config = sft_config(args)  # first: it sets up the process group and ZeRO-3's zero.Init
    if args.cpu and args.strategy == "zero3":
        import deepspeed  # HF's ZeRO-3 model init on CPU needs DeepSpeed's own group first

        deepspeed.init_distributed(dist_backend="gloo")
    model = build_model(args, config.device)
    meter = Meter()
    trainer = make_trainer(args, config, model, meter)
    # ZeRO-3 has already partitioned the weights: ds_numel is a weight's whole size.
    sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad)
             for p in trainer.model.parameters()]
    counts = (sum(n for n, grad in sizes if grad), sum(n for n, _ in sizes))
    trainer.train()
    rank = dist.get_rank() if dist.is_initialized() else 0
    peaks = gather({"rank": rank, "device": str(config.device),
                    "bytes": peak_bytes(config.device)})
    if rank == 0:
        args.output.mkdir(parents=True, exist_ok=True)
        metrics = collect(args, config, trainer, meter, peaks, counts)
        (args.output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"perf_baseline: {metrics['steps']} steps ({metrics['strategy']}, world "
              f"{metrics['world_size']}), loss {metrics['first_loss']:.4f} -> "
              f"{metrics['last_loss']:.4f}, {metrics['tokens']} tokens", flush=True)
    if dist.is_initialized():
        # gloo aborts at random on exit without this (5 of 20 runs; 0 of 48 with it).
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
