"""The doctor's checks. Each takes what it looks at as arguments (so tests hand it a broken
machine) and returns one `Check`; `gather` looks at this machine and runs them all."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from mgft.hw import netinfo
from mgft.hw.nvml import Device, Inventory

PASS, WARN, FAIL = "pass", "warn", "fail"
GIB = 1 << 30
MIN_SHM_PER_GPU = GIB
MIN_NOFILE = 16384


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str  # pass, warn or fail
    detail: str


@dataclass(frozen=True, slots=True)
class TorchInfo:
    """What torch reports about itself, asked in a subprocess so mgft never imports it."""

    torch: str | None = None
    cuda: str | None = None  # the CUDA torch was built for; None for a CPU build
    nccl: str | None = None
    cuda_available: bool = False
    device_count: int = 0
    error: str | None = None


_PROBE = """
import json
try:
    import torch
except Exception as err:
    print(json.dumps({"error": f"{type(err).__name__}: {err}"}))
    raise SystemExit(0)
info = {"torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available()}
info["device_count"] = torch.cuda.device_count() if info["cuda_available"] else 0
try:
    v = torch.cuda.nccl.version()
    info["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
except Exception:
    info["nccl"] = None
print(json.dumps(info))
"""


def torch_probe(timeout: float = 120) -> TorchInfo:
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                             timeout=timeout)
        return TorchInfo(**json.loads(out.stdout.strip().splitlines()[-1]))
    except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError, TypeError) as err:
        return TorchInfo(error=f"probe failed: {type(err).__name__}")


def _worst(statuses: list[str]) -> str:
    return FAIL if FAIL in statuses else WARN if WARN in statuses else PASS


def check_driver(inv: Inventory | None, nvml_error: str | None, expect_gpus: bool) -> Check:
    if inv is None:
        status = FAIL if expect_gpus else WARN
        return Check("driver", status, f"no NVIDIA driver here ({nvml_error})")
    return Check("driver", PASS, f"NVIDIA {inv.driver}, runs CUDA up to {inv.cuda_driver}")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())


def check_torch(info: TorchInfo, inv: Inventory | None, expect_gpus: bool) -> Check:
    if info.torch is None:
        status = FAIL if expect_gpus else WARN
        return Check("torch", status, f"not importable ({info.error}); the launcher needs none, "
                     "the trainer does")
    built = f"CUDA {info.cuda}" if info.cuda else "CPU-only build"
    if info.cuda and inv is not None and _version(info.cuda) > _version(inv.cuda_driver):
        return Check("torch", FAIL, f"{info.torch} is built for CUDA {info.cuda}; this driver "
                     f"runs CUDA up to {inv.cuda_driver}: upgrade the driver or install a torch "
                     f"wheel for CUDA {inv.cuda_driver}")
    if expect_gpus and not info.cuda:
        return Check("torch", FAIL, f"{info.torch} is a {built}; the job needs a CUDA build")
    return Check("torch", PASS, f"{info.torch} ({built})")


def check_nccl_version(info: TorchInfo) -> Check:
    if not info.cuda:
        return Check("nccl", PASS, "not used (CPU runs use gloo)")
    if info.nccl is None:
        return Check("nccl", WARN, "torch reports no NCCL; multi-GPU runs cannot use nccl")
    return Check("nccl", PASS, f"NCCL {info.nccl}")


def check_gpus(visible: list[Device], info: TorchInfo | None, within: str | None,
               expect_gpus: bool, nproc: int | None = None) -> Check:
    scope = f" (CUDA_VISIBLE_DEVICES={within})" if within is not None else ""
    if not visible:
        status = FAIL if expect_gpus else WARN
        return Check("gpus", status, f"no GPUs visible{scope}: jobs here run on CPU (--gpus 0)")
    from mgft.hw.gpus import busy_reasons

    names = "; ".join(f"{d.label} {d.name} {d.memory_total / GIB:.0f} GiB "
                      f"({', '.join(busy_reasons(d)) or 'idle'})" for d in visible)
    detail = f"{len(visible)} visible{scope}: {names}"
    if info is not None and info.cuda and info.device_count != len(visible):
        return Check("gpus", FAIL, f"{detail}; torch sees {info.device_count}")
    if nproc is not None and nproc > len(visible):
        return Check("gpus", FAIL, f"{detail}; {nproc} processes on this node need one each")
    return Check("gpus", PASS, detail)


@dataclass(frozen=True, slots=True)
class Module:
    """An optional module the GPU paths use: its version if installed, else None."""

    name: str  # what the trainer imports
    version: str | None


def find_module(name: str, dist: str) -> Module:
    """Installed or not, without importing it: Liger and Triton pull in torch and CUDA."""
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec(name) is None:
        return Module(name, None)
    try:
        return Module(name, importlib.metadata.version(dist))
    except importlib.metadata.PackageNotFoundError:
        return Module(name, "installed")


GPU_EXTRA = "pip install 'mgft[gpu]'"


def check_kernels(liger: Module, triton: Module, gpu_run: bool) -> Check:
    """Would `--kernels auto` (the default) use Liger's kernels on a GPU run here? It falls
    back to the plain path quietly: slower, and with the whole logits tensor in memory."""
    if not gpu_run:
        return Check("kernels", PASS, "not used: Liger's kernels are for GPU runs "
                     "(--kernels auto takes the plain path on CPU)")
    if liger.version is None:
        return Check("kernels", WARN, "liger-kernel is not installed: --kernels auto would use "
                     f"the plain path (slower, full logits in memory); {GPU_EXTRA}")
    if triton.version is None:
        return Check("kernels", WARN, f"liger-kernel {liger.version} is installed but triton "
                     "is not (it comes with torch's CUDA build on Linux): --kernels auto would "
                     "fail to load Liger and use the plain path; install a CUDA torch, then "
                     f"{GPU_EXTRA}")
    return Check("kernels", PASS, f"liger-kernel {liger.version}, triton {triton.version}: "
                 "--kernels auto uses Liger's kernels on CUDA")


def check_shm(free_bytes: int | None, total_bytes: int | None, gpus: int) -> Check:
    if total_bytes is None:
        return Check("shm", WARN, "/dev/shm missing: NCCL and DataLoader workers need it")
    need = MIN_SHM_PER_GPU * max(1, gpus)
    detail = f"/dev/shm {total_bytes / GIB:.1f} GiB ({(free_bytes or 0) / GIB:.1f} GiB free)"
    if total_bytes < need:
        return Check("shm", WARN, f"{detail}; under 1 GiB per GPU ({need / GIB:.0f} GiB): NCCL "
                     "and DataLoader workers fail with bus errors (docker: --shm-size, "
                     "k8s: --shm-size)")
    return Check("shm", PASS, detail)


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def check_ulimits(memlock: tuple[int, int], nofile: tuple[int, int], rdma: bool) -> Check:
    problems, unlimited = [], resource.RLIM_INFINITY
    if rdma and memlock[0] != unlimited:
        problems.append(f"memlock {_limit(memlock[0])} bytes limits RDMA buffer registration "
                        "(set `ulimit -l unlimited`)")
    if nofile[0] != unlimited and nofile[0] < MIN_NOFILE:
        problems.append(f"open files {nofile[0]} (< {MIN_NOFILE}) runs out with many DataLoader "
                        f"workers (`ulimit -n {_limit(nofile[1])}`)")
    detail = f"memlock {_limit(memlock[0])}, open files {_limit(nofile[0])}"
    return Check("ulimits", WARN if problems else PASS,
                 "; ".join(problems) if problems else detail)


def check_nccl_env(env: Mapping[str, str], ifaces: list[netinfo.Interface],
                   ports: list[netinfo.RdmaPort]) -> Check:
    from mgft.comm.nccl import unknown_key_warning

    if not env:
        return Check("nccl env", PASS, "no NCCL variables set: NCCL's defaults")
    found: list[tuple[str, str]] = []
    for key in env:
        if key.startswith(("NCCL_", "TORCH_NCCL_")) and (w := unknown_key_warning(key)):
            found.append((WARN, w.removeprefix("--nccl ")))
    if (value := env.get("NCCL_SOCKET_IFNAME")) and not _ifname_matches(value, ifaces):
        names = ", ".join(i.name for i in ifaces) or "none"
        found.append((FAIL, f"NCCL_SOCKET_IFNAME={value} matches no interface here ({names})"))
    if value := env.get("NCCL_IB_HCA"):
        devices = {p.device for p in ports}
        wanted = {part.lstrip("=^").split(":")[0] for part in value.split(",") if part}
        if not value.startswith("^") and not any(
                d.startswith(w) for w in wanted for d in devices):
            found.append((FAIL, f"NCCL_IB_HCA={value} names no RDMA device here "
                                f"({', '.join(sorted(devices)) or 'none'})"))
    if env.get("NCCL_IB_DISABLE") == "1" and any(p.active for p in ports):
        found.append((WARN, "NCCL_IB_DISABLE=1 with active RDMA ports: TCP instead of RDMA"))
    for key in ("NCCL_P2P_DISABLE", "NCCL_SHM_DISABLE"):
        if env.get(key) == "1":
            found.append((WARN, f"{key}=1 forces a slower path (a workaround to remove)"))
    for key in ("NCCL_ALGO", "NCCL_PROTO"):
        if key in env:
            found.append((WARN, f"{key} is for debugging only (NCCL docs); it can hang or slow"))
    if env.get("NCCL_DEBUG", "").upper() in ("INFO", "TRACE"):
        found.append((WARN, f"NCCL_DEBUG={env['NCCL_DEBUG']} floods logs (fine with --debug-dist)"))
    if env.get("NCCL_NVLS_ENABLE") not in (None, "0"):
        found.append((WARN, "NCCL_NVLS_ENABLE turns NVLink multicast on; it can take a shared "
                            "host's GPUs down"))
    if not found:
        shown = ", ".join(f"{k}={v}" for k, v in env.items())
        return Check("nccl env", PASS, shown)
    return Check("nccl env", _worst([s for s, _ in found]), "; ".join(t for _, t in found))


def _ifname_matches(value: str, ifaces: list[netinfo.Interface]) -> bool:
    """NCCL_SOCKET_IFNAME: prefixes, `=` for exact names, `^` to exclude (never unmatched)."""
    if value.startswith("^"):
        return True
    for part in value.split(","):
        exact = part.startswith("=")
        name = part.removeprefix("=")
        if any(i.name == name if exact else i.name.startswith(name) for i in ifaces):
            return True
    return False


def check_interfaces(ifaces: list[netinfo.Interface], ports: list[netinfo.RdmaPort]) -> Check:
    usable = [i for i in ifaces if i.up and not i.loopback and i.ipv4]
    shown = "; ".join(
        f"{i.name} {i.ipv4}" + (f" {i.speed_mbps / 1000:g} Gb/s" if i.speed_mbps else "")
        + (f" mtu {i.mtu}" if i.mtu else "") for i in usable)
    rdma = "; ".join(f"{p.name} {p.link_layer or 'RDMA'}"
                     + (f" {p.rate_gbps:g} Gb/s" if p.rate_gbps else "")
                     + ("" if p.active else " DOWN") for p in ports)
    if not usable:
        return Check("network", WARN, "no interface with an IPv4 address but loopback: "
                     "multi-node jobs cannot rendezvous")
    return Check("network", PASS, shown + (f" | RDMA: {rdma}" if rdma else " | no RDMA ports"))


def check_rendezvous(host: str | None, port: int | None, deadline: float) -> Check:
    if not host:
        return Check("rendezvous", PASS, "not in a job (pass --rdzv HOST:PORT to test one)")
    start = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=1)
    # getaddrinfo has no timeout of its own; a dead DNS server blocks it for ~30 s.
    future = pool.submit(socket.getaddrinfo, host, port or 0, socket.AF_UNSPEC,
                         socket.SOCK_STREAM)
    try:
        addrs = future.result(timeout=deadline)
    except FutureTimeout:
        pool.shutdown(wait=False)
        return Check("rendezvous", FAIL, f"{host} did not resolve within {deadline:g} s")
    except OSError as err:
        pool.shutdown(wait=False)
        return Check("rendezvous", FAIL, f"{host} does not resolve ({err.strerror or err})")
    pool.shutdown(wait=False)
    address = addrs[0][4][0]
    if port is None:
        return Check("rendezvous", PASS, f"{host} -> {address} (no port to try)")
    left = max(0.1, deadline - (time.monotonic() - start))
    try:
        with socket.create_connection((address, port), timeout=left):
            pass
    except OSError as err:
        why = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        return Check("rendezvous", FAIL, f"{host}:{port} ({address}) not reachable: {why}")
    ms = (time.monotonic() - start) * 1000
    return Check("rendezvous", PASS, f"{host}:{port} -> {address}, open ({ms:.0f} ms)")


def shm_sizes(path: str = "/dev/shm") -> tuple[int | None, int | None]:
    try:
        st = os.statvfs(path)
    except OSError:
        return None, None
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
