"""All-reduce bus bandwidth, in the nccl-tests convention, and the run that measures it.

    algbw = bytes / time        busbw = algbw * 2(n-1)/n

busbw is what each GPU's links carried: a ring all-reduce moves 2(n-1)/n of the buffer through
every rank, so busbw is comparable across world sizes and with the links' nominal bandwidth.

This module is torch-free: it starts `python -m mgft.doctor.sweep` under torchrun (on the
GPUs `mgft.hw.gpus` chose, or on CPU with gloo) and reads the JSON the sweep writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GB = 1e9  # nccl-tests report GB/s in units of 10^9 bytes
GOOD_FRACTION = 0.7  # healthy NVLink / InfiniBand systems reach 75-85% of nominal
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
GPU_SIZES = "1M,16M,64M,256M,1G"
CPU_SIZES = "64K,1M,8M"


def bus_factor(ranks: int) -> float:
    return 2 * (ranks - 1) / ranks if ranks > 1 else 0.0


def busbw(nbytes: int, seconds: float, ranks: int) -> float:
    """GB/s each rank's links carried during an all-reduce of `nbytes` taking `seconds`."""
    return nbytes / seconds / GB * bus_factor(ranks)


def parse_sizes(text: str) -> list[int]:
    sizes = []
    for part in text.split(","):
        part = part.strip().upper().removesuffix("B").removesuffix("I")
        unit = part[-1] if part and part[-1] in UNITS else ""
        number = part[: len(part) - len(unit)]
        if not number.isdigit() or int(number) == 0:
            raise ValueError(f"{part!r} is not a size like 64K, 16M or 1G")
        sizes.append(int(number) * UNITS[unit])
    return sizes


def human(nbytes: int) -> str:
    for unit in ("G", "M", "K"):
        if nbytes >= UNITS[unit] and nbytes % UNITS[unit] == 0:
            return f"{nbytes // UNITS[unit]} {unit}iB"
    return f"{nbytes} B"


@dataclass(frozen=True, slots=True)
class Verdict:
    status: str  # pass, warn, or info where nothing is known to compare with
    text: str


def verdict(result: dict[str, Any]) -> Verdict:
    rows, expected = result["results"], result.get("expected")
    if not rows:
        return Verdict("warn", "no sizes measured")
    top = max(rows, key=lambda r: r["bytes"])
    if not expected:
        return Verdict("info", f"{top['busbw_gbs']:.1f} GB/s at {human(top['bytes'])}; no "
                       "nominal bandwidth known for this fabric to compare with")
    share = top["busbw_gbs"] / expected["gbs"]
    text = (f"{top['busbw_gbs']:.1f} GB/s at {human(top['bytes'])} = {share:.0%} of nominal "
            f"{expected['gbs']:.0f} GB/s ({expected['basis']})")
    if share >= GOOD_FRACTION:
        return Verdict("pass", text)
    return Verdict("warn", text + f"; below {GOOD_FRACTION:.0%}: check the fabric "
                   "(`mgft doctor`, NCCL_DEBUG=INFO)")


def print_result(result: dict[str, Any], stderr: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    res = result.get("fabric") or {}
    title = (f"all-reduce {result['dtype']}, {result['world_size']} ranks on "
             f"{result['nnodes']} node(s), {result['backend']}"
             + (f", fabric {res.get('fabric') or 'nccl-defaults'}" if res else ""))
    table = Table(title=title)
    for name in ("size", "time (us)", "algbw (GB/s)", "busbw (GB/s)"):
        table.add_column(name, justify="right")
    for r in result["results"]:
        table.add_row(human(r["bytes"]), f"{r['seconds'] * 1e6:.1f}", f"{r['algbw_gbs']:.2f}",
                      f"{r['busbw_gbs']:.2f}")
    console = Console(stderr=stderr, width=max(100, Console().width))
    console.print(table)
    v = verdict(result)
    console.print(Text(f"{v.status}: {v.text}",
                       style={"pass": "green", "warn": "yellow"}.get(v.status, "")))


def run_local(*, nproc: int, device: str, sizes: str, iters: int, warmup: int, fabric: str,
              visible: tuple[str, ...] | None, timeout: float = 540) -> dict[str, Any]:
    """Run the sweep on this machine under `torchrun --standalone`; return its JSON."""
    from mgft.contract.env import CommEnv, DeviceEnv
    from mgft.node.torchrun import torchrun_path

    env = dict(os.environ) | CommEnv(fabric=fabric).to_env()
    if visible is not None:
        env |= DeviceEnv(visible=visible).to_env()
    if device == "cpu":
        env["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory(prefix="mgft-bw-") as tmp:
        out = Path(tmp, "sweep.json")
        argv = [torchrun_path(), "--standalone", "--nnodes=1", f"--nproc-per-node={nproc}",
                "-m", "mgft.doctor.sweep", f"--device={device}", f"--sizes={sizes}",
                f"--iters={iters}", f"--warmup={warmup}", f"--out={out}", "--quiet"]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not out.is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise RuntimeError(f"the bandwidth sweep failed (exit {proc.returncode}):\n{tail}")
        return json.loads(out.read_text())
