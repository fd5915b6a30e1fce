"""Which GPUs a local job gets: the CUDA_VISIBLE_DEVICES that `mgft submit` sets.

- `--gpus N` picks the N least-busy idle GPUs (no compute processes, little memory in use,
  low utilization), never a busy one: a second job on a busy GPU runs out of memory or
  halves both jobs' speed.
- `--gpu-ids 0,2` uses exactly those (indices as nvidia-smi shows them, GPU- or MIG- UUIDs,
  or `0:1` for MIG device 1 of GPU 0). A busy one is a warning, or an error with --exclusive.
- A CUDA_VISIBLE_DEVICES already set (by the user, Slurm or Kubernetes) bounds the choice.
- Every run gets exactly its GPUs, single-process ones too: a process that sees several GPUs
  makes HF Trainer wrap the model in nn.DataParallel.

`choose` is pure (the inventory is an argument), so tests run without a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from mgft.contract.env import CUDA_VISIBLE_DEVICES, visible_devices
from mgft.hw.nvml import Device, Inventory, NvmlUnavailable
from mgft.spec.errors import SpecError
from mgft.spec.job import Backend, JobSpec

BUSY_UTILIZATION = 10  # percent
BUSY_MEMORY_FRACTION = 0.05  # an idle GPU holds a few hundred MB of driver state at most
GIB = 1 << 30


class NoGpuDriver(SpecError):
    """GPUs were asked for on a machine where NVML cannot see any."""


@dataclass(frozen=True, slots=True)
class Choice:
    devices: tuple[Device, ...]
    visible: tuple[str, ...]  # the CUDA_VISIBLE_DEVICES entries
    within: str | None  # the CUDA_VISIBLE_DEVICES the choice was made inside, if any
    passed_over: tuple[tuple[Device, str], ...]  # busy GPUs not chosen, and why
    warnings: tuple[str, ...]

    def summary(self) -> str:
        labels = ",".join(d.label for d in self.devices)
        text = f"GPUs {labels}"
        if self.passed_over:
            text += "; passed over busy " + "; ".join(
                f"{d.label} ({why})" for d, why in self.passed_over)
        if self.within is not None:
            text += f"; within CUDA_VISIBLE_DEVICES={self.within}"
        return text


def busy_reasons(d: Device) -> list[str]:
    reasons = []
    if d.processes:
        reasons.append(f"{d.processes} process{'es' if d.processes > 1 else ''}")
    if d.memory_total and d.memory_used >= BUSY_MEMORY_FRACTION * d.memory_total:
        reasons.append(f"{d.memory_used / GIB:.1f} GiB used")
    if d.utilization is not None and d.utilization >= BUSY_UTILIZATION:
        reasons.append(f"{d.utilization}% utilized")
    return reasons


def _load(spec_gpus: int) -> Inventory:
    from mgft.hw import nvml

    try:
        return nvml.inventory()
    except NvmlUnavailable as err:
        raise NoGpuDriver("--gpus", spec_gpus, f"no NVIDIA GPU can be seen here ({err})",
                          "install the NVIDIA driver and nvidia-ml-py, or use --gpus 0 "
                          "to run on CPU") from None


def choose_for(spec: JobSpec, load: Callable[[int], Inventory] = _load,
               env: Mapping[str, str] | None = None) -> Choice | None:
    """The GPUs for a local job; None where the scheduler places the job (or it is CPU)."""
    if spec.backend is not Backend.LOCAL or spec.on_cpu:
        return None
    res = spec.resources
    # A CUDA_VISIBLE_DEVICES given with --env bounds the choice like the environment's own.
    within = spec.env.get(CUDA_VISIBLE_DEVICES, visible_devices(env))
    return choose(load(res.gpus), count=res.gpus, ids=res.gpu_ids, exclusive=res.exclusive,
                  within=within)


def choose(inv: Inventory, *, count: int, ids: Sequence[str] | None = None,
           exclusive: bool = False, within: str | None = None) -> Choice:
    pool = visible_pool(inv, within)
    warnings: list[str] = []
    passed: list[tuple[Device, str]] = []
    if ids is not None:
        picked = _named(inv, pool, ids, exclusive, within)
        warnings = [f"GPU {d.label} is in use ({', '.join(busy_reasons(d))}); sharing it as "
                    "--gpu-ids asks (add --exclusive to refuse busy GPUs)"
                    for d in picked if busy_reasons(d)]
    else:
        picked = _least_busy(pool, count, within)
        passed = [(d, ", ".join(busy_reasons(d))) for d in pool
                  if d not in picked and busy_reasons(d)]
    migs = [d for d in picked if d.is_mig]
    if migs and len(picked) > 1:
        raise SpecError("--gpu-ids", ",".join(d.label for d in picked),
                        "CUDA shows a process one MIG device only, and torchrun starts every "
                        "rank with the same CUDA_VISIBLE_DEVICES",
                        "use a single MIG device (--gpus 1), or whole GPUs")
    # Whole GPUs go by index (with CUDA_DEVICE_ORDER=PCI_BUS_ID, as nvidia-smi numbers them);
    # a MIG device has no index CUDA understands, only its UUID.
    visible = tuple(d.uuid if migs else str(d.index) for d in picked)
    return Choice(devices=tuple(picked), visible=visible, within=within,
                  passed_over=tuple(passed), warnings=tuple(warnings))


def visible_pool(inv: Inventory, within: str | None) -> list[Device]:
    """The devices a job may use: those CUDA_VISIBLE_DEVICES names, else every whole GPU."""
    if within is None:
        return [d for d in inv.devices if not d.is_mig and not d.mig_mode]
    tokens = [t.strip() for t in within.split(",")]
    if not within.strip() or tokens[0] in ("-1", "NoDevFiles"):
        return []
    pool = []
    for token in tokens:
        found = _find(inv, token)
        if found is None:
            raise SpecError("CUDA_VISIBLE_DEVICES", within,
                            f"names {token!r}, which is no GPU on this machine",
                            "fix or unset CUDA_VISIBLE_DEVICES (see `mgft gpus`)")
        pool.append(found)
    return pool


def _find(inv: Inventory, token: str) -> Device | None:
    if token.isdigit():
        return next((d for d in inv.devices if not d.is_mig and d.index == int(token)), None)
    if ":" in token and all(p.isdigit() for p in token.split(":", 1)):
        return next((d for d in inv.devices if d.label == token), None)
    # CUDA accepts any unique prefix of a UUID (legacy MIG-GPU-<uuid>/gi/ci names too).
    matches = [d for d in inv.devices if d.uuid.startswith(token.split("/")[0])]
    return matches[0] if len(matches) == 1 else None


def _named(inv: Inventory, pool: list[Device], ids: Sequence[str], exclusive: bool,
           within: str | None) -> list[Device]:
    picked: list[Device] = []
    labels = ",".join(d.label for d in pool) or "none"
    for token in ids:
        d = _find(inv, token)
        if d is None:
            raise SpecError("--gpu-ids", token, f"no such GPU here (GPUs: {labels})",
                            "use an index as nvidia-smi shows it, a GPU-/MIG- UUID, or 0:1 "
                            "for a MIG device (see `mgft gpus`)")
        if d.mig_mode:
            migs = ", ".join(m.label for m in inv.devices if m.is_mig and m.index == d.index)
            raise SpecError("--gpu-ids", token, f"GPU {d.label} is in MIG mode and runs work "
                            "only in its MIG devices", f"name one of its MIG devices ({migs})")
        if within is not None and d not in pool:
            raise SpecError("--gpu-ids", token, f"outside CUDA_VISIBLE_DEVICES={within}, which "
                            "this environment set (you, Slurm or Kubernetes)",
                            f"pick from {labels}, or unset CUDA_VISIBLE_DEVICES")
        if d in picked:
            raise SpecError("--gpu-ids", ",".join(ids), f"names GPU {d.label} twice",
                            "list each GPU once")
        if exclusive and (why := busy_reasons(d)):
            raise SpecError("--gpu-ids", token, f"GPU {d.label} is in use ({', '.join(why)}) "
                            "and --exclusive is set",
                            "pick an idle GPU (see `mgft gpus`) or drop --exclusive")
        picked.append(d)
    return picked


def _least_busy(pool: list[Device], count: int, within: str | None) -> list[Device]:
    where = f" within CUDA_VISIBLE_DEVICES={within}" if within is not None else ""
    if count > len(pool):
        raise SpecError("--gpus", count, f"only {len(pool)} GPU{'s' * (len(pool) != 1)} "
                        f"visible here{where}",
                        f"use --gpus {len(pool)} or fewer" if pool else
                        "use --gpus 0 to run on CPU, or fix CUDA_VISIBLE_DEVICES")
    idle = [d for d in pool if not busy_reasons(d)]
    if count > len(idle):
        busy = "; ".join(f"GPU {d.label}: {', '.join(busy_reasons(d))}" for d in pool
                         if d not in idle)
        raise SpecError("--gpus", count, f"only {len(idle)} of {len(pool)} GPUs are free{where} "
                        f"({busy})", f"use --gpus {len(idle)}, wait for them, or name GPUs to "
                        "share with --gpu-ids" if idle else "wait for them, or name GPUs to "
                        "share with --gpu-ids")
    ranked = sorted(idle, key=lambda d: (d.processes, d.utilization or 0, d.memory_used,
                                         d.index))
    return sorted(ranked[:count], key=lambda d: (d.index, d.mig or 0))
