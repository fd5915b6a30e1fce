"""Tokenizer and causal LM from a local directory, made trainable the way --tuning asks."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from mgft.spec import TrainSpec, Tuning

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


def param_dtype(device: torch.device) -> torch.dtype:
    # CPUs have slow or no bf16 matmuls; every CUDA GPU worth training on has fast ones.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_model(spec: TrainSpec, device: torch.device) -> torch.nn.Module:
    """Load the base model on `device` and apply --tuning; seeded, so every rank builds the same
    adapter (DDP also broadcasts rank 0's weights, but an equal start keeps that a no-op)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(spec.seed)
    # Straight onto the device: loading on the CPU first costs a minute for an 8B model.
    model = AutoModelForCausalLM.from_pretrained(
        spec.model, dtype=param_dtype(device), device_map={"": device}, local_files_only=True)
    model.config.use_cache = False  # a KV cache is only for generation
    if spec.tuning is Tuning.LORA:
        return add_lora(model, spec)
    if spec.tuning is Tuning.FULL:
        return model
    raise UsageError("--tuning", spec.tuning.value, "not implemented by this trainer version yet",
                     "use --tuning lora")


def add_lora(model: torch.nn.Module, spec: TrainSpec) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
                        target_modules="all-linear", task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        # peft asks transformers' deprecated is_gradient_checkpointing: once per rank, no news.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                category=FutureWarning)
        return get_peft_model(model, config)


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
