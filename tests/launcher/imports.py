"""Which heavy libraries the CLI pulls in: the launcher must stay light (no torch etc.)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "kubernetes", "submitit", "deepspeed", "peft", "numpy")


def heavy_modules_after(*commands: list[str]) -> list[str]:
    """Run each `mgft` command in one fresh interpreter; the heavy libraries then loaded."""
    code = f"""
import json, sys
from mgft.cli.main import main
for args in {commands!r}:
    try:
        main(args, standalone_mode=False)
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])
