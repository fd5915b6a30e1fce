"""A stand-in trainer that keeps only the preemption contract (mgft.contract.exitcodes.PREEMPTED):
on SIGTERM or SIGUSR2 it saves a checkpoint under OUT/checkpoints and exits 75; run again
with the same OUT, it resumes from it. It proves the launcher's side (signal delivery through
torchrun, requeue, resume) without the real trainer's minute of imports; its signal handling
is the trainer's own (mgft_train.signals, which imports nothing heavy).

    torchrun ... contract_worker.py OUT STEPS [EXIT_CODE]

Each rank writes OUT/rank<R>.json when done: the step it started from and the signals it got.
EXIT_CODE makes every rank fail with that code once it has started, instead of finishing.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from mgft_train import signals

STEP_S = 0.2
PREEMPTED = 75


def main() -> int:
    out, steps = Path(sys.argv[1]), int(sys.argv[2])
    fail_with = int(sys.argv[3]) if len(sys.argv) > 3 else None
    rank = int(os.environ["RANK"])
    ckpt = out / "checkpoints" / f"rank{rank}.json"
    start = json.loads(ckpt.read_text())["step"] if ckpt.exists() else 0
    signals.install()
    print(f"rank {rank} starts at step {start}", flush=True)
    if fail_with is not None:
        print(f"rank {rank} fails with code {fail_with}", file=sys.stderr, flush=True)
        return fail_with
    for step in range(start, steps):
        if signals.requested():
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            ckpt.write_text(json.dumps({"step": step}))
            print(f"rank {rank} saved a checkpoint at step {step} after {signals.received()}",
                  flush=True)
            # A second stop signal (Slurm signals every node, mgft-node forwards it too) may
            # land while the interpreter exits, when Python's default handler would kill.
            signals.ignore()
            return PREEMPTED
        time.sleep(STEP_S)
        print(f"rank {rank} step {step + 1}/{steps}", flush=True)
    (out / f"rank{rank}.json").write_text(json.dumps({"start": start,
                                                      "signals": signals.received()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
