"""How a run keeps its LoRA dropout, for a same-machine comparison of the trainer's fold
(mgft_train.lora_dropout) with what it replaced, the trainer otherwise unchanged: put this
directory on PYTHONPATH and set MGFT_BENCH_DROPOUT to

    stored      peft's own modules (no fold: the dropout output and mask are kept)
    checkpoint  the fold through torch.utils.checkpoint (its first version)

Unset, or `function`, the trainer runs as shipped (the fold as an autograd.Function).

    PYTHONPATH=bench/dropout_hook:$PYTHONPATH MGFT_BENCH_DROPOUT=stored python -m mgft_train ...
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MODE = os.environ.get("MGFT_BENCH_DROPOUT", "function")


def _wrap(module) -> None:
    if MODE == "stored":
        module.fold = lambda model, strategy: 0
    elif MODE == "checkpoint":
        module._generator = lambda device: None  # the forward's checkpoint path
    elif MODE != "function":
        raise SystemExit(f"MGFT_BENCH_DROPOUT={MODE}: use stored, checkpoint or function")


if os.environ.get("LOCAL_RANK") is not None:
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # bench/: import_hook
    from import_hook import wrap_after_import

    wrap_after_import({"mgft_train.lora_dropout": _wrap})
