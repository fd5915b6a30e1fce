"""Each doctor check on broken and healthy inputs (what a machine would hand it)."""

from __future__ import annotations

import resource
import socket
import time

import pytest
from mgft.doctor import checks as c
from mgft.hw import netinfo
from mgft.hw.nvml import Device, Inventory

GIB = 1 << 30
INV = Inventory(driver="580.82.07", cuda_driver="12.8", devices=())
ETH0 = netinfo.Interface("eth0", up=True, loopback=False, virtual=False, ipv4="10.0.0.5",
                         mtu=9000, speed_mbps=25000)
IB0 = netinfo.Interface("ib0", up=True, loopback=False, virtual=False, ipv4="10.1.0.5",
                        mtu=4092, speed_mbps=400000)
LO = netinfo.Interface("lo", up=True, loopback=True, virtual=True, ipv4="127.0.0.1",
                       mtu=65536, speed_mbps=None)
HCA = netinfo.RdmaPort("mlx5_0", 1, "InfiniBand", True, 400.0, "mlx5_core", None)


def h200(i: int, procs: int = 0) -> Device:
    return Device(index=i, uuid=f"GPU-{i}", name="NVIDIA H200", memory_total=141 * GIB,
                  memory_used=(40 if procs else 0) * GIB, utilization=90 if procs else 0,
                  processes=procs)


def test_driver() -> None:
    assert c.check_driver(INV, None, True).status == c.PASS
    missing = c.check_driver(None, "NVML: NVML Shared Library Not Found", expect_gpus=False)
    assert missing.status == c.WARN and "no NVIDIA driver" in missing.detail
    assert c.check_driver(None, "x", expect_gpus=True).status == c.FAIL


def test_torch_built_for_a_newer_cuda_than_the_driver_runs_fails() -> None:
    info = c.TorchInfo(torch="2.11.0+cu130", cuda="13.0", nccl="2.27.7", cuda_available=False)
    check = c.check_torch(info, INV, expect_gpus=True)
    assert check.status == c.FAIL and "this driver runs CUDA up to 12.8" in check.detail
    ok = c.TorchInfo(torch="2.11.0+cu128", cuda="12.8", nccl="2.26.2", cuda_available=True)
    assert c.check_torch(ok, INV, expect_gpus=True).status == c.PASS
    cpu = c.TorchInfo(torch="2.13.0+cpu")
    assert c.check_torch(cpu, INV, expect_gpus=True).status == c.FAIL
    assert c.check_torch(cpu, None, expect_gpus=False).status == c.PASS
    gone = c.TorchInfo(error="ModuleNotFoundError: No module named 'torch'")
    assert c.check_torch(gone, None, expect_gpus=False).status == c.WARN


def test_nccl_version() -> None:
    assert c.check_nccl_version(c.TorchInfo(torch="t", cuda="13.0", nccl="2.27.7")).detail == \
        "NCCL 2.27.7"
    assert c.check_nccl_version(c.TorchInfo(torch="t", cuda="13.0")).status == c.WARN


def test_gpus() -> None:
    none = c.check_gpus([], None, None, expect_gpus=False)
    assert none.status == c.WARN and "no GPUs visible" in none.detail
    info = c.TorchInfo(torch="t", cuda="13.0", cuda_available=True, device_count=2)
    two = c.check_gpus([h200(2), h200(3, procs=1)], info, "2,3", expect_gpus=True)
    assert two.status == c.PASS and "(CUDA_VISIBLE_DEVICES=2,3)" in two.detail
    assert "3 NVIDIA H200 141 GiB (1 process" in two.detail
    mismatch = c.check_gpus([h200(0)], info, None, expect_gpus=True)
    assert mismatch.status == c.FAIL and "torch sees 2" in mismatch.detail
    crowded = c.check_gpus([h200(0)], None, None, expect_gpus=True, nproc=4)
    assert crowded.status == c.FAIL and "4 processes" in crowded.detail


@pytest.mark.parametrize("total,gpus,status", [
    (64 << 20, 1, c.WARN),  # docker's default 64 MB
    (8 * GIB, 8, c.PASS),
    (7 * GIB, 8, c.WARN),
    (None, 1, c.WARN),
])
def test_shm(total: int | None, gpus: int, status: str) -> None:
    assert c.check_shm(total, total, gpus).status == status


def test_ulimits() -> None:
    inf = resource.RLIM_INFINITY
    assert c.check_ulimits((inf, inf), (1 << 20, 1 << 20), rdma=True).status == c.PASS
    low = c.check_ulimits((8 << 20, 8 << 20), (1024, 4096), rdma=True)
    assert low.status == c.WARN
    assert "memlock" in low.detail and "ulimit -n 4096" in low.detail
    assert c.check_ulimits((8 << 20, 8 << 20), (65536, 65536), rdma=False).status == c.PASS


