"""The network as this process sees it: IP interfaces and RDMA ports, read from /sys.

Used in the job at start (fabric auto-detection) and by `mgft doctor`. `root` points the
readers at another tree, which is how the tests build an InfiniBand or EFA host on disk.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_SIOCGIFADDR = 0x8915
_RATE = re.compile(r"^\s*([\d.]+)\s*Gb/sec")
# A RoCE v2 GID that carries an IPv4 address is an IPv4-mapped IPv6 address.
_IPV4_GID_PREFIX = "0000:0000:0000:0000:0000:ffff:"


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    up: bool
    loopback: bool
    virtual: bool  # no device behind it: bridges, veth pairs, docker0 (a pod's eth0 too)
    ipv4: str | None
    mtu: int | None
    speed_mbps: int | None  # None where the kernel does not know (virtual links)


@dataclass(frozen=True, slots=True)
class RdmaPort:
    device: str  # mlx5_0, rdmap0s6 (EFA), ...
    port: int
    link_layer: str  # "InfiniBand" or "Ethernet" (RoCE); EFA reports "Unspecified"
    active: bool
    rate_gbps: float | None  # per direction, as the port trained
    driver: str  # mlx5_core, efa, ...
    roce_v2_gid: int | None  # index of a RoCE v2 GID that holds an IPv4 address

    @property
    def name(self) -> str:
        return f"{self.device}:{self.port}"

    @property
    def is_efa(self) -> bool:
        return self.driver == "efa" or self.device.startswith("efa")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:  # missing, or EINVAL (speed of a virtual or down link)
        return None


def _int(text: str | None, base: int = 10) -> int | None:
    try:
        return int(text, base) if text is not None else None
    except ValueError:
        return None


def ipv4_of(name: str) -> str | None:
    """The interface's IPv4 address (SIOCGIFADDR); None if it has none."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR,
                                 struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def interfaces(root: str | Path = "/",
               addr_of: Callable[[str], str | None] = ipv4_of) -> list[Interface]:
    base = Path(root, "sys/class/net")
    found = []
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        flags = _int(_read(path / "flags"), 16) or 0
        speed = _int(_read(path / "speed"))
        found.append(Interface(
            name=path.name,
            up=bool(flags & _IFF_UP) and _read(path / "operstate") != "down",
            loopback=bool(flags & _IFF_LOOPBACK),
            virtual=not (path / "device").exists(),
            ipv4=addr_of(path.name),
            mtu=_int(_read(path / "mtu")),
            speed_mbps=speed if speed and speed > 0 else None,
        ))
    return found


def rdma_ports(root: str | Path = "/") -> list[RdmaPort]:
    base = Path(root, "sys/class/infiniband")
    found = []
    for dev in sorted(base.iterdir()) if base.is_dir() else []:
        driver_link = dev / "device" / "driver"
        driver = driver_link.resolve().name if driver_link.exists() else ""
        ports = dev / "ports"
        for port in sorted(ports.iterdir(), key=lambda p: _int(p.name) or 0) \
                if ports.is_dir() else []:
            rate = _RATE.match(_read(port / "rate") or "")
            found.append(RdmaPort(
                device=dev.name,
                port=_int(port.name) or 0,
                link_layer=_read(port / "link_layer") or "",
                active="ACTIVE" in (_read(port / "state") or ""),
                rate_gbps=float(rate.group(1)) if rate else None,
                driver=driver,
                roce_v2_gid=_roce_v2_gid(port),
            ))
    return found


def _roce_v2_gid(port: Path) -> int | None:
    types = port / "gid_attrs" / "types"
    if not types.is_dir():
        return None
    for entry in sorted(types.iterdir(), key=lambda p: _int(p.name) or 0):
        gid = _read(port / "gids" / entry.name) or ""
        if _read(entry) == "RoCE v2" and gid.lower().startswith(_IPV4_GID_PREFIX):
            return _int(entry.name)
    return None


def route_interface(host: str, port: int, ifaces: list[Interface]) -> str | None:
    """The interface this machine would use to reach `host` (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((host, port or 9))
            local = sock.getsockname()[0]
    except OSError:
        return None
    return next((i.name for i in ifaces if i.ipv4 == local), None)
