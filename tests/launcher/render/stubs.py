"""Run rendered shell with stand-ins for srun, scontrol and torchrun that record what they get.

Executing the script (rather than reading it) proves what bash really passes to torchrun. An
sbatch script's `python3 -m mgft.node.slurm_task` runs for real (this interpreter, this mgft);
only its torchrun lookup is pointed at the recording stand-in on PATH.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_SRUN = """#!/bin/bash
while [ "${1#-}" != "$1" ]; do shift; done  # drop srun's own options
exec "$@"
"""
_SCONTROL = """#!/bin/bash
[ "$1 $2" = "show hostnames" ] || exit 9
printf 'node1\\nnode2\\n'
"""
_PYTHON3 = f"""#!/bin/bash
if [ "$1 $2" = "-m mgft.node.slurm_task" ]; then
  shift 2
  exec {sys.executable} -c 'import sys, mgft.node.slurm_task as t
t.torchrun_path = lambda: "torchrun"
sys.exit(t.main(sys.argv[1:]))' "$@"
fi
exec {sys.executable} "$@"
"""
_TORCHRUN = """#!/bin/bash
printf '%s\\0' "$@" > "$RECORD_DIR/argv"
env -0 > "$RECORD_DIR/env"
"""


def _write_stubs(bin_dir: Path, overrides: dict[str, str]) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    stubs = {"srun": _SRUN, "scontrol": _SCONTROL, "torchrun": _TORCHRUN,
             "python3": _PYTHON3} | overrides
    for name, body in stubs.items():
        path = bin_dir / name
        path.write_text(body)
        path.chmod(0o755)


def run_recorded(script: str, workdir: Path, extra_env: dict[str, str] | None = None,
                 stubs: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """Run `script` with bash; return torchrun's argv (without argv[0]) and environment.
    `stubs` replaces or adds stand-in commands (name -> script)."""
    _write_stubs(workdir / "bin", stubs or {})
    path = f"{workdir / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = {"PATH": path, "RECORD_DIR": str(workdir),
           "HOME": str(workdir)} | (extra_env or {})
    proc = subprocess.run(["bash", "-c", script], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    argv = (workdir / "argv").read_bytes().decode().split("\0")[:-1]
    pairs = (workdir / "env").read_bytes().decode().split("\0")[:-1]
    return argv, dict(p.split("=", 1) for p in pairs)
