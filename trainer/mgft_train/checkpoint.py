"""Checkpoints under <output>/checkpoints/step-NNNNNNNN/, written atomically, last K kept.

A checkpoint is written into `.step-NNNNNNNN.partial/` by every rank (the engine's model and
optimizer state, each rank's RNG), then rank 0 adds `trainer_state.json`, and last
`manifest.json` (every file's size), and renames the directory: a rename is atomic, so a kill
at any moment leaves either the complete new checkpoint or none, and the previous one
untouched. Only then are older ones deleted.

A checkpoint is complete when its manifest's files are all there at their sizes and its
trainer_state.json reads (`problem`, a few stat calls, no torch). A damaged one (a file
truncated or emptied after the fact: a copy cut short, a disk error) is skipped for the
previous complete one, and named; if none is complete the run is refused with the fix.
A write that fails (a full disk, a read-only --output) is reported in one line naming the
path and the free space; the partial directory is removed and the previous checkpoint kept.

A job started with an --output that holds checkpoints but no final metrics.json resumes from
the latest: model, optimizer, scheduler, RNG and data position, so its losses equal an
uninterrupted run's. The output directory must be shared by all nodes.

It may resume on another number of processes (and another --micro-batch or --grad-accum):
model and optimizer state are resharded by the strategy's engine, the data position and the
schedule are mapped to the new job by `reshard`, each rank's RNG is seeded afresh.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgft.spec.job import TrainSpec

from mgft_train.errors import UsageError

DIRNAME = "checkpoints"
STATE_FILE = "trainer_state.json"
MANIFEST = "manifest.json"  # written last: {"files": {relative path: bytes}}
_STEP_DIR = re.compile(r"^step-(\d{8})$")
# Fields that may differ between a run and its resumption: where and how often it saves, and
# how often it evaluates (on the same eval set), and where it reports (the same tracker runs
# continue, mgft_train.tracking), and where the data cache is (mgft_train.data.cache).
MAY_CHANGE = frozenset({"output", "save", "save_every", "keep_checkpoints", "save_merged",
                        "eval_every", "report_to", "data_cache"})


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
    # Absent from checkpoints written before resizes were possible (reshard.plan derives them):
    total: int | None = None  # the run's last step
    items: int | None = None  # items in an epoch
    position: dict[str, int] | None = None  # data/order.Position after `step`
    schedule: dict[str, float] | None = None  # reshard.Clock


def root(output: str | Path) -> Path:
    return Path(output) / DIRNAME


def step_dir(output: str | Path, step: int) -> Path:
    return root(output) / f"step-{step:08d}"


def _step_dirs(output: str | Path) -> list[Path]:
    """Every renamed checkpoint directory, complete or not, oldest first."""
    base = root(output)
    if not base.is_dir():
        return []
    return sorted((p for p in base.iterdir() if _STEP_DIR.match(p.name)), key=lambda p: p.name)


def complete(output: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    return [p for p in _step_dirs(output) if problem(p) is None]


def latest(output: str | Path) -> Path | None:
    found = complete(output)
    return found[-1] if found else None


def problem(directory: Path) -> str | None:
    """Why `directory` cannot be resumed from, or None: cheap, before any rank loads it."""
    try:
        files = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        files = {}  # written before manifests: only its trainer_state.json can be checked
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{MANIFEST} unreadable ({err})"
    for name, size in files.items():
        try:
            actual = (directory / name).stat().st_size
        except OSError:
            return f"{name} is missing"
        if actual != size:
            return f"{name} holds {actual} bytes where {size} were written"
    try:
        record = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {STATE_FILE}"
    except (OSError, ValueError) as err:
        return f"{STATE_FILE} unreadable ({err})"
    return None if isinstance(record, dict) else f"{STATE_FILE} holds no record"


def skipped(output: str | Path) -> list[str]:
    """"step-N: why" for each damaged checkpoint newer than the one a resume starts from."""
    start = latest(output)
    return [f"{p}: {why}" for p in _step_dirs(output)
            if (start is None or p.name > start.name) and (why := problem(p)) is not None]


def resume_point(output: str | Path) -> Path | None:
    """The latest complete checkpoint; refuses an --output whose checkpoints are all damaged."""
    found = latest(output)
    if found is None and (dirs := _step_dirs(output)):
        raise UsageError("--output", output,
                         f"no checkpoint in {root(output)} is complete "
                         f"({dirs[-1].name}: {problem(dirs[-1])})",
                         f"delete {root(output)} to start over, or pick a new --output")
    return found


def read_state(directory: Path) -> TrainState:
    return TrainState(**json.loads((directory / STATE_FILE).read_text(encoding="utf-8")))


def spec_record(spec: TrainSpec) -> dict[str, Any]:
    record = dataclasses.asdict(spec)
    return {k: [getattr(x, "value", x) for x in v] if isinstance(v, tuple)
            else getattr(v, "value", v) for k, v in record.items()}


def check_resumable(directory: Path, spec: TrainSpec, world_size: int) -> TrainState:
    """The checkpoint must come from the same job: same flags, bar MAY_CHANGE and those that
    set the global batch (reshard.RESHAPE), which may change with the number of processes."""
    from mgft_train.reshard import RESHAPE

    state = read_state(directory)
    now = spec_record(spec)
    for name, before in state.spec.items():
        if name not in MAY_CHANGE | RESHAPE and now.get(name) != before:
            flag = "--" + name.replace("_", "-")
            raise UsageError(flag, now.get(name),
                             f"the run in {directory.parent.parent} was started with {before} "
                             f"and has checkpoints (last: {directory.name})",
                             f"rerun with {flag} {before} to resume it, or pick a new --output")
    return state


def write(engine: Any, state: TrainState, output: str | Path, ctx: Any, keep: int) -> Path:
    """Collective: every rank calls it after the same step. Returns the checkpoint's path."""
    from mgft_train import distributed

    final = step_dir(output, state.step)
    if final.exists() and problem(final) is None:
        return final  # the end-of-run save right after a periodic one: already complete
    partial = final.with_name(f".{final.name}.partial")
    if ctx.is_main:
        shutil.rmtree(final, ignore_errors=True)  # a damaged one, skipped on resume
        shutil.rmtree(partial, ignore_errors=True)  # left by a kill mid-write: never complete
    error = _attempt(lambda: partial.mkdir(parents=True) if ctx.is_main else None)
    _agree(error, partial, output, ctx)
    # On a node that does not share rank 0's filesystem (a pod without a shared claim) the
    # directory is not there yet; its files then stay local and only rank 0's node can resume.
    error = _attempt(lambda: (partial.mkdir(parents=True, exist_ok=True),
                              engine.save_state(partial), save_rng(partial, ctx.rank)))
    _agree(error, partial, output, ctx)  # every rank's files are in place before the rename
    error = _attempt(lambda: _seal(partial, final, state) if ctx.is_main else None)
    _agree(error, partial, output, ctx)
    if ctx.is_main:
        prune(output, keep)
    distributed.barrier(ctx)
    return final


