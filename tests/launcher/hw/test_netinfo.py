from __future__ import annotations

from pathlib import Path

from mgft.hw import netinfo

from tests.launcher.sysfs import ROCE_GIDS, add_iface, add_port


def test_rdma_ports_read_state_rate_driver_and_the_roce_v2_gid(tmp_path: Path) -> None:
    add_port(tmp_path, "mlx5_0")
    add_port(tmp_path, "mlx5_1", active=False)
    add_port(tmp_path, "mlx5_2", link_layer="Ethernet", rate="200 Gb/sec (4X HDR)",
             gids=ROCE_GIDS)
    add_port(tmp_path, "rdmap0s6", link_layer="Unspecified", rate="100 Gb/sec", driver="efa")
    ports = {p.name: p for p in netinfo.rdma_ports(tmp_path)}
    assert set(ports) == {"mlx5_0:1", "mlx5_1:1", "mlx5_2:1", "rdmap0s6:1"}
    assert ports["mlx5_0:1"].active and ports["mlx5_0:1"].rate_gbps == 400
    assert ports["mlx5_0:1"].driver == "mlx5_core" and ports["mlx5_0:1"].roce_v2_gid is None
    assert not ports["mlx5_1:1"].active
    # Index 1 is RoCE v2 but link-local IPv6; index 3 is RoCE v2 with the IPv4 address.
    assert ports["mlx5_2:1"].roce_v2_gid == 3
    assert ports["rdmap0s6:1"].is_efa and not ports["mlx5_0:1"].is_efa


def test_no_rdma_here_is_an_empty_list(tmp_path: Path) -> None:
    assert netinfo.rdma_ports(tmp_path) == []


def test_interfaces_from_sysfs(tmp_path: Path) -> None:
    add_iface(tmp_path, "lo", loopback=True, physical=False, mtu=65536, speed=None)
    add_iface(tmp_path, "eth0", mtu=9000, speed=25000)
    add_iface(tmp_path, "docker0", up=False, physical=False, speed=-1)
    addrs = {"lo": "127.0.0.1", "eth0": "10.0.0.5"}
    found = {i.name: i for i in netinfo.interfaces(tmp_path, addr_of=addrs.get)}
    assert found["lo"].loopback and found["lo"].up and found["lo"].virtual
    assert found["eth0"] == netinfo.Interface("eth0", up=True, loopback=False, virtual=False,
                                              ipv4="10.0.0.5", mtu=9000, speed_mbps=25000)
    assert not found["docker0"].up and found["docker0"].speed_mbps is None


def test_this_machine_routes_its_own_address_through_its_own_interface() -> None:
    ifaces = netinfo.interfaces()
    own = next(i for i in ifaces if i.ipv4 and not i.loopback)
    assert netinfo.ipv4_of(own.name) == own.ipv4
    assert netinfo.route_interface(own.ipv4, 29500, ifaces) == own.name
    lo = next(i for i in ifaces if i.loopback)
    assert netinfo.route_interface("127.0.0.1", 29500, ifaces) == lo.name
    assert netinfo.ipv4_of("no-such-if0") is None
