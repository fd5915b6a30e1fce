"""The model families mgft trains, by transformers `model_type`: one table for the trainer
(which refuses any other type) and `mgft plan` (which sizes these).

Each family here is proven to train as transformers computes it: tests/trainer/test_families.py
compares mgft's packed path with transformers' eager attention run on each sample alone.
"""

from __future__ import annotations

# model_type -> the name users know it by
FAMILIES: dict[str, str] = {
    "llama": "Llama 2, Llama 3.x",
    "mistral": "Mistral",
    "qwen2": "Qwen2, Qwen2.5",
    "qwen3": "Qwen3",
    "gemma": "Gemma",
    "gemma2": "Gemma-2",
    "gemma3_text": "Gemma-3 (text)",
    "phi3": "Phi-3",
}


def supported_line() -> str:
    return ", ".join(f"{name} ({kind})" for kind, name in FAMILIES.items())
