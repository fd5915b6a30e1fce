"""Rank 0 writes the trained weights; a crash mid-write never leaves a half-written result."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from mgft.spec import Tuning


def result_dir(output: str | Path, tuning: Tuning) -> Path:
    """LoRA saves only the adapter (MBs, loaded onto the base model); full saves the model."""
    return Path(output) / ("model" if tuning is Tuning.FULL else "adapter")


def save(model: torch.nn.Module, tokenizer: Any, output: str | Path, tuning: Tuning) -> Path:
    """`model` is the unwrapped model: a PeftModel saves just its adapter, a plain model all."""
    final = result_dir(output, tuning)
    # Written beside the final name, then renamed: a rename within a directory is atomic.
    partial = final.with_name(f".{final.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)  # left by an earlier crash; never a complete result
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    os.rename(partial, final)  # fails, rather than merges, if `final` appeared meanwhile
    return final
