"""The process group: which device and backend this rank uses, and a teardown gloo survives."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from mgft.contract.env import MGFT_DEVICE, CommEnv, DistEnv, LaunchEnv

from mgft_train import console
from mgft_train.errors import UsageError


@dataclass(frozen=True, kw_only=True, slots=True)
class Dist:
    """This process's place in the job, after the process group (if any) is up."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str  # "gloo", "nccl", or "none" for a single process without a group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def grouped(self) -> bool:
        return self.backend != "none"


def resolve_device(launch: LaunchEnv, env: DistEnv) -> torch.device:
    """MGFT_DEVICE=cpu|cuda, or auto: CUDA when there is one. One GPU per rank, by local rank."""
    want = launch.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError(MGFT_DEVICE, "cuda", "torch sees no CUDA device",
                         f"run on a GPU node, or set {MGFT_DEVICE}=cpu")
    if env.local_rank >= torch.cuda.device_count():
        raise UsageError("LOCAL_RANK", env.local_rank,
                         f"only {torch.cuda.device_count()} CUDA devices are visible",
                         "start at most one process per visible GPU (--nproc-per-node)")
    return torch.device("cuda", env.local_rank)


def init(env: DistEnv, device: torch.device, *, backend: str | None = None,
         timeout: timedelta | None = None) -> Dist:
    """Join the process group torchrun describes; a plain `python -m` run joins none.
    `backend` "gloo" gives a GPU job a CPU group for a few barriers (generation never
    communicates tensors); `timeout` replaces the env contract's MGFT_DIST_TIMEOUT."""
    # DeepSpeed (imported by transformers whenever it is installed) picks its accelerator at
    # import time: name it, so a CPU run on a GPU host does not pick CUDA, nor warn that it
    # guessed.
    os.environ.setdefault("DS_ACCELERATOR", device.type)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before init, so NCCL binds this rank to its own GPU
    if not env.distributed:
        return Dist(rank=0, local_rank=0, world_size=1, device=device, backend="none")
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    kwargs = {"device_id": device} if backend == "nccl" else {}
    if backend == "nccl":
        _prepare_nccl(env)
    # A dead rank fails the job after this long, not torch's default 10 (NCCL) or 30 (gloo) min.
    timeout = timeout or timedelta(seconds=CommEnv.from_env().timeout_s)
    dist.init_process_group(backend=backend, store=attempt_store(env), rank=env.rank,
                            world_size=env.world_size, timeout=timeout, **kwargs)
    return Dist(rank=dist.get_rank(), local_rank=env.local_rank,
                world_size=dist.get_world_size(), device=device, backend=dist.get_backend())


def _prepare_nccl(env: DistEnv) -> None:
    """Resolve the fabric preset on this node (NCCL reads its variables at init)."""
    from mgft.comm.fabric import prepare_process

    resolution, applied = prepare_process()
    if env.local_rank == 0:  # one line per node: nodes may resolve differently
        console.err(f"mgft: {resolution.describe(applied)}")


def attempt_store(env: DistEnv) -> dist.Store:
    """torchrun's store, with keys private to this attempt.

    After a worker dies, torchrun (--max-restarts) restarts all workers against the same
    store, where the dead attempt's keys remain: gloo then connects to the dead rank's old
    address and NCCL can read an old unique id, and the new attempt hangs in
    init_process_group. A prefix per restart keeps every attempt's keys apart.
    """
    store, _, _ = next(dist.rendezvous("env://", rank=env.rank, world_size=env.world_size))
    return dist.PrefixStore(f"mgft/attempt-{env.restart_count}", store)


def teardown(ctx: Dist) -> None:
    """Every rank must get here. Without the barrier, gloo aborts at random at exit
    ("terminate called without an active exception") in about 1 run of 4."""
    if ctx.grouped:
        dist.barrier()
        dist.destroy_process_group()


ABANDON_S = 5.0


def abandon(ctx: Dist) -> None:
    """On failure: no barrier, since the other ranks may never reach it. gloo's teardown can
    itself block once a peer has exited (seen when rank 0 fails the final save and exits
    first): wait for it a few seconds at most, so that this rank's exit code, not torchrun's
    SIGKILL 30 s later, ends it."""
    if ctx.grouped and dist.is_initialized():
        done = threading.Thread(target=dist.destroy_process_group, daemon=True)
        done.start()
        done.join(ABANDON_S)


def barrier(ctx: Dist) -> None:
    if ctx.grouped:
        dist.barrier()


def gather(value: object, ctx: Dist) -> list[object]:
    """Every rank's `value`, in rank order, on every rank (a few small Python objects)."""
    if not ctx.grouped:
        return [value]
    out: list[object] = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out


def all_reduce(values: list[float], ctx: Dist, op: str = "sum") -> list[float]:
    """Reduce a few scalars across ranks in one collective (float64: token counts stay exact)."""
    if not ctx.grouped:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()
