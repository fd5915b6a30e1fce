"""A stand-in trainer that keeps only the preemption contract (see mgft.exitcodes.PREEMPTED):
on SIGTERM or SIGUSR2 it saves a checkpoint under OUT/checkpoints and exits 75; run again
with the same OUT, it resumes from it. It proves the launcher's side (signal delivery through
torchrun, requeue, resume) without the real trainer's minute of imports.

    torchrun ... contract_worker.py OUT STEPS [EXIT_CODE]

Each rank writes OUT/rank<R>.json when done: the step it started from and the signals it got.
EXIT_CODE makes every rank fail with that code once it has started, instead of finishing.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

STEP_S = 0.2
PREEMPTED = 75


def main() -> int:
    out, steps = Path(sys.argv[1]), int(sys.argv[2])
    fail_with = int(sys.argv[3]) if len(sys.argv) > 3 else None
    rank = int(os.environ["RANK"])
    ckpt = out / "checkpoints" / f"rank{rank}.json"
    start = json.loads(ckpt.read_text())["step"] if ckpt.exists() else 0
    got: list[str] = []
    for sig in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, lambda s, _f: got.append(signal.Signals(s).name))
    print(f"rank {rank} starts at step {start}", flush=True)
    if fail_with is not None:
        print(f"rank {rank} fails with code {fail_with}", file=sys.stderr, flush=True)
        return fail_with
    for step in range(start, steps):
        if got:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            ckpt.write_text(json.dumps({"step": step}))
            print(f"rank {rank} saved a checkpoint at step {step} after {got}", flush=True)
            return PREEMPTED
        time.sleep(STEP_S)
        print(f"rank {rank} step {step + 1}/{steps}", flush=True)
    (out / f"rank{rank}.json").write_text(json.dumps({"start": start, "signals": got}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
