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
# Environment for every process the benchmarks start on the shared GPU hosts: NVLink
# multicast can take all of the host's GPUs down (seen on the H200 hosts).
GPU_SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                "NVSHMEM_DISABLE_NVLS": "1"}


def build_model(arch: str, out: Path, seed: int = 0) -> Path:
    """`out` holds config, weights and tokenizer for `arch` ("tiny" or a name in
    mgft.plan.arch.KNOWN); an earlier build of the same arch is reused."""
    marker = out / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("arch") == arch:
        return out
    import torch
    from mgft_train import demo_assets as tiny
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
    from mgft_train.demo_assets import WORDS
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
    from mgft_train.demo_assets import WORDS

    rng = random.Random(seed)
    with open(out, "w", encoding="utf-8") as f:
        for i in range(n):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words)))
            f.write(json.dumps({"id": i, "prompt": f"Repeat the words: {words}\n"}) + "\n")
    return out


CONFIG_MARKER = "mgft-bench-config.json"
SFT_PROMPT = "Repeat the words:"


def model_config(arch: str, out: Path, seed: int = 0) -> Path:
    """`out` holds config.json and the bench tokenizer for `arch` ("tiny" or a name in
    mgft.plan.arch.KNOWN), and no weights: mgft's --random-init and the perf baseline build
    the weights on the GPU from the config, so no run writes or reads 16 GB of random weights."""
    marker = out / CONFIG_MARKER
    if marker.is_file() and json.loads(marker.read_text()) == {"arch": arch, "seed": seed}:
        return out
    from mgft_train import demo_assets as tiny
    from mgft_train.data import render_prompt

    rows = tiny.make_rows(256, seed)
    tokenizer = tiny.train_tokenizer([render_prompt(r) + r.output for r in rows])
    if arch == "tiny":
        config = tiny.make_config(tokenizer, tiny.PRESETS["tiny"])
    else:
        from mgft.plan.arch import KNOWN
        from transformers import AutoConfig

        config = AutoConfig.for_model(**KNOWN[arch].hf_config(),
                                      bos_token_id=tokenizer.bos_token_id,
                                      eos_token_id=tokenizer.eos_token_id,
                                      pad_token_id=tokenizer.pad_token_id)
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    marker.write_text(json.dumps({"arch": arch, "seed": seed}) + "\n")
    return out


def sft_rows(model_dir: Path, out: Path, n: int, lengths: tuple[int, int] = (128, 1024),
             seed: int = 0) -> list[int]:
    """Prompt/completion rows whose token length is uniform over `lengths` (both ends
    included), counted as mgft and TRL both encode a row: BOS, prompt, completion, EOS.
    The completion repeats the prompt's words, so the loss has somewhere to fall. Every row
    is checked both ways of tokenizing it; returns each row's length."""
    from mgft_train.demo_assets import WORDS
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # Words that are one token with or without a leading space make lengths exact; the
    # prompt ends in a newline, a token of its own, so nothing merges across the boundary.
    words = [w for w in WORDS if all(len(tokenizer(t, add_special_tokens=False)["input_ids"])
                                     == 1 for t in (w, " " + w))]
    fixed = len(tokenizer(SFT_PROMPT + "\n")["input_ids"]) + 1  # BOS ... newline, EOS
    lo, hi = lengths
    if not words or lo < fixed + 2 or hi < lo:
        raise ValueError(f"lengths {lo}:{hi}: need {fixed + 2} <= lo <= hi with this tokenizer")
    rng = random.Random(seed)
    rows, want = [], []
    for _ in range(n):
        length = rng.randint(lo, hi)
        budget = length - fixed
        prompt_words = [rng.choice(words) for _ in range(budget // 2)]
        completion_words = (prompt_words * 2)[:budget - len(prompt_words)]
        rows.append({"prompt": SFT_PROMPT + "".join(" " + w for w in prompt_words) + "\n",
                     "completion": " ".join(completion_words)})
        want.append(length)
    prompts = tokenizer([r["prompt"] for r in rows])["input_ids"]
    completions = tokenizer([r["completion"] for r in rows], add_special_tokens=False)["input_ids"]
    joined = tokenizer([r["prompt"] + r["completion"] + tokenizer.eos_token for r in rows])
    for i, length in enumerate(want):
        mgft_way = len(prompts[i]) + len(completions[i]) + 1
        trl_way = len(joined["input_ids"][i])
        if not mgft_way == trl_way == length:
            raise AssertionError(f"row {i}: {mgft_way} (mgft) / {trl_way} (TRL) tokens, "
                                 f"meant {length}")
    with open(out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return want
