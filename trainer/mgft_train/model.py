"""Tokenizer and causal LM from a local directory: loaded (or built at random) where the
strategy wants it, in the dtype it wants, and made trainable the way --tuning asks."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from mgft.spec.families import FAMILIES, supported_line
from mgft.spec.job import Compile, Kernels, Strategy, TrainSpec, Tuning

from mgft_train import attention, compiled, fp8, kernels, lora_dropout, precision
from mgft_train.distributed import Dist
from mgft_train.errors import UsageError


def load_tokenizer(model_dir: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if tokenizer.eos_token_id is None:
        raise UsageError("--model", model_dir, "tokenizer has no eos token, so responses "
                         "could not be taught to stop", "set eos_token in tokenizer_config.json")
    if tokenizer.pad_token_id is None:
        # Pad positions are masked out of attention and loss, so which id fills them is moot.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def param_dtype(device: torch.device, spec: TrainSpec) -> torch.dtype:
    """The dtype the model is loaded in, as --precision stores its weights."""
    return precision.load_dtype(spec, compute_dtype(device))


def compute_dtype(device: torch.device) -> torch.dtype:
    # CPUs have slow or no bf16 matmuls; every CUDA GPU worth training on has fast ones.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def placement(spec: TrainSpec, ctx: Dist, config: Any) -> Any:
    """Where from_pretrained puts the weights (its device_map)."""
    if spec.strategy is Strategy.MP:
        from mgft_train.parallel.mp import device_map

        return device_map(config, torch.cuda.device_count())
    if spec.tuning is Tuning.QLORA and spec.strategy in (Strategy.ZERO3, Strategy.ZERO3_OFFLOAD):
        return None  # ZeRO-3 places (and partitions) the quantized weights itself
    # Straight onto the device: loading on the CPU first costs a minute for an 8B model.
    return {"": ctx.device}


def load_model(spec: TrainSpec, ctx: Dist) -> torch.nn.Module:
    """Load (or build) the base model and apply --tuning. Seeded, so every rank builds the
    same weights and adapter: FSDP and ZeRO shard what each rank holds, assuming replicas."""
    from transformers import AutoConfig

    torch.manual_seed(spec.seed)
    config = AutoConfig.from_pretrained(spec.model, local_files_only=True)
    check_family(spec.model, config.model_type)
    where = placement(spec, ctx, config)
    if spec.kernels is Kernels.FP8:
        fp8.check_device(ctx.device)  # before a minute of building for nothing
    kernels.apply_liger(spec, ctx.device, config.model_type)  # patches classes: before building
    attention = attention_for(spec, ctx.device)
    model = build_random(spec, ctx, config, where, attention) if spec.random_init else \
        load_pretrained(spec, ctx, where, attention)
    model.config.use_cache = False  # a KV cache is only for generation
    if spec.tuning is Tuning.QLORA:
        from mgft_train.quant import keep_training_layout

        keep_training_layout(model)
    if spec.activation_checkpointing:
        # Non-reentrant: works with frozen inputs (LoRA), FSDP2 and ZeRO-3's gathering hooks.
        enable_checkpointing(model)
    if spec.tuning is not Tuning.FULL:
        model = precision.store_adapters(add_lora(model, spec), spec, compute_dtype(ctx.device))
        if spec.lora_dropout_recompute:  # the same masks, recomputed: not stored
            lora_dropout.fold(model, spec.strategy)
        if spec.kernels is Kernels.FP8:
            fp8.quantize_base(model, ctx.device)  # after peft: only adapted frozen Linears
    if spec.compile is Compile.BLOCKS:  # last: the blocks as they will run
        compiled.compile_blocks(blocks(model))
    return model


def check_family(model_dir: str, model_type: str) -> None:
    """Only families proven to train as transformers computes them (test_families.py)."""
    if model_type not in FAMILIES:
        raise UsageError("--model", model_dir, f"model_type {model_type!r} is not a family mgft "
                         f"has proven it trains correctly; supported: {supported_line()}",
                         "use a model of a supported family")


def enable_checkpointing(model: torch.nn.Module) -> None:
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def attention_for(spec: TrainSpec, device: torch.device) -> dict[str, str]:
    """from_pretrained's attn_implementation: mgft's packed attention for packed batches on
    GPUs (attention.py), transformers' default for the model otherwise."""
    if spec.packing and spec.kernels is not Kernels.NONE and device.type == "cuda":
        return {"attn_implementation": attention.register()}
    return {}


