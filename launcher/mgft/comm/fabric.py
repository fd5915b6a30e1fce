"""Fabric presets for NCCL, and the detection that resolves `--fabric auto` inside the job.

A preset has fixed variables (rendered into the job, so they show in `mgft render`) and
variables only the node itself can know (which interface reaches the rendezvous host, which
RDMA ports are up, which GID is RoCE v2), filled in at start by `prepare_process`.
`auto` detects the fabric on the node at start, never on the submitting machine: a login
node or laptop has none of the job's network.

Variables the environment already holds are never replaced at start
(`mgft.contract.env.fill_unset`).
No preset touches NCCL_NVLS_ENABLE.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mgft.comm.variables import EnvVar, Setting
from mgft.contract.env import CommEnv, DistEnv, fill_unset, visible_devices
from mgft.hw import netinfo
from mgft.hw.nvml import Device, NvmlUnavailable, nvlink_gbs_per_link
from mgft.spec.job import Fabric

# PCIe payload bandwidth per lane and direction, GB/s, by generation (after encoding).
PCIE_GBS_PER_LANE = {3: 0.985, 4: 1.969, 5: 3.938, 6: 7.563}


@dataclass(frozen=True, slots=True)
class Facts:
    """What a node knows about its interconnect when the job starts."""

    nnodes: int = 1
    gpus: tuple[Device, ...] = ()  # the GPUs this process's job may use
    all_gpu_bus_ids: frozenset[str] = frozenset()  # every GPU on the node, visible or not
    gpu_error: str | None = None  # why there are no GPU facts (no NVML here)
    ports: tuple[netinfo.RdmaPort, ...] = ()
    interfaces: tuple[netinfo.Interface, ...] = ()
    route_iface: str | None = None  # the interface that reaches the rendezvous host

    def active(self, link_layer: str) -> list[netinfo.RdmaPort]:
        return [p for p in self.ports if p.active and not p.is_efa
                and p.link_layer == link_layer]

    @property
    def efa(self) -> list[netinfo.RdmaPort]:
        return [p for p in self.ports if p.active and p.is_efa]


@dataclass(frozen=True, slots=True)
class AtStart:
    """A variable only the node can fill in. `value` returns None when nothing fits, and
    NCCL's own choice then stands."""

    name: str
    how: str
    value: Callable[[Facts], str | None]


@dataclass(frozen=True, slots=True)
class Preset:
    summary: str
    static: tuple[EnvVar, ...] = ()
    at_start: tuple[AtStart, ...] = field(default=())


def _socket_ifname(f: Facts) -> str | None:
    return f"={f.route_iface}" if f.nnodes > 1 and f.route_iface else None


def _hca(link_layer: str) -> Callable[[Facts], str | None]:
    def value(f: Facts) -> str | None:
        ports = f.active(link_layer)
        return "=" + ",".join(p.name for p in ports) if ports else None
    return value


def _roce_gid(f: Facts) -> str | None:
    gids = {p.roce_v2_gid for p in f.active("Ethernet")}
    return str(gids.pop()) if len(gids) == 1 and None not in gids else None


SOCKET_IFNAME = AtStart(
    "NCCL_SOCKET_IFNAME", "the interface that routes to the rendezvous host (MASTER_ADDR), on "
    "multi-node jobs; NCCL's own pick can be a management or container bridge",
    _socket_ifname)