def _seal(partial: Path, final: Path, state: TrainState) -> None:
    """trainer_state.json, then the manifest of every file, then the atomic rename."""
    _write_json(partial / STATE_FILE, dataclasses.asdict(state))
    files = {str(p.relative_to(partial)): p.stat().st_size
             for p in sorted(partial.rglob("*")) if p.is_file()}
    _write_json(partial / MANIFEST, {"files": files})
    os.rename(partial, final)


def _write_json(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _attempt(write: Any) -> BaseException | None:
    try:
        write()
    except (OSError, RuntimeError) as err:  # torch's C++ writer raises RuntimeError
        return err
    return None


def _agree(error: BaseException | None, partial: Path, output: str | Path, ctx: Any) -> None:
    """Collective, in place of a barrier: if any rank failed to write, every rank raises,
    so none waits for the others in a later collective."""
    from mgft_train import distributed

    # Asked before any rank removes the partial directory, whose bytes fill the disk.
    space = error is not None and out_of_space(error, partial)
    if distributed.all_reduce([float(error is not None)], ctx)[0] == 0:
        return
    if ctx.is_main:
        shutil.rmtree(partial, ignore_errors=True)  # frees the space the failed write took
    raise _write_failure(error, space, partial, output)


def out_of_space(error: BaseException, partial: Path) -> bool:
    """torch's C++ writer reports a full disk as `unexpected pos` or `iostream error`, without
    errno: a small write of our own, before the partial directory is removed, asks the
    filesystem itself."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    probe = partial / ".space-probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            written = os.write(fd, bytes(1 << 16))
        finally:
            os.close(fd)
    except OSError as err:
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    finally:
        probe.unlink(missing_ok=True)
    # A disk with a few KiB left takes what fits and says ENOSPC only on the next write.
    return written < 1 << 16


def _write_failure(error: BaseException | None, space: bool, partial: Path,
                   output: str | Path) -> Exception:
    final = partial.name.removeprefix(".").removesuffix(".partial")
    kept = latest(output)
    keeps = (f"the previous checkpoint {kept.name} is kept" if kept is not None
             else "there is no earlier checkpoint")
    if error is None:
        return UsageError("--output", output, f"another rank could not write checkpoint {final}",
                          f"see that rank's line; {keeps}")
    if space:
        return UsageError("--output", output,
                          f"no space left on device writing checkpoint {root(output) / final} "
                          f"({_free(output)} free there; {keeps})",
                          "free some space (or lower --keep-checkpoints) and rerun the same "
                          "command to resume")
    if isinstance(error, OSError):
        return UsageError("--output", output,
                          f"cannot write checkpoint {root(output) / final}: "
                          f"{error.strerror or error} ({keeps})",
                          "make it writable by this user on every node, or pick another --output")
    return error  # not a filesystem problem: the traceback is the report


def _free(output: str | Path) -> str:
    try:
        free = shutil.disk_usage(root(output)).free
    except OSError:
        return "unknown"
    return f"{free / 2**20:.1f} MiB"


def prune(output: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints (and any damaged ones older than
    those), and stale partial writes."""
    kept = complete(output)[-keep:]
    for old in _step_dirs(output):
        if kept and old.name < kept[0].name:
            shutil.rmtree(old)
    clean_partials(output)


def clean_partials(output: str | Path) -> None:
    """Partial writes left by a kill or a failed write: never complete. Rank 0, when no
    checkpoint is being written (at start, after a write)."""
    for stale in root(output).glob(".step-*.partial"):
        shutil.rmtree(stale, ignore_errors=True)


def load(engine: Any, directory: Path, ctx: Any, plan: Any = None) -> TrainState:
    """Collective: restores the engine's state and this rank's RNG from `directory`, and
    continues it as `plan` (reshard.Plan) says: on another number of ranks, each rank's RNG
    is seeded afresh and the schedule re-anchored.

    Every rank reads the same files, so a damaged one that `problem` could not see (the
    right size, wrong bytes) stops every rank with the same line naming it."""
    from mgft_train import reshard

    state = read_state(directory)
    try:
        engine.load_state(directory)
        if state.world_size == ctx.world_size:
            load_rng(directory, ctx.rank)
        else:
            reshard.reseed(int(state.spec["seed"]), state.step, ctx.rank)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError("--output", directory.parent.parent,
                         f"checkpoint {directory.name} cannot be loaded ({first})",
                         f"delete {directory} to resume from the checkpoint before it") from err
    if plan is None:
        return state
    if not plan.clock.plain():
        reshard.continue_schedule(engine.scheduler, plan.clock)
    return dataclasses.replace(state, **plan.record())


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
