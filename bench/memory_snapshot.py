"""The largest live GPU allocations at a process's peak, from torch's allocator history.

`bench/plan_accuracy.py --snapshot` puts bench/snapshot_hook/ on the trainer's PYTHONPATH.
Its sitecustomize starts `torch.cuda.memory._record_memory_history` when a trainer process
starts (before the model loads) and, when the trainer reads its peaks
(`mgft_train.memory.peaks`, after training and the evaluation pass), writes `summarize` of
the allocator's history to $MGFT_BENCH_SNAPSHOT_DIR/rank<N>.json. Only the benchmark does
this; the trainer knows nothing of it.

`summarize` replays the history's alloc/free events, finds the moment the live total was
largest and lists the allocations alive then, largest first, each with the top frames of
the Python stack that made it, and all of them summed by the place that made them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

TOP = 30
FRAMES = 6
SITE_FRAMES = 2
NO_FRAME = "(no Python frame: autograd's backward)"
# Frames that say nothing about which tensor this is.
NOISE = ("torch/nn/modules/module.py", "torch/utils/_contextlib.py", "torch/_tensor.py",
         "torch/autograd/__init__.py", "torch/autograd/graph.py", "<frozen ", "/functools.py",
         "memory_snapshot.py", "sitecustomize.py")
ALLOC, FREE = "alloc", ("free_requested", "free_completed")


def _frames(event: dict[str, Any]) -> list[str]:
    out = []
    for f in event.get("frames") or []:
        where = str(f.get("filename", ""))
        if any(n in where for n in NOISE):
            continue
        out.append(f"{where.rsplit('site-packages/', 1)[-1]}:{f.get('line')} {f.get('name')}")
        if len(out) == FRAMES:
            break
    return out


def summarize(snapshot: dict[str, Any], device: int = 0, top: int = TOP) -> dict[str, Any]:
    """{'peak_bytes', 'events', 'top': [{'bytes', 'frames'}...]} for one device's history.
    A block freed twice (free_requested, then free_completed) counts once."""
    traces = snapshot.get("device_traces") or []
    events = traces[device] if device < len(traces) else []
    live: dict[int, dict[str, Any]] = {}
    total = peak = peak_at = 0
    for i, e in enumerate(events):
        if e.get("action") == ALLOC:
            live[e["addr"]] = e
            total += e["size"]
            if total > peak:
                peak, peak_at = total, i
        elif e.get("action") in FREE and e["addr"] in live:
            total -= live.pop(e["addr"])["size"]
    live = {}
    for e in events[:peak_at + 1]:  # replay again up to the peak: what was alive there
        if e.get("action") == ALLOC:
            live[e["addr"]] = e
        elif e.get("action") in FREE:
            live.pop(e["addr"], None)
    largest = sorted(live.values(), key=lambda e: -e["size"])[:top]
    return {"peak_bytes": peak, "events": len(events), "live_at_peak": len(live),
            "top": [{"bytes": e["size"], "frames": _frames(e)} for e in largest],
            "by_site": by_site(live.values())}


def by_site(allocations: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every allocation alive at the peak, summed by where it was made (its first SITE_FRAMES
    frames), largest first: unlike `top`, the sites add up to the whole peak. Allocations
    with no Python frame were made by autograd's engine thread in a backward pass."""
    sites: dict[str, list[int]] = {}
    for e in allocations:
        site = " < ".join(_frames(e)[:SITE_FRAMES]) or NO_FRAME
        total = sites.setdefault(site, [0, 0])
        total[0] += e["size"]
        total[1] += 1
    return [{"site": site, "bytes": size, "count": count}
            for site, (size, count) in sorted(sites.items(), key=lambda kv: -kv[1][0])]