PRESETS: dict[Fabric, Preset] = {
    Fabric.AUTO: Preset(
        "detected on each node at start: nvlink or pcie on one node; efa, infiniband, roce "
        "or ethernet across nodes"),
    Fabric.NVLINK: Preset(
        "one node whose GPUs talk over NVLink / NVSwitch (HGX, DGX)",
        static=(EnvVar("NCCL_P2P_LEVEL", "NVL",
                       "peer-to-peer over NVLink only; a pair without NVLink goes through "
                       "host memory, not PCIe P2P across the CPU, which stalls under IOMMU/ACS"),)),
    Fabric.PCIE: Preset(
        "one node whose GPUs share only PCIe (L4, L40S, A10, RTX cards)",
        static=(EnvVar("NCCL_P2P_LEVEL", "PXB",
                       "peer-to-peer only through PCIe switches; through the CPU root complex it "
                       "is slower than shared memory on many hosts and hangs on some VMs"),)),
    Fabric.INFINIBAND: Preset(
        "nodes joined by InfiniBand (Mellanox/NVIDIA HCAs)",
        static=(EnvVar("NCCL_IB_DISABLE", "0", "use the InfiniBand verbs transport, not TCP"),
                EnvVar("NCCL_IB_TIMEOUT", "22",
                       "a queue pair waits ~17 s per retry before failing, riding out link "
                       "flaps and congestion on large fabrics")),
        at_start=(AtStart("NCCL_IB_HCA", "the node's active InfiniBand ports, so a down or "
                          "Ethernet port is never tried", _hca("InfiniBand")), SOCKET_IFNAME)),
    Fabric.ROCE: Preset(
        "nodes joined by RDMA over Converged Ethernet (RoCE v2)",
        static=(EnvVar("NCCL_IB_DISABLE", "0", "use RDMA verbs over Ethernet, not TCP"),
                EnvVar("NCCL_IB_ROCE_VERSION_NUM", "2",
                       "RoCE v2 is routed (UDP/IP); v1 stops at the subnet")),
        at_start=(AtStart("NCCL_IB_HCA", "the node's active RoCE ports", _hca("Ethernet")),
                  AtStart("NCCL_IB_GID_INDEX", "the GID index that holds the port's IPv4 "
                          "address as RoCE v2 (often 3); NCCL before 2.21 used 0, RoCE v1",
                          _roce_gid),
                  SOCKET_IFNAME)),
    Fabric.ETHERNET: Preset(
        "nodes joined by plain TCP/IP Ethernet, no RDMA",
        static=(EnvVar("NCCL_IB_DISABLE", "1", "no RDMA hardware: skip probing for it"),
                EnvVar("NCCL_SOCKET_NTHREADS", "4",
                       "4 threads x 4 sockets per peer fill a 25-100 GbE link; the default "
                       "single stream reaches a fraction of it"),
                EnvVar("NCCL_NSOCKS_PERTHREAD", "4", "see NCCL_SOCKET_NTHREADS")),
        at_start=(SOCKET_IFNAME,)),
    Fabric.EFA: Preset(
        "AWS Elastic Fabric Adapter (p4d, p5), through the aws-ofi-nccl plugin",
        static=(EnvVar("FI_PROVIDER", "efa", "libfabric uses the EFA provider, not TCP"),
                EnvVar("FI_EFA_USE_DEVICE_RDMA", "1",
                       "GPUDirect RDMA: NICs read and write GPU memory directly"),
                EnvVar("FI_EFA_FORK_SAFE", "1",
                       "DataLoader workers fork; older libfabric corrupts registered memory "
                       "without this")),
        at_start=(SOCKET_IFNAME,)),
}


def all_nvlinked(gpus: tuple[Device, ...], all_bus_ids: frozenset[str]) -> bool:
    """Every pair of these GPUs has NVLink: through an NVSwitch, or directly."""
    if len(gpus) < 2 or any(g.nvlinks == 0 for g in gpus):
        return False
    ours = {g.bus_id for g in gpus}
    # A far end that is no GPU of this node is a switch, even where NVML cannot say so (VMs).
    if all(g.nvswitch or set(g.nvlink_gpu_peers) - all_bus_ids for g in gpus):
        return True
    return all(ours - {g.bus_id} <= set(g.nvlink_gpu_peers) for g in gpus)


def choose(f: Facts) -> tuple[Fabric | None, str]:
    """The fabric `auto` stands for on this node; None leaves NCCL's defaults alone."""
    if f.nnodes > 1:
        if f.efa:
            return Fabric.EFA, f"EFA devices {', '.join(p.name for p in f.efa)}"
        if ib := f.active("InfiniBand"):
            return Fabric.INFINIBAND, f"active InfiniBand ports {', '.join(p.name for p in ib)}"
        if roce := f.active("Ethernet"):
            return Fabric.ROCE, f"active RoCE ports {', '.join(p.name for p in roce)}"
        return Fabric.ETHERNET, f"no active RDMA port; TCP over {f.route_iface or 'any'}"
    if f.gpu_error:
        return None, f"GPU topology unknown ({f.gpu_error}); NCCL's defaults"
    if len(f.gpus) < 2:
        return None, f"{len(f.gpus)} GPU on one node: nothing to tune"
    if all_nvlinked(f.gpus, f.all_gpu_bus_ids):
        links = min(g.nvlinks for g in f.gpus)
        return Fabric.NVLINK, f"{len(f.gpus)} GPUs, NVLink between every pair ({links} links each)"
    return Fabric.PCIE, f"{len(f.gpus)} GPUs without NVLink between every pair"


@dataclass(frozen=True, slots=True)
class Resolution:
    requested: Fabric
    fabric: Fabric | None
    reason: str
    variables: tuple[EnvVar, ...]

    def describe(self, applied: Mapping[str, str]) -> str:
        name = self.fabric.value if self.fabric else "nccl-defaults"
        head = f"fabric {self.requested.value}" + (
            f" -> {name}" if self.requested is Fabric.AUTO else "")
        kept = [v.name for v in self.variables if v.name not in applied]
        sets = ", ".join(f"{k}={v}" for k, v in applied.items()) or "nothing"
        tail = f"; kept the environment's {', '.join(kept)}" if kept else ""
        return f"{head} ({self.reason}); set {sets}{tail}"


def resolve(requested: Fabric, f: Facts) -> Resolution:
    if requested is Fabric.AUTO:
        fabric, reason = choose(f)
    else:
        fabric, reason = requested, "asked for with --fabric"
    if fabric is None:
        return Resolution(requested, None, reason, ())
    preset = PRESETS[fabric]
    found = [(a, a.value(f)) for a in preset.at_start]
    dynamic = [EnvVar(a.name, v, a.how) for a, v in found if v is not None]
    return Resolution(requested, fabric, reason, (*preset.static, *dynamic))


