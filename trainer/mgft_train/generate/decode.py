"""The model and tokenizer for generation, and one batch of prompts through `generate`."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from mgft.contract.generate import GenerateArgs

from mgft_train.errors import UsageError
from mgft_train.generate.prompts import Prompt
from mgft_train.model import compute_dtype


def load_tokenizer(args: GenerateArgs) -> Any:
    """The adapter's tokenizer when it saved one (mgft saves it beside the adapter, with any
    chat template), else the base model's. Left padding: generation appends on the right."""
    from transformers import AutoTokenizer

    source = args.model
    if args.adapter and Path(args.adapter, "tokenizer_config.json").is_file():
        source = args.adapter
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    if tokenizer.eos_token_id is None:
        raise UsageError("--model", source, "tokenizer has no eos token, so generation could "
                         "not tell where a completion ends", "set eos_token in "
                         "tokenizer_config.json")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # pad positions are masked out
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(args: GenerateArgs, device: torch.device) -> torch.nn.Module:
    """The base model on this rank's device (or spread over the node's GPUs with
    --split-model), with the adapter merged in: one matmul per layer instead of three."""
    from transformers import AutoModelForCausalLM

    device_map: Any = "auto" if args.split_model else {"": device}
    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=compute_dtype(device), device_map=device_map, local_files_only=True)
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter).merge_and_unload()
    return model.eval()


def stop_ids(model: torch.nn.Module, tokenizer: Any) -> list[int]:
    """Every end-of-sequence id: the tokenizer's and the model's generation config's (chat
    models often list an end-of-turn token there too)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return sorted(ids)


def generation_config(args: GenerateArgs, tokenizer: Any, eos: list[int]) -> Any:
    """Exactly the requested decoding: a fresh config, so defaults shipped with the model
    (a chat model's temperature 0.6, top_k 50, ...) never apply unasked."""
    from transformers import GenerationConfig

    sample = args.temperature > 0
    extra = {"temperature": args.temperature, "top_p": args.top_p, "top_k": 0} if sample else {}
    return GenerationConfig(max_new_tokens=args.max_new_tokens,
                            min_new_tokens=args.min_new_tokens, do_sample=sample,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=eos, **extra)


def left_pad(batch: list[Prompt], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p.ids) for p in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, p in enumerate(batch):
        ids[row, width - len(p.ids):] = torch.tensor(p.ids)
        mask[row, width - len(p.ids):] = 1
    return ids, mask


def planless_attention() -> Any:
    """sdpa without its cuDNN backend, which torch 2.11 tries first on an H200. cuDNN builds
    an execution plan for every new (query, key) length pair, and decoding meets a new key
    length at every token: a 1B model's first batch of 32 took 8.2 s instead of 1.7 s (3 ms of
    host time per attention call), and later batches paid again for lengths not seen yet.
    Flash and memory-efficient attention need no plan (bench/PERF-NOTES.md, generate)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                        SDPBackend.MATH])


def generate(model: torch.nn.Module, tokenizer: Any, config: Any, eos: list[int],
             batch: list[Prompt], seed: int) -> list[dict[str, Any]]:
    """Results for one batch. Sampling is seeded per batch: the same seed, world size and
    batch size give the same samples; greedy decoding depends on none of them."""
    ids, mask = left_pad(batch, tokenizer.pad_token_id)
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    with torch.inference_mode(), planless_attention():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             generation_config=config)
    stops = set(eos)
    records = []
    for p, new in zip(batch, out[:, ids.shape[1]:].tolist(), strict=True):
        end = next((k for k, token in enumerate(new) if token in stops), None)
        tokens = new if end is None else new[:end]
        records.append({"index": p.index,
                        "completion": tokenizer.decode(tokens, skip_special_tokens=True),
                        "finish_reason": "length" if end is None else "stop",
                        "prompt_tokens": len(p.ids), "completion_tokens": len(tokens)})
    return records


def generate_all(model: torch.nn.Module, tokenizer: Any, config: Any, eos: list[int],
                 items: list[Prompt], batch_size: int, seed: int,
                 done: Callable[[list[dict[str, Any]], float], None],
                 note: Callable[[str], None]) -> int:
    """Every prompt in `items`, `batch_size` at a time; `done(records, seconds)` after each
    batch. A batch that runs out of GPU memory is retried at half the size, and the rest go
    at that size, so a default that is too large for a GPU costs a retry, not the job.
    Returns the batch size it ended with."""
    first = 0
    while first < len(items):
        batch = items[first:first + batch_size]
        start = time.perf_counter()
        try:
            records = generate(model, tokenizer, config, eos, batch,
                               seed=seed * 1_000_003 + batch[0].index)
        except torch.OutOfMemoryError:
            records = None  # handled below, once the failed batch's tensors are released
        if records is None:
            if batch_size == 1:
                raise UsageError("--batch-size", 1, "a single prompt and its completion do "
                                 "not fit in this GPU's memory", "use --strategy mp to "
                                 "spread the model over the node's GPUs, or lower "
                                 "--max-new-tokens")
            torch.cuda.empty_cache()
            note(f"out of GPU memory at --batch-size {batch_size}; going on at "
                 f"{batch_size // 2}")
            batch_size //= 2
            continue
        done(records, time.perf_counter() - start)
        first += len(batch)
    return batch_size
