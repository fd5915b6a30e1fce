"""NVML reading. No driver runs here: the real library is absent (checked for real), and the
mapping from NVML's answers to `Device` is checked against a stand-in pynvml module that
answers like a driver would for an NVSwitch GPU and a GPU split into MIG devices."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import pytest
from mgft.hw import nvml

GIB = 1 << 30


class NVMLError(Exception):
    pass


def fake_pynvml() -> types.ModuleType:
    nv = types.ModuleType("pynvml")
    nv.NVMLError = NVMLError
    nv.NVML_FEATURE_ENABLED = 1
    nv.NVML_NVLINK_MAX_LINKS = 18
    gpus = {0: {"mig": 1, "links": 0}, 1: {"mig": 0, "links": 18}}
    migs = {("g0", 0): "MIG-aaaa", ("g0", 1): "MIG-bbbb"}
    calls: list[str] = []

    def handle(i):
        return f"g{i}"

    def fails(*_):
        raise NVMLError("Not Supported")

    nv.nvmlInit = lambda: calls.append("init")
    nv.nvmlShutdown = lambda: calls.append("shutdown")
    nv.nvmlSystemGetDriverVersion = lambda: b"580.82.07"
    nv.nvmlSystemGetCudaDriverVersion = lambda: 13000
    nv.nvmlDeviceGetCount = lambda: 2
    nv.nvmlDeviceGetHandleByIndex = handle
    nv.nvmlDeviceGetUUID = lambda h: {"g0": "GPU-0000", "g1": "GPU-1111"}.get(h) or migs[h]
    nv.nvmlDeviceGetName = lambda h: "NVIDIA H200" if h in ("g0", "g1") else "1g.18gb"
    nv.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(
        total=(141 if h in ("g0", "g1") else 18) * GIB, used=GIB // 2)
    nv.nvmlDeviceGetUtilizationRates = lambda h: SimpleNamespace(gpu=7) if h == "g1" else fails()
    nv.nvmlDeviceGetMigMode = lambda h: (gpus[int(h[1])]["mig"], 0)
    nv.nvmlDeviceGetComputeRunningProcesses = lambda h: [1, 2] if h == "g1" else []
    nv.nvmlDeviceGetPciInfo = lambda h: SimpleNamespace(busId=f"00000000:{h[1]}8:00.0".encode())
    nv.nvmlDeviceGetMaxPcieLinkGeneration = lambda h: 5
    nv.nvmlDeviceGetMaxPcieLinkWidth = lambda h: 16

    def link_state(h, link):
        if link >= gpus[int(h[1])]["links"]:
            raise NVMLError("Invalid Argument")
        return 1

    nv.nvmlDeviceGetNvLinkState = link_state
    nv.nvmlDeviceGetNvLinkRemotePciInfo = lambda h, link: SimpleNamespace(
        busId=b"00000000:c0:00.0")
    nv.nvmlDeviceGetNvLinkRemoteDeviceType = lambda h, link: 2  # NVSwitch
    nv.nvmlDeviceGetNvLinkVersion = lambda h, link: 4
    nv.nvmlDeviceGetMaxMigDeviceCount = lambda h: 2
    nv.nvmlDeviceGetMigDeviceHandleByIndex = lambda h, i: (h, i)
    nv.calls = calls
    return nv


def test_inventory_maps_gpus_nvlink_and_mig(monkeypatch: pytest.MonkeyPatch) -> None:
    nv = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    inv = nvml.inventory()
    assert (inv.driver, inv.cuda_driver) == ("580.82.07", "13.0")
    assert [d.label for d in inv.devices] == ["0", "0:0", "0:1", "1"]
    g0, m0, m1, g1 = inv.devices
    assert g0.mig_mode and g0.nvlinks == 0 and g0.utilization is None
    assert (m0.uuid, m0.is_mig, m0.memory_total) == ("MIG-aaaa", True, 18 * GIB)
    assert m1.uuid == "MIG-bbbb" and m1.utilization is None
    assert (g1.nvlinks, g1.nvlink_version, g1.nvswitch) == (18, 4, True)
    assert g1.processes == 2 and g1.utilization == 7 and g1.bus_id == "0000:18:00.0"
    assert (g1.pcie_gen, g1.pcie_width) == (5, 16)
    assert nv.calls == ["init", "shutdown"], "NVML is shut down after every look"


def test_no_driver_here_is_nvml_unavailable() -> None:
    with pytest.raises(nvml.NvmlUnavailable, match="NVML"):
        nvml.inventory()


def test_no_nvidia_ml_py_is_nvml_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(nvml.NvmlUnavailable, match="nvidia-ml-py is not installed"):
        nvml.load()
