"""--output checked from the submit host before a Slurm job is queued.

The nodes write checkpoints, results and their own logs (`<output>/slurm`) into --output
through a filesystem they share with this host, so what this host cannot create or write there
they cannot either; found here it costs no wait in the queue, and is one line, not a traceback
from submitit.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mgft.spec.errors import SpecError, as_spec_error

_FIX = "pick an --output on a filesystem the nodes share that you can write to"


def check(output: Path, folder: Path, *, training: bool = True) -> None:
    """Refuse --output as the trainer would (a file, a finished run, results that are not this
    job's: `mgft_train.checks.check_output_dir`; `mgft generate` checks its own), then create
    `folder` in it, where the node tasks' logs go, and a file there; or say in one line why
    not."""
    if output.exists() and not output.is_dir():
        raise SpecError("--output", str(output), "exists and is not a directory",
                        "pick a new --output directory")
    if training:
        from mgft_train.checks import check_output_dir

        with as_spec_error():
            check_output_dir(str(output))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # named: the nearest existing directory (or file) that refused
        _refuse(output, err, next(p for p in (folder, *folder.parents) if p.exists()))
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".mgft-write-check-"):
            pass  # a directory that exists already may still refuse new files (read-only)
    except OSError as err:
        _refuse(output, err, folder)


def _refuse(output: Path, err: OSError, where: Path) -> None:
    named = "" if where == output else f" ({where})"
    raise SpecError("--output", str(output), f"cannot write there from this host: "
                    f"{err.strerror or err}{named}", _FIX) from None
