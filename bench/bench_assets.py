"""Download-free assets for the GPU benchmarks: a random-init model of a known architecture
(or the tiny test model), a small BPE tokenizer, training rows of controlled length, prompts.

Random weights are enough: memory and throughput depend on shapes, not on what was learned.
The tokenizer's ids are a subset of the model's vocabulary; logits still cover all of it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

MARKER = "mgft-bench.json"
# Environment for every process the benchmarks start on the shared GPU hosts: multicast can
# take the host's GPUs down (shared/notes/gpu-machines.md).
GPU_SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                "NVSHMEM_DISABLE_NVLS": "1"}


def build_model(arch: str, out: Path, seed: int = 0) -> Path:
    """`out` holds config, weights and tokenizer for `arch` ("tiny" or a name in
    mgft.plan.arch.KNOWN); an earlier build of the same arch is reused."""
    marker = out / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("arch") == arch:
        return out
    import torch
    from mgft_train import tiny
    from mgft_train.data import render_prompt

    rows = tiny.make_rows(256, seed)
    tokenizer = tiny.train_tokenizer([render_prompt(r) + r.output for r in rows])
    if arch == "tiny":
        model = tiny.make_model(tiny.make_config(tokenizer, tiny.PRESETS["tiny"]), seed)
    else:
        from mgft.plan.arch import KNOWN
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.for_model(**KNOWN[arch].hf_config(),
                                      bos_token_id=tokenizer.bos_token_id,
                                      eos_token_id=tokenizer.eos_token_id,
                                      pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(seed)
        # Straight onto the GPU: random init of 8B parameters on the CPU takes a minute.
        device = "cuda" if torch.cuda.is_available() else "cpu"
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    marker.write_text(json.dumps({"arch": arch, "seed": seed}) + "\n")
    return out


def training_rows(model_dir: Path, out: Path, n: int, seq_len: int, seed: int = 0,
                  spread: tuple[float, float] = (0.75, 1.25), first_full: bool = False) -> Path:
    """Alpaca rows whose token lengths spread over `spread` x seq_len. The default: about
    half are cut at seq_len, so most padded micro-batches are as wide as seq_len (what
    `mgft plan` assumes for padded batches). Short rows (e.g. 0.05-0.5) fill packs to ~99%,
    as the plan assumes for packed ones; `first_full` makes the first row longer than
    seq_len, so the trainer's evaluation pass (the first rows, padded to the longest) is
    seq_len wide, as the plan assumes."""
    from mgft_train.tiny import WORDS
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rng = random.Random(seed)
    per_word = len(tokenizer(" ".join(WORDS * 8), add_special_tokens=False)["input_ids"]) / (
        8 * len(WORDS))
    with open(out, "w", encoding="utf-8") as f:
        for i in range(n):
            share = 1.25 if first_full and i == 0 else rng.uniform(*spread)
            words = round(share * seq_len / per_word)
            text = " ".join(rng.choice(WORDS) for _ in range(words))
            f.write(json.dumps({"instruction": "Repeat the words.", "input": "",
                                "output": text}) + "\n")
    return out


def prompt_rows(out: Path, n: int, seed: int = 0, min_words: int = 8,
                max_words: int = 96) -> Path:
    """Plain prompts of varied length: the fixed set a scaling run generates for."""
    from mgft_train.tiny import WORDS

    rng = random.Random(seed)
    with open(out, "w", encoding="utf-8") as f:
        for i in range(n):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words)))
            f.write(json.dumps({"id": i, "prompt": f"Repeat the words: {words}\n"}) + "\n")
    return out
