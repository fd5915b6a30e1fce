"""Checkpoints under <output>/checkpoints/step-NNNNNNNN/, written atomically, last K kept.

A checkpoint is written into `.step-NNNNNNNN.partial/` by every rank (the engine's model and
optimizer state, each rank's RNG), then rank 0 adds `trainer_state.json` and renames the
directory: a rename is atomic, so a kill at any moment leaves either the complete new
checkpoint or none, and the previous one untouched. Only then are older ones deleted.

A job started with an --output that holds checkpoints but no final metrics.json resumes from
the latest: model, optimizer, scheduler, RNG and data position, so its losses equal an
uninterrupted run's. The output directory must be shared by all nodes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgft.spec import TrainSpec

from mgft_train.errors import UsageError

DIRNAME = "checkpoints"
STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d{8})$")
# Fields that may differ between a run and its resumption: where and how often it saves, and
# how often it evaluates (on the same eval set).
MAY_CHANGE = frozenset({"output", "save", "save_every", "keep_checkpoints", "save_merged",
                        "eval_every"})


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainState:
    """Where training stands after `step` optimizer steps, as the loop continues from it."""

    step: int
    losses: list[float]
    tokens: int
    elapsed_s: float
    world_size: int
    spec: dict[str, Any]
    # Held-out eval points so far ({"step", "loss"}); absent from checkpoints written before
    # there was an eval.
    evals: list[dict[str, float]] = field(default_factory=list)


def root(output: str | Path) -> Path:
    return Path(output) / DIRNAME


def step_dir(output: str | Path, step: int) -> Path:
    return root(output) / f"step-{step:08d}"


def complete(output: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    base = root(output)
    if not base.is_dir():
        return []
    found = [p for p in base.iterdir()
             if _STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest(output: str | Path) -> Path | None:
    found = complete(output)
    return found[-1] if found else None


def read_state(directory: Path) -> TrainState:
    return TrainState(**json.loads((directory / STATE_FILE).read_text(encoding="utf-8")))


def spec_record(spec: TrainSpec) -> dict[str, Any]:
    record = dataclasses.asdict(spec)
    return {k: getattr(v, "value", v) for k, v in record.items()}


def check_resumable(directory: Path, spec: TrainSpec, world_size: int) -> TrainState:
    """The checkpoint must come from the same job: same flags (bar MAY_CHANGE), same ranks."""
    state = read_state(directory)
    now = spec_record(spec)
    for name, before in state.spec.items():
        if name not in MAY_CHANGE and now.get(name) != before:
            flag = "--" + name.replace("_", "-")
            raise UsageError(flag, now.get(name),
                             f"the run in {directory.parent.parent} was started with {before} "
                             f"and has checkpoints (last: {directory.name})",
                             f"rerun with {flag} {before} to resume it, or pick a new --output")
    if state.world_size != world_size:
        raise UsageError("--output", directory.parent.parent,
                         f"its checkpoints were written by {state.world_size} ranks, "
                         f"this job has {world_size}",
                         f"resume with {state.world_size} processes, or pick a new --output")
    return state


def write(engine: Any, state: TrainState, output: str | Path, ctx: Any, keep: int) -> Path:
    """Collective: every rank calls it after the same step. Returns the checkpoint's path."""
    from mgft_train import distributed

    final = step_dir(output, state.step)
    if final.exists():  # the end-of-run save right after a periodic one: already complete
        return final
    partial = final.with_name(f".{final.name}.partial")
    if ctx.is_main:
        shutil.rmtree(partial, ignore_errors=True)  # left by a kill mid-write: never complete
        partial.mkdir(parents=True)
    distributed.barrier(ctx)
    # On a node that does not share rank 0's filesystem (a pod without a shared claim) the
    # directory is not there yet; its files then stay local and only rank 0's node can resume.
    partial.mkdir(parents=True, exist_ok=True)
    engine.save_state(partial)
    save_rng(partial, ctx.rank)
    distributed.barrier(ctx)  # every rank's files are in place before the rename
    if ctx.is_main:
        tmp = partial / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(dataclasses.asdict(state)) + "\n", encoding="utf-8")
        os.replace(tmp, partial / STATE_FILE)
        os.rename(partial, final)
        prune(output, keep)
    distributed.barrier(ctx)
    return final


def prune(output: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints, and stale partial writes."""
    for old in complete(output)[:-keep]:
        shutil.rmtree(old)
    for stale in root(output).glob(".step-*.partial"):
        shutil.rmtree(stale, ignore_errors=True)


def load(engine: Any, directory: Path, ctx: Any) -> TrainState:
    """Collective: restores the engine's state and this rank's RNG from `directory`."""
    engine.load_state(directory)
    load_rng(directory, ctx.rank)
    return read_state(directory)


def _rng_file(directory: Path, rank: int) -> Path:
    return directory / f"rng-rank{rank:05d}.pt"


def save_rng(directory: Path, rank: int) -> None:
    """Each rank's generators: dropout masks after resume are the ones it would have drawn."""
    import torch

    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(state, _rng_file(directory, rank))


def load_rng(directory: Path, rank: int) -> None:
    import torch

    state = torch.load(_rng_file(directory, rank), weights_only=True)
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
