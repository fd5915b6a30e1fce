"""The versions of the stack a run used: metrics.json and the trackers' run config."""

from __future__ import annotations

import contextlib
import sys
from importlib.metadata import PackageNotFoundError, version

import torch


def versions() -> dict[str, str]:
    names = ["torch", "transformers", "peft"]
    names += [n for n in ("deepspeed", "bitsandbytes") if n in sys.modules]
    found = {}
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    if torch.cuda.is_available():
        found["cuda"] = str(torch.version.cuda)
        found["gpu"] = torch.cuda.get_device_name(0)
    return found
