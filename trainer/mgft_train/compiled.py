"""--compile blocks: each transformer block compiled with torch.compile (regional
compilation, as torchtitan does it).

One compiled graph per block class serves every layer (Dynamo inlines the module and takes
its weights as inputs), so a 32-layer model compiles once, in its first step. The shapes are
dynamic from the start: packed micro-batches change their token count every step, and a
graph specialised to the first one would be recompiled at the second (what the measured runs
did: their steady state was already dynamic); with held-out evaluation and Gemma-2's
alternating layers, those recompilations reached Dynamo's limit, past which a frame runs
eager for good. Inductor then
fuses what runs between the matmuls (norms, SiLU-mul, RoPE, LoRA's scaling and dropout, the
residual adds) into a few kernels, which is what a step bound by the host's kernel launches
needs (bench/PERF-NOTES.md §7: 6,600 launches per eager 8B LoRA step).

Attention stays outside the graph (`torch.compiler.disable`): the packed kernels
(attention.py) are already fused, and their per-sample and flex paths are proven as they
are. Liger's block kernels are left out under compilation (kernels.py): Liger's RoPE breaks
the graph and Inductor fuses the same ops itself.

What it computes is proven equal to transformers' eager arithmetic for every supported
family (tests/trainer/test_compiled.py). Dropout draws its masks from Inductor's random
stream, not eager's: the same distribution, other masks.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from mgft_train import attention

NAME = "compile:blocks"


def compile_blocks(blocks: Iterable[torch.nn.Module]) -> int:
    """Compile each block in place (on its first call); returns how many."""
    _attention_outside_graphs()
    count = 0
    for block in blocks:
        block.compile(dynamic=True)
        count += 1
    return count


def _attention_outside_graphs() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(attention.VARLEN,
                                torch.compiler.disable(attention.packed_attention))


def count(model: torch.nn.Module) -> int:
    """How many of the model's modules run compiled."""
    return sum(1 for m in model.modules() if getattr(m, "_compiled_call_impl", None))


def applied(model: torch.nn.Module) -> list[str]:
    """metrics.json's record: how many blocks run compiled (empty when none)."""
    return [f"{NAME}:{n}-blocks"] if (n := count(model)) else []