def gather(dist: DistEnv, root: str | Path = "/",
           env: Mapping[str, str] | None = None) -> Facts:
    """Look at this node: GPUs (NVML, within CUDA_VISIBLE_DEVICES), RDMA ports, interfaces."""
    from mgft.hw import gpus, nvml

    nnodes = max(1, dist.world_size // max(1, dist.local_world_size))
    try:
        inv = nvml.inventory()
        visible = tuple(gpus.visible_pool(inv, visible_devices(env)))
        bus_ids, error = frozenset(d.bus_id for d in inv.devices if not d.is_mig), None
    except (NvmlUnavailable, ValueError) as err:
        visible, bus_ids, error = (), frozenset(), str(err)
    ifaces = netinfo.interfaces(root)
    # A loopback MASTER_ADDR (one node, or a preview with no job) says nothing about routes.
    remote = nnodes > 1 and not dist.master_addr.startswith("127.") \
        and dist.master_addr != "localhost"
    route = netinfo.route_interface(dist.master_addr, dist.master_port, ifaces) \
        if remote else None
    return Facts(nnodes=nnodes, gpus=visible, all_gpu_bus_ids=bus_ids, gpu_error=error,
                 ports=tuple(netinfo.rdma_ports(root)), interfaces=tuple(ifaces),
                 route_iface=route)


def prepare_process(root: str | Path = "/") -> tuple[Resolution, dict[str, str]]:
    """At job start, before the process group exists: resolve the preset on this node and set
    what the environment does not already have. Returns the resolution and what was set."""
    comm, dist = CommEnv.from_env(), DistEnv.from_env()
    try:
        requested = Fabric(comm.fabric)
    except ValueError:
        requested = Fabric.AUTO
    resolution = resolve(requested, gather(dist, root))
    return resolution, fill_unset({v.name: v.value for v in resolution.variables})


def at_start_settings(fabric: Fabric) -> list[Setting]:
    """For `mgft nccl explain`: what the job fills in at start, and how."""
    if fabric is Fabric.AUTO:
        options = ", ".join(f.value for f in Fabric if f is not Fabric.AUTO)
        return [Setting(EnvVar("(preset)", "at start", PRESETS[fabric].summary),
                        f"auto: one of {options}")]
    return [Setting(EnvVar(a.name, "at start", a.how), f"--fabric {fabric.value}")
            for a in PRESETS[fabric].at_start]


def expected_busbw(fabric: Fabric | None, f: Facts) -> tuple[float, str] | None:
    """Nominal all-reduce bus bandwidth (GB/s) the hardware allows, and how it was derived.
    nccl-tests reach 75-85% of it on healthy NVLink and InfiniBand systems."""
    if f.nnodes == 1 or fabric in (None, Fabric.NVLINK, Fabric.PCIE):
        return _nvlink_gbs(f) if fabric is Fabric.NVLINK else _pcie_gbs(f)
    # Each GPU reaches its NIC over its own PCIe link: only NVLink inside the node can be
    # the tighter bound across nodes.
    intra = _nvlink_gbs(f) if all_nvlinked(f.gpus, f.all_gpu_bus_ids) else None
    ports = f.efa if fabric is Fabric.EFA else \
        f.active("InfiniBand" if fabric is Fabric.INFINIBAND else "Ethernet")
    if fabric is Fabric.ETHERNET:
        speeds = [i.speed_mbps / 1000 for i in f.interfaces if i.name == f.route_iface
                  and i.speed_mbps]
    else:
        speeds = [p.rate_gbps for p in ports if p.rate_gbps]
    if not speeds:
        return intra
    # Across nodes, a ring all-reduce's bus bandwidth is bounded by the node's NICs together.
    net = (sum(speeds) / 8, f"{len(speeds)} NIC(s), {sum(speeds):g} Gb/s per node")
    return min(net, intra) if intra else net


def _nvlink_gbs(f: Facts) -> tuple[float, str] | None:
    if not f.gpus or any(g.nvlinks == 0 for g in f.gpus):
        return None
    g = min(f.gpus, key=lambda d: d.nvlinks * nvlink_gbs_per_link(d))
    per_link = nvlink_gbs_per_link(g)
    return g.nvlinks * per_link, f"{g.nvlinks} NVLinks x {per_link:g} GB/s per GPU"


def _pcie_gbs(f: Facts) -> tuple[float, str] | None:
    known = [g for g in f.gpus if g.pcie_gen in PCIE_GBS_PER_LANE and g.pcie_width]
    if not known or len(known) != len(f.gpus):
        return None
    g = min(known, key=lambda d: PCIE_GBS_PER_LANE[d.pcie_gen or 0] * (d.pcie_width or 0))
    gbs = PCIE_GBS_PER_LANE[g.pcie_gen or 0] * (g.pcie_width or 0)
    return gbs, f"PCIe gen{g.pcie_gen} x{g.pcie_width} per GPU"
