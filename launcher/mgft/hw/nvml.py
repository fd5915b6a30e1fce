"""What NVML (nvidia-ml-py) says about this machine's GPUs: loaded only when asked.

The launcher never imports torch to look at GPUs: NVML answers without creating a CUDA
context, so looking does not take memory on, or wake, any GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

_REMOTE_SWITCH = 2  # nvmlDeviceGetNvLinkRemoteDeviceType: 0 GPU, 1 IBMNPU, 2 NVSwitch


class NvmlUnavailable(Exception):
    """No NVIDIA driver (or no nvidia-ml-py) here; the message says which."""


@dataclass(frozen=True, slots=True)
class Device:
    index: int  # as nvidia-smi numbers it (PCI bus order); a MIG device's is its parent's
    uuid: str  # GPU-... or MIG-...
    name: str
    memory_total: int  # bytes
    memory_used: int  # bytes
    utilization: int | None  # percent busy over the last sample; None for MIG devices
    processes: int  # compute processes NVML can see (none from other containers' PID spaces)
    bus_id: str = ""
    mig: int | None = None  # the MIG device's number within its parent GPU
    mig_mode: bool = False  # a GPU in MIG mode runs work only in its MIG devices
    nvlinks: int = 0  # active NVLinks
    nvlink_version: int | None = None
    nvlink_gpu_peers: tuple[str, ...] = ()  # bus ids of GPUs at the far end of its NVLinks
    nvswitch: bool = False  # some NVLink ends at an NVSwitch: every GPU on it is a peer
    pcie_gen: int | None = None
    pcie_width: int | None = None

    @property
    def is_mig(self) -> bool:
        return self.mig is not None

    @property
    def label(self) -> str:
        return f"{self.index}:{self.mig}" if self.is_mig else str(self.index)

    @property
    def memory_free(self) -> int:
        return self.memory_total - self.memory_used


@dataclass(frozen=True, slots=True)
class Inventory:
    driver: str
    cuda_driver: str  # the newest CUDA the driver runs, e.g. "13.0"
    devices: tuple[Device, ...]


def load() -> ModuleType:
    try:
        import pynvml
    except ImportError as err:
        raise NvmlUnavailable("nvidia-ml-py is not installed") from err
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        raise NvmlUnavailable(f"NVML: {err}") from err
    return pynvml


def inventory() -> Inventory:
    """Every GPU and MIG device on this machine (not only the visible ones)."""
    nv = load()
    try:
        cuda = nv.nvmlSystemGetCudaDriverVersion()
        devices: list[Device] = []
        for i in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(i)
            gpu = _device(nv, handle, i)
            devices.append(gpu)
            if gpu.mig_mode:
                devices += _mig_devices(nv, handle, i)
        return Inventory(driver=_text(nv.nvmlSystemGetDriverVersion()),
                         cuda_driver=f"{cuda // 1000}.{cuda % 1000 // 10}",
                         devices=tuple(devices))
    finally:
        nv.nvmlShutdown()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _try(fn: Any, *args: Any, default: Any = None) -> Any:
    import pynvml

    try:
        return fn(*args)
    except pynvml.NVMLError:
        return default


def _device(nv: ModuleType, handle: Any, index: int) -> Device:
    mem = nv.nvmlDeviceGetMemoryInfo(handle)
    util = _try(nv.nvmlDeviceGetUtilizationRates, handle)
    mig = _try(nv.nvmlDeviceGetMigMode, handle, default=(0, 0))
    links = _nvlinks(nv, handle)
    return Device(
        index=index, uuid=_text(nv.nvmlDeviceGetUUID(handle)),
        name=_text(nv.nvmlDeviceGetName(handle)),
        memory_total=int(mem.total), memory_used=int(mem.used),
        utilization=int(util.gpu) if util is not None else None,
        processes=len(_try(nv.nvmlDeviceGetComputeRunningProcesses, handle, default=[])),
        bus_id=_bus_id(nv.nvmlDeviceGetPciInfo(handle)),
        mig_mode=bool(mig[0]),
        nvlinks=len(links), nvlink_version=max((v for _, v, _ in links if v), default=None),
        nvlink_gpu_peers=tuple(sorted({peer for peer, _, switch in links if not switch})),
        nvswitch=any(switch for _, _, switch in links),
        pcie_gen=_try(nv.nvmlDeviceGetMaxPcieLinkGeneration, handle),
        pcie_width=_try(nv.nvmlDeviceGetMaxPcieLinkWidth, handle),
    )


def _bus_id(pci: Any) -> str:
    return _text(pci.busId).lower().removeprefix("0000")  # NVML pads the domain to 8 digits


def _nvlinks(nv: ModuleType, handle: Any) -> list[tuple[str, int | None, bool]]:
    """(far-end bus id, NVLink version, ends at an NVSwitch) for each active link."""
    links = []
    for link in range(getattr(nv, "NVML_NVLINK_MAX_LINKS", 18)):
        state = _try(nv.nvmlDeviceGetNvLinkState, handle, link)
        if state is None:
            break  # no NVLink at all, or past this GPU's last link
        if state != nv.NVML_FEATURE_ENABLED:
            continue
        remote = _try(nv.nvmlDeviceGetNvLinkRemotePciInfo, handle, link)
        kind = _try(getattr(nv, "nvmlDeviceGetNvLinkRemoteDeviceType", None) or (lambda *_: None),
                    handle, link)
        links.append((_bus_id(remote) if remote is not None else "",
                      _try(nv.nvmlDeviceGetNvLinkVersion, handle, link),
                      kind == _REMOTE_SWITCH))
    return links


def _mig_devices(nv: ModuleType, handle: Any, parent: int) -> list[Device]:
    found = []
    for i in range(_try(nv.nvmlDeviceGetMaxMigDeviceCount, handle, default=0)):
        mig = _try(nv.nvmlDeviceGetMigDeviceHandleByIndex, handle, i)
        if mig is None:
            continue
        mem = nv.nvmlDeviceGetMemoryInfo(mig)
        found.append(Device(
            index=parent, mig=i, uuid=_text(nv.nvmlDeviceGetUUID(mig)),
            name=_text(nv.nvmlDeviceGetName(mig)), memory_total=int(mem.total),
            memory_used=int(mem.used), utilization=None,
            processes=len(_try(nv.nvmlDeviceGetComputeRunningProcesses, mig, default=[]))))
    return found


# GB/s per NVLink and direction: 20 for NVLink 1 (P100), 25 for NVLink 2-4 (V100, A100,
# H100/H200), 50 for NVLink 5 (Blackwell). NVML's version numbers differ between driver
# generations (plain 1-5, or an enum where 4.0 is 6), so the generation comes from the name.
_NVLINK5_NAMES = ("B100", "B200", "B300", "GB200", "GB300")


def nvlink_gbs_per_link(device: Device) -> float:
    if any(n in device.name for n in _NVLINK5_NAMES):
        return 50.0
    return 20.0 if device.nvlink_version == 1 else 25.0
