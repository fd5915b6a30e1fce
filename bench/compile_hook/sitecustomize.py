"""Regional torch.compile of the decoder blocks, measured against the trainer as shipped on
one machine (issue 19's next lever) before the trainer had it: how bench/issue19_h200.sh
parts 9-11 were taken. The trainer's own `--compile blocks` (mgft_train/compiled.py) now
does what `blocks` does here; part 12 measures it. Put this directory on PYTHONPATH and set
MGFT_BENCH_COMPILE to

    blocks        each decoder block compiled (torch.compile, default mode; one graph per
                  block class, reused by every layer), attention left to the trainer's
                  kernel (a graph break), Liger's block kernels (RMSNorm, SwiGLU, RoPE) off
                  so that inductor fuses those itself; Liger's fused loss kept (outside the
                  blocks)
    blocks-liger  the same with Liger's block kernels kept inside the compiled blocks

Unset, or `off`, the trainer runs as shipped. metrics.json's `kernels` gains
`bench-compile:<mode>`, so a result says how it was taken.

    PYTHONPATH=bench/compile_hook:$PYTHONPATH MGFT_BENCH_COMPILE=blocks python -m mgft_train ...
"""

from __future__ import annotations

import inspect
import os
import sys
import time
from pathlib import Path

MODE = os.environ.get("MGFT_BENCH_COMPILE", "off")
MODES = ("off", "blocks", "blocks-liger")
BLOCK_KERNELS = ("rms_norm", "swiglu", "rope")


def _without_block_kernels(kernels) -> None:
    original = kernels.apply_liger

    def apply_liger(spec, device, model_type):
        try:
            from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
        except ImportError:  # no Liger: nothing to leave out
            return original(spec, device, model_type)
        patch = MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type)
        if patch is None:
            return original(spec, device, model_type)

        def loss_only(**chosen):
            return patch(**{**chosen, **{k: False for k in BLOCK_KERNELS if k in chosen}})

        loss_only.__signature__ = inspect.signature(patch)  # apply_liger reads it
        MODEL_TYPE_TO_APPLY_LIGER_FN[model_type] = loss_only
        try:
            original(spec, device, model_type)
        finally:
            MODEL_TYPE_TO_APPLY_LIGER_FN[model_type] = patch
        kernels._applied[:] = [k for k in kernels._applied if k not in BLOCK_KERNELS]
        return list(kernels._applied)

    kernels.apply_liger = apply_liger


def _attention_eager(attention) -> None:
    import torch

    # register() hands transformers this module's global at call time: wrapped first.
    attention.packed_attention = torch.compiler.disable(attention.packed_attention)


def _compile_blocks(model) -> None:
    original = model.load_model
    describe = model.describe

    def load_model(spec, ctx):
        net = original(spec, ctx)
        started = time.perf_counter()
        for block in model.blocks(net):
            block.compile()  # compiled on its first call; every layer reuses the graph
        print(f"bench-compile: {MODE}, {len(model.blocks(net))} blocks wrapped in "
              f"{time.perf_counter() - started:.2f} s (they compile in the first step)",
              file=sys.stderr)
        return net

    def described(net):
        found = describe(net)
        found["kernels"] = [*found["kernels"], f"bench-compile:{MODE}"]
        return found

    model.load_model = load_model
    model.describe = described


if MODE not in MODES:
    raise SystemExit(f"MGFT_BENCH_COMPILE={MODE}: use one of {', '.join(MODES)}")
if MODE != "off" and os.environ.get("LOCAL_RANK") is not None:
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # bench/: import_hook
    from import_hook import wrap_after_import

    wraps = {"mgft_train.model": _compile_blocks, "mgft_train.attention": _attention_eager}
    if MODE == "blocks":
        wraps["mgft_train.kernels"] = _without_block_kernels
    wrap_after_import(wraps)
