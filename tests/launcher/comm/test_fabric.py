"""`--fabric auto` resolution on hosts built on disk, and the at-start environment rules."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from mgft.comm import fabric
from mgft.comm.fabric import Facts, all_nvlinked, choose, expected_busbw, resolve
from mgft.contract.env import fill_unset
from mgft.hw import netinfo
from mgft.hw.nvml import Device
from mgft.spec.job import Fabric

from tests.launcher.sysfs import ROCE_GIDS, add_iface, add_port

GIB = 1 << 30
ETH0 = netinfo.Interface("eth0", up=True, loopback=False, virtual=False, ipv4="10.0.0.5",
                         mtu=9000, speed_mbps=100000)


def gpu(i: int, *, links: int = 0, peers: tuple[str, ...] = (), switch: bool = False,
        gen: int | None = 5, width: int | None = 16) -> Device:
    return Device(index=i, uuid=f"GPU-{i}", name="H200", memory_total=141 * GIB,
                  memory_used=0, utilization=0, processes=0, bus_id=f"0000:{i + 0x10:02x}:00.0",
                  nvlinks=links, nvlink_version=4 if links else None, nvlink_gpu_peers=peers,
                  nvswitch=switch, pcie_gen=gen, pcie_width=width)


def bus(i: int) -> str:
    return f"0000:{i + 0x10:02x}:00.0"


def node(*gpus: Device, nnodes: int = 1, **kw) -> Facts:
    return Facts(nnodes=nnodes, gpus=gpus, all_gpu_bus_ids=frozenset(g.bus_id for g in gpus),
                 **kw)


HGX4 = tuple(gpu(i, links=18, switch=True) for i in range(4))


def ports(tmp_path: Path) -> tuple[netinfo.RdmaPort, ...]:
    return tuple(netinfo.rdma_ports(tmp_path))


def test_one_node_with_nvswitch_is_nvlink() -> None:
    chosen, reason = choose(node(*HGX4))
    assert chosen is Fabric.NVLINK and "18 links each" in reason


def test_nvswitch_not_reported_by_nvml_is_still_recognised() -> None:
    # In VMs NVML may not say the far end is a switch; a far end that is no GPU is one.
    gpus = tuple(gpu(i, links=18, peers=("0000:c0:00.0",)) for i in range(4))
    assert all_nvlinked(gpus, frozenset(g.bus_id for g in gpus))


def test_direct_nvlink_needs_every_pair() -> None:
    full = tuple(gpu(i, links=6, peers=tuple(bus(j) for j in range(4) if j != i))
                 for i in range(4))
    assert choose(node(*full))[0] is Fabric.NVLINK
    # NVLink bridges pair 0-1 and 2-3 only: 0 and 2 talk over PCIe.
    pairs = (gpu(0, links=4, peers=(bus(1),)), gpu(1, links=4, peers=(bus(0),)),
             gpu(2, links=4, peers=(bus(3),)), gpu(3, links=4, peers=(bus(2),)))
    assert choose(node(*pairs))[0] is Fabric.PCIE


def test_pcie_only_and_nothing_to_tune_cases() -> None:
    assert choose(node(gpu(0), gpu(1)))[0] is Fabric.PCIE
    assert choose(node(gpu(0))) == (None, "1 GPU on one node: nothing to tune")
    unknown, reason = choose(Facts(gpu_error="NVML: Shared Library Not Found"))
    assert unknown is None and "NVML" in reason


def test_multi_node_infiniband_uses_only_active_ib_ports(tmp_path: Path) -> None:
    add_port(tmp_path, "mlx5_0")
    add_port(tmp_path, "mlx5_1")
    add_port(tmp_path, "mlx5_2", active=False)
    add_port(tmp_path, "mlx5_3", link_layer="Ethernet", gids=ROCE_GIDS)  # storage NIC
    facts = node(*HGX4, nnodes=2, ports=ports(tmp_path), interfaces=(ETH0,), route_iface="eth0")
    res = resolve(Fabric.AUTO, facts)
    assert res.fabric is Fabric.INFINIBAND
    env = {v.name: v.value for v in res.variables}
    assert env["NCCL_IB_HCA"] == "=mlx5_0:1,mlx5_1:1"
    assert env["NCCL_SOCKET_IFNAME"] == "=eth0" and env["NCCL_IB_DISABLE"] == "0"
    assert "NCCL_NVLS_ENABLE" not in env


def test_multi_node_roce_finds_the_v2_gid(tmp_path: Path) -> None:
    add_port(tmp_path, "mlx5_0", link_layer="Ethernet", gids=ROCE_GIDS)
    add_port(tmp_path, "mlx5_1", link_layer="Ethernet", gids=ROCE_GIDS)
    res = resolve(Fabric.AUTO, node(*HGX4, nnodes=4, ports=ports(tmp_path)))
    env = {v.name: v.value for v in res.variables}
    assert res.fabric is Fabric.ROCE
    assert env["NCCL_IB_GID_INDEX"] == "3" and env["NCCL_IB_HCA"] == "=mlx5_0:1,mlx5_1:1"
    assert "NCCL_SOCKET_IFNAME" not in env, "no route known: NCCL picks the interface"


def test_multi_node_efa_and_plain_ethernet(tmp_path: Path) -> None:
    add_port(tmp_path, "rdmap16s27", link_layer="Unspecified", rate="100 Gb/sec", driver="efa")
    efa = resolve(Fabric.AUTO, node(*HGX4, nnodes=2, ports=ports(tmp_path)))
    assert efa.fabric is Fabric.EFA
    assert {"FI_PROVIDER", "FI_EFA_USE_DEVICE_RDMA"} <= {v.name for v in efa.variables}
    tcp = resolve(Fabric.AUTO, node(*HGX4, nnodes=2, interfaces=(ETH0,), route_iface="eth0"))
    env = {v.name: v.value for v in tcp.variables}
    assert tcp.fabric is Fabric.ETHERNET and env["NCCL_IB_DISABLE"] == "1"
    assert env["NCCL_SOCKET_IFNAME"] == "=eth0"


def test_an_explicit_fabric_is_not_second_guessed() -> None:
    res = resolve(Fabric.PCIE, node(*HGX4))
    assert res.fabric is Fabric.PCIE and res.reason == "asked for with --fabric"


def test_fill_unset_keeps_what_the_environment_has() -> None:
    env = {"NCCL_IB_HCA": "=mlx5_4", "NCCL_NVLS_ENABLE": "0"}
    applied = fill_unset({"NCCL_IB_HCA": "=mlx5_0:1", "NCCL_IB_DISABLE": "0"}, env)
    assert applied == {"NCCL_IB_DISABLE": "0"}
    assert env == {"NCCL_IB_HCA": "=mlx5_4", "NCCL_NVLS_ENABLE": "0", "NCCL_IB_DISABLE": "0"}


def test_prepare_process_in_a_job_on_this_machine(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    """A 2-node ethernet job's process, on this CI machine's real network stack."""
    own = next(i for i in netinfo.interfaces() if i.ipv4 and not i.loopback)
    for key, value in {"MGFT_FABRIC": "ethernet", "RANK": "8", "LOCAL_RANK": "0",
                       "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8", "MASTER_ADDR": own.ipv4,
                       "MASTER_PORT": "29500", "NCCL_SOCKET_NTHREADS": "2",
                       "NCCL_NVLS_ENABLE": "0"}.items():
        monkeypatch.setenv(key, value)
    for key in ("NCCL_SOCKET_IFNAME", "NCCL_IB_DISABLE", "NCCL_NSOCKS_PERTHREAD"):
        monkeypatch.delenv(key, raising=False)
    import os

    resolution, applied = fabric.prepare_process()
    assert resolution.fabric is Fabric.ETHERNET
    assert applied["NCCL_SOCKET_IFNAME"] == f"={own.name}"
    assert "NCCL_SOCKET_NTHREADS" not in applied, "the environment's value stays"
    assert os.environ["NCCL_SOCKET_NTHREADS"] == "2" and os.environ["NCCL_NVLS_ENABLE"] == "0"
    assert os.environ["NCCL_IB_DISABLE"] == "1"
    text = resolution.describe(applied)
    assert text.startswith("fabric ethernet (asked for with --fabric); set ")
    assert "kept the environment's NCCL_SOCKET_NTHREADS" in text


def test_expected_bus_bandwidth_from_the_links() -> None:
    gbs, basis = expected_busbw(Fabric.NVLINK, node(*HGX4))
    assert gbs == 450 and basis == "18 NVLinks x 25 GB/s per GPU"
    blackwell = tuple(replace(g, name="NVIDIA B200") for g in HGX4)
    assert expected_busbw(Fabric.NVLINK, node(*blackwell))[0] == 900
    gbs, basis = expected_busbw(Fabric.PCIE, node(gpu(0), gpu(1, gen=4)))
    assert gbs == pytest.approx(31.5, abs=0.1) and basis == "PCIe gen4 x16 per GPU"
    assert expected_busbw(Fabric.PCIE, node(gpu(0, gen=None), gpu(1))) is None


def test_expected_across_nodes_is_bounded_by_the_nics(tmp_path: Path) -> None:
    for i in range(8):
        add_port(tmp_path, f"mlx5_{i}")
    facts = node(*HGX4, nnodes=2, ports=ports(tmp_path))
    assert expected_busbw(Fabric.INFINIBAND, facts) == (400.0, "8 NIC(s), 3200 Gb/s per node")
    one = replace(facts, ports=facts.ports[:1])
    assert expected_busbw(Fabric.INFINIBAND, one) == (50.0, "1 NIC(s), 400 Gb/s per node")


def test_gather_reads_a_host_built_on_disk(tmp_path: Path) -> None:
    from mgft.contract.env import DistEnv

    add_port(tmp_path, "mlx5_0")
    add_iface(tmp_path, "ib0")
    facts = fabric.gather(DistEnv(world_size=16, local_world_size=8, master_addr="127.0.0.1"),
                          root=tmp_path)
    assert facts.nnodes == 2 and [p.name for p in facts.ports] == ["mlx5_0:1"]
    assert [i.name for i in facts.interfaces] == ["ib0"]
    assert facts.route_iface is None  # a loopback MASTER_ADDR says nothing about routes
    assert facts.gpu_error and not facts.gpus  # no NVML on this CI machine
