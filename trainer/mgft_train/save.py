"""The final save: the adapter (LoRA, QLoRA) or the model (full), and on request the merged
model, all as Hugging Face safetensors that load with from_pretrained.

Weights come from `engine.full_state_dict()`: whole tensors gathered from FSDP or ZeRO-3
shards onto rank 0. Saving the module as it sits in memory is what writes an empty adapter
under ZeRO-3 (its parameters are placeholders) and nothing at all under sharded FSDP.
Each result is written beside its final name and renamed into place, so a crash never
leaves a half-written one.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from mgft.spec.job import TrainSpec, Tuning

from mgft_train import distributed
from mgft_train.distributed import Dist

ADAPTER, MODEL, MERGED = "adapter", "model", "merged"


def result_dir(output: str | Path, tuning: Tuning) -> Path:
    """LoRA saves only the adapter (MBs, loaded onto the base model); full saves the model."""
    return Path(output) / (MODEL if tuning is Tuning.FULL else ADAPTER)


def save_final(engine: Any, tokenizer: Any, spec: TrainSpec, ctx: Dist) -> dict[str, Path]:
    """Collective (the gather); rank 0 writes. Returns {kind: path} on rank 0, {} elsewhere."""
    state = engine.full_state_dict()
    saved: dict[str, Path] = {}
    if ctx.is_main:
        base = engine.base
        saved[result_dir(spec.output, spec.tuning).name] = publish(
            result_dir(spec.output, spec.tuning),
            lambda d: base.save_pretrained(d, state_dict=state), tokenizer)
        if spec.save_merged:
            saved[MERGED] = publish(Path(spec.output) / MERGED,
                                    lambda d: merged_model(base, state, spec).save_pretrained(d),
                                    tokenizer)
    distributed.barrier(ctx)  # no rank exits (and tears down) while rank 0 still writes
    return saved


def publish(final: Path, write: Callable[[Path], None], tokenizer: Any) -> Path:
    # Written beside the final name, then renamed: a rename within a directory is atomic.
    partial = final.with_name(f".{final.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by an earlier crash; never complete
    write(partial)
    tokenizer.save_pretrained(partial)
    if final.exists():
        # Only reachable on a resumed run (checks.check_output_dir refuses a finished one):
        # the previous attempt died between this save and metrics.json.
        shutil.rmtree(final)
    os.rename(partial, final)
    return final


def merged_model(trained: Any, state: dict[str, torch.Tensor], spec: TrainSpec) -> Any:
    """The base with the trained adapter folded into its weights, on rank 0's CPU."""
    from transformers import AutoModelForCausalLM

    from mgft_train.model import peft_model

    lora_config = trained.peft_config["default"]
    if spec.tuning is Tuning.QLORA:
        # The 4-bit base cannot take a merge: fold the adapter into the 16-bit original.
        base = AutoModelForCausalLM.from_pretrained(spec.model, dtype="auto",
                                                    local_files_only=True)
        state = {k: v for k, v in state.items() if "lora_" in k}
        strict = False
    else:
        # Every weight is in `state`: build the skeleton without allocating, then adopt them.
        with torch.device("meta"):
            base = AutoModelForCausalLM.from_config(trained.get_base_model().config)
        strict = True
    model = peft_model(base, copy.deepcopy(lora_config))
    result = model.load_state_dict(state, strict=strict, assign=True)
    if not strict and result.unexpected_keys:
        raise RuntimeError(f"adapter weights not in the model: {result.unexpected_keys[:3]}")
    return model.merge_and_unload()