def test_nccl_env_sanity() -> None:
    assert c.check_nccl_env({}, [ETH0], []).status == c.PASS
    good = c.check_nccl_env({"NCCL_SOCKET_IFNAME": "=eth0", "NCCL_IB_HCA": "=mlx5_0:1"},
                            [ETH0], [HCA])
    assert good.status == c.PASS and "NCCL_SOCKET_IFNAME==eth0" in good.detail
    bad = c.check_nccl_env({"NCCL_SOCKET_IFNAME": "eth9", "NCCL_IB_HCA": "mlx4"}, [ETH0], [HCA])
    assert bad.status == c.FAIL
    assert "NCCL_SOCKET_IFNAME=eth9 matches no interface here (eth0)" in bad.detail
    assert "NCCL_IB_HCA=mlx4 names no RDMA device here (mlx5_0)" in bad.detail
    assert c.check_nccl_env({"NCCL_SOCKET_IFNAME": "^docker,lo"}, [ETH0], []).status == c.PASS
    assert c.check_nccl_env({"NCCL_SOCKET_IFNAME": "ib"}, [ETH0, IB0], []).status == c.PASS
    warned = c.check_nccl_env({"NCCL_IB_DISABLE": "1", "NCCL_ALGO": "Ring",
                               "NCCL_SOCKET_IFACE": "eth0", "NCCL_NVLS_ENABLE": "1"},
                              [ETH0], [HCA])
    assert warned.status == c.WARN
    for needle in ("TCP instead of RDMA", "NCCL_ALGO is for debugging",
                   "NCCL_SOCKET_IFNAME?", "NVLink multicast on"):
        assert needle in warned.detail


def test_interfaces() -> None:
    assert c.check_interfaces([LO], []).status == c.WARN
    check = c.check_interfaces([LO, ETH0], [HCA])
    assert check.status == c.PASS
    assert check.detail == "eth0 10.0.0.5 25 Gb/s mtu 9000 | RDMA: mlx5_0:1 InfiniBand 400 Gb/s"


def test_rendezvous_against_a_real_listener_and_a_closed_port() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        ok = c.check_rendezvous("localhost", port, deadline=5)
        assert ok.status == c.PASS and "-> 127.0.0.1, open" in ok.detail
    closed = c.check_rendezvous("127.0.0.1", port, deadline=5)
    assert closed.status == c.FAIL and "not reachable" in closed.detail
    assert c.check_rendezvous(None, None, 5).status == c.PASS


def test_rendezvous_that_does_not_resolve_fails_within_the_deadline() -> None:
    start = time.monotonic()
    check = c.check_rendezvous("no-such-host.invalid", 29500, deadline=2)
    assert check.status == c.FAIL and "no-such-host.invalid" in check.detail
    assert time.monotonic() - start < 4


def test_rendezvous_to_an_unroutable_address_times_out_at_the_deadline() -> None:
    start = time.monotonic()
    check = c.check_rendezvous("192.0.2.123", 29500, deadline=1.5)  # TEST-NET-1: no host
    assert check.status == c.FAIL
    assert time.monotonic() - start < 4


def test_torch_probe_reports_this_machines_cpu_torch() -> None:
    info = c.torch_probe()
    assert info.error is None and info.torch and info.torch.startswith("2.")
    assert info.cuda is None and info.device_count == 0


LIGER = c.Module("liger_kernel", "0.8.5")
TRITON = c.Module("triton", "3.5.0")
NO_LIGER = c.Module("liger_kernel", None)
NO_TRITON = c.Module("triton", None)


@pytest.mark.parametrize(("liger", "triton", "gpu_run", "status", "says"), [
    (NO_LIGER, NO_TRITON, False, c.PASS, "not used"),
    (NO_LIGER, TRITON, True, c.WARN, "--kernels auto would use the plain path"),
    (LIGER, NO_TRITON, True, c.WARN, "triton is not"),
    (LIGER, TRITON, True, c.PASS, "liger-kernel 0.8.5, triton 3.5.0"),
])
def test_kernels_says_when_a_gpu_run_would_fall_back(liger: c.Module, triton: c.Module,
                                                     gpu_run: bool, status: str,
                                                     says: str) -> None:
    check = c.check_kernels(liger, triton, gpu_run)
    assert (check.name, check.status) == ("kernels", status) and says in check.detail
    if status == c.WARN:
        assert "pip install 'mgft[gpu]'" in check.detail


def test_find_module_looks_without_importing(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Liger and Triton import torch and CUDA: the doctor must only look them up."""
    (tmp_path / "boom_pkg").mkdir()
    (tmp_path / "boom_pkg" / "__init__.py").write_text("raise RuntimeError('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert c.find_module("boom_pkg", "boom-pkg") == c.Module("boom_pkg", "installed")
    assert c.find_module("no_such_module_here", "no-such-dist").version is None
    assert c.find_module("pytest", "pytest").version == pytest.__version__


def _optional_imports(path) -> set[str]:
    """Top-level modules a trainer file imports inside `try: ... except ImportError`."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError",
                                                               "ModuleNotFoundError")
                for h in node.handlers):
            for stmt in node.body:
                for sub in ast.walk(stmt):
                    if isinstance(sub, ast.ImportFrom) and sub.module:
                        found.add(sub.module.split(".")[0])
                    elif isinstance(sub, ast.Import):
                        found |= {a.name.split(".")[0] for a in sub.names}
    return found


def test_the_gpu_extra_brings_what_the_gpu_paths_import_quietly() -> None:
    """Every module kernels.py/attention.py fall back without (beyond torch itself) is in
    `mgft[gpu]`, the extra the kernels check tells users to install; nothing there compiles."""
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    root = Path(__file__).resolve().parents[3]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    gpu = {req.split(";")[0].split(">")[0].split("=")[0].strip().replace("-", "_")
           for req in extras["gpu"]}
    trainer = root / "trainer" / "mgft_train"
    wanted = (_optional_imports(trainer / "kernels.py")
              | _optional_imports(trainer / "attention.py")) - {"torch", "transformers"}
    assert wanted == {"liger_kernel"}
    assert wanted <= gpu
    assert "flash_attn" not in gpu  # an sdist only: it compiles against a CUDA toolkit
