"""Build /sys/class/{net,infiniband} trees on disk, as the kernel lays them out, so the
readers in mgft.hw.netinfo run on real files for hosts this CI machine is not."""

from __future__ import annotations

from pathlib import Path


def add_port(root: Path, device: str, port: int = 1, *, link_layer: str = "InfiniBand",
             active: bool = True, rate: str = "400 Gb/sec (4X NDR)", driver: str = "mlx5_core",
             gids: dict[int, tuple[str, str]] | None = None) -> None:
    dev = root / "sys/class/infiniband" / device
    drivers = root / "sys/bus/drivers" / driver
    drivers.mkdir(parents=True, exist_ok=True)
    (dev / "device").mkdir(parents=True, exist_ok=True)
    if not (dev / "device/driver").exists():
        (dev / "device/driver").symlink_to(drivers)
    p = dev / "ports" / str(port)
    p.mkdir(parents=True)
    (p / "link_layer").write_text(link_layer + "\n")
    (p / "state").write_text("4: ACTIVE\n" if active else "1: DOWN\n")
    (p / "rate").write_text(rate + "\n")
    for index, (kind, gid) in (gids or {}).items():
        (p / "gid_attrs/types").mkdir(parents=True, exist_ok=True)
        (p / "gids").mkdir(exist_ok=True)
        (p / "gid_attrs/types" / str(index)).write_text(kind + "\n")
        (p / "gids" / str(index)).write_text(gid + "\n")


def add_iface(root: Path, name: str, *, up: bool = True, loopback: bool = False,
              physical: bool = True, mtu: int = 1500, speed: int | None = 100000) -> None:
    d = root / "sys/class/net" / name
    d.mkdir(parents=True)
    flags = (0x1 if up else 0) | (0x8 if loopback else 0)
    (d / "flags").write_text(f"0x{flags:x}\n")
    (d / "operstate").write_text(("unknown" if loopback else "up" if up else "down") + "\n")
    (d / "mtu").write_text(f"{mtu}\n")
    if speed is not None:
        (d / "speed").write_text(f"{speed}\n")
    if physical:
        (d / "device").mkdir()


ROCE_GIDS = {
    0: ("IB/RoCE v1", "fe80:0000:0000:0000:0a00:27ff:fe00:0001"),
    1: ("RoCE v2", "fe80:0000:0000:0000:0a00:27ff:fe00:0001"),
    2: ("IB/RoCE v1", "0000:0000:0000:0000:0000:ffff:0a00:0005"),
    3: ("RoCE v2", "0000:0000:0000:0000:0000:ffff:0a00:0005"),
}