def load_pretrained(spec: TrainSpec, ctx: Dist, where: Any,
                    attention: dict[str, str]) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": param_dtype(ctx.device, spec), "device_map": where,
                              **attention}
    if spec.tuning is Tuning.QLORA:
        from mgft_train.quant import bnb_config

        kwargs["quantization_config"] = bnb_config(spec.strategy, compute_dtype(ctx.device))
    return AutoModelForCausalLM.from_pretrained(spec.model, local_files_only=True, **kwargs)


def build_random(spec: TrainSpec, ctx: Dist, config: Any, where: Any,
                 attention: dict[str, str]) -> torch.nn.Module:
    """Random weights from the config, built on the device (on a CPU an 8B model takes a
    minute). mp builds on the first GPU and then spreads the blocks out. qlora builds and
    quantizes one module at a time (quant.build_random_4bit)."""
    from transformers import AutoModelForCausalLM

    if spec.tuning is Tuning.QLORA:
        from mgft_train.quant import build_random_4bit

        model = build_random_4bit(config, spec.strategy, ctx.device, compute_dtype(ctx.device),
                                  attention)
    else:
        with torch.device(ctx.device):
            model = AutoModelForCausalLM.from_config(config, dtype=param_dtype(ctx.device, spec),
                                                     **attention)
    if spec.strategy is Strategy.MP:
        from accelerate import dispatch_model

        model = dispatch_model(model, device_map=where)
    return model


def lora_targets(spec: TrainSpec) -> str | list[str]:
    if spec.lora_targets == "all-linear":
        return "all-linear"  # peft: every nn.Linear (4-bit ones too) except the output head
    return [name.strip() for name in spec.lora_targets.split(",")]


def add_lora(model: torch.nn.Module, spec: TrainSpec) -> torch.nn.Module:
    from peft import LoraConfig

    config = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
                        target_modules=lora_targets(spec), task_type="CAUSAL_LM")
    try:
        return peft_model(model, config)
    except ValueError as err:  # peft: "Target modules {...} not found in the base model"
        raise UsageError("--lora-targets", spec.lora_targets, str(err).split(". ")[0],
                         "name modules the model has (e.g. q_proj,v_proj) or use "
                         "all-linear") from None


def peft_model(model: torch.nn.Module, config: Any) -> Any:
    from peft import get_peft_model

    with warnings.catch_warnings():
        # peft asks transformers' deprecated is_gradient_checkpointing: once per rank, no news.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                category=FutureWarning)
        return get_peft_model(model, config)


def blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated transformer blocks: the classes a HF model lists as never to be split
    (FSDP shards them one at a time)."""
    hf_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(hf_model, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts (a 4-bit weight counts as its packed bytes)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def describe(model: torch.nn.Module) -> dict[str, Any]:
    """What was loaded, read before a strategy shards or partitions the weights away."""
    from mgft_train.quant import describe as quantization

    trainable, total = count_params(model)
    config = getattr(model, "config", None)
    return {"trainable_params": trainable, "total_params": total,
            "quantization": quantization(model), "kernels": kernels.applied() + fp8.applied(model)
            + lora_dropout.applied(model) + compiled.applied(model),
            "attention": getattr(config, "_attn_implementation", None),
            # transformers marks each layer it will recompute
            "activation_checkpointing": any(getattr(m, "gradient_checkpointing", False) is True
                                            for m in model.modules())}
