"""Where torchrun is: the one lookup for every place mgft starts it (the local backend, the
Kubernetes and Slurm node entries, `mgft doctor --bandwidth`)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


class TorchrunNotFound(RuntimeError):
    pass


def torchrun_path() -> str:
    """torchrun beside this interpreter first (a venv's, or the image's), then PATH: so the
    torchrun started is the one of the torch that mgft's trainer imports."""
    beside = Path(sys.executable).with_name("torchrun")
    found = str(beside) if beside.is_file() else shutil.which("torchrun")
    if found is None:
        raise TorchrunNotFound(f"torchrun not found beside {sys.executable} or on PATH: install "
                               "the trainer with `pip install 'mgft[train]'` where the job runs")
    return found
