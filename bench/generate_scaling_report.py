"""A table and a chart over repeated runs of bench/generate_scaling.py.

    python bench/generate_scaling_report.py [bench/results/generate-scaling-runs]

Each JSON in the folder is one run (1 GPU, then N). Prints, per run, both generation phases,
the speedup, and each phase's steady seconds per batch (the first batch of every rank left
out), so a run that fell short shows whether its later batches or its first one cost the time.
Writes the chart next to the folder (generate-scaling-runs.png).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from plotting import paired_bars, pyplot, save

DEFAULT = Path(__file__).resolve().parent / "results" / "generate-scaling-runs"


def steady_batch_s(run: dict[str, Any]) -> float:
    """Mean seconds per batch over every rank's batches after its first (NaN when no rank had
    a second batch)."""
    later = [s for batches in run["batch_s"].values() for s in batches[1:]]
    return statistics.mean(later) if later else float("nan")


def first_batch_s(run: dict[str, Any]) -> float:
    """The slowest rank's first batch."""
    return max(batches[0] for batches in run["batch_s"].values())


def rows(results: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for name, result in results:
        worlds = sorted(result["runs"], key=int)
        one, many = result["runs"][worlds[0]], result["runs"][worlds[-1]]
        out.append({"run": name, "batch_size": result["settings"]["batch_size"],
                    "prompts": result["settings"]["prompts"], "gpus": int(worlds[-1]),
                    "one_s": one["generate_s"], "many_s": many["generate_s"],
                    "speedup": one["generate_s"] / many["generate_s"],
                    "one_batch_s": steady_batch_s(one), "many_batch_s": steady_batch_s(many),
                    "many_first_s": first_batch_s(many), "target": result["target"]})
    return sorted(out, key=lambda r: (r["batch_size"], r["run"]))


def by_batch_size(table: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Per batch size: the runs' mean, lowest and highest speedup."""
    sizes: dict[int, list[float]] = {}
    for r in table:
        sizes.setdefault(r["batch_size"], []).append(r["speedup"])
    return {size: {"runs": len(s), "mean": statistics.mean(s), "low": min(s), "high": max(s)}
            for size, s in sizes.items()}


def load(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    results = [(p.stem, json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]
    if not results:
        raise SystemExit(f"{folder}: no run JSONs here; run bench/generate_scaling.py with "
                         f"--out {folder}/NAME.json first")
    return results


def chart(table: list[dict[str, Any]], path: Path) -> None:
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(12, 4.5))
    pos = range(len(table))
    labels = [r["run"] for r in table]
    left.bar(list(pos), [r["speedup"] for r in table],
             color=["tab:blue" if r["speedup"] >= r["target"] else "tab:orange" for r in table])
    left.axhline(table[0]["target"], color="black", linestyle="--",
                 label=f"target {table[0]['target']}x")
    left.axhline(table[0]["gpus"], color="tab:gray", linestyle=":", label="linear")
    for p, r in zip(pos, table, strict=True):
        left.annotate(f"{r['speedup']:.3f}x", (p, r["speedup"]), ha="center", va="bottom")
    left.set_xticks(list(pos), labels)
    left.set_ylim(0, table[0]["gpus"] * 1.2)
    left.set_ylabel(f"generation phase, 1 GPU / {table[0]['gpus']} GPUs")
    left.set_title("Speedup, each run")
    left.legend(loc="upper left", ncols=2)
    paired_bars(right, labels, [r["one_batch_s"] for r in table],
                [r["many_batch_s"] for r in table],
                ("1 GPU", f"{table[0]['gpus']} GPUs (mean over ranks)"),
                "seconds per batch after the first",
                "A later batch, alone and beside the other ranks")
    save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?", default=DEFAULT)
    opts = parser.parse_args()
    table = rows(load(opts.folder))
    print(f"{'run':>10} {'batch':>5} {'prompts':>7} {'1 GPU s':>8} {'N GPU s':>8} "
          f"{'speedup':>7} {'batch s 1':>9} {'batch s N':>9} {'first N':>7}")
    for r in table:
        print(f"{r['run']:>10} {r['batch_size']:>5} {r['prompts']:>7} {r['one_s']:>8.2f} "
              f"{r['many_s']:>8.2f} {r['speedup']:>6.3f}x {r['one_batch_s']:>9.3f} "
              f"{r['many_batch_s']:>9.3f} {r['many_first_s']:>7.2f}")
    print()
    for size, s in sorted(by_batch_size(table).items()):
        print(f"batch {size}: {s['runs']} runs, speedup mean {s['mean']:.2f}x "
              f"(lowest {s['low']:.2f}x, highest {s['high']:.2f}x)")
    png = opts.folder.with_suffix(".png")
    chart(table, png)
    print(f"\nwrote {png}")


if __name__ == "__main__":
    main()
