"""`mgft submit --preflight`: the doctor's quick checks in every job process, before the
process group exists, so a broken node fails in seconds with a reason, not at the first
collective after a long model load."""

from __future__ import annotations

import sys

from mgft.contract.env import DistEnv
from mgft.contract.exitcodes import FAILED
from mgft.doctor.run import Options, exit_code, print_checks, run_checks


def run_preflight() -> int:
    """0 when nothing failed; FAILED otherwise. The node's first process prints the table,
    every process names its own failures."""
    env = DistEnv.from_env()
    results = run_checks(Options(quick=True))
    if env.local_rank == 0:
        print_checks(results, title=f"mgft preflight (rank {env.rank})", stderr=True)
    if exit_code(results) == 0:
        return 0
    failed = "; ".join(f"{r.name}: {r.detail}" for r in results if r.status == "fail")
    print(f"mgft preflight: rank {env.rank} failed: {failed}", file=sys.stderr, flush=True)
    return FAILED
