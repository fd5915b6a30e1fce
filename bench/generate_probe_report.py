"""Tables and a chart from bench/results/generate-probe.json (bench/generate_probe.sh).

    python bench/generate_probe_report.py [bench/results/generate-probe.json]

Prints how much slower a decode batch gets beside 3 other processes, and what each batch size
buys; writes the chart next to the JSON (generate-probe.png).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from plotting import paired_bars, pyplot, save

DEFAULT = Path(__file__).resolve().parent / "results" / "generate-probe.json"


def contention(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per call and batch size: one process alone against 4 at once (their mean and slowest
    steady batch)."""
    alone = {(g["call"], g["batch_size"]): g for g in groups
             if g["processes"] == 1 and g["variant"].startswith("alone")
             and "taskset" not in g["variant"]}
    rows = []
    for g in groups:
        solo = alone.get((g["call"], g["batch_size"]))
        if g["processes"] == 1 or solo is None or "liger" in g["variant"]:
            continue
        base = solo["steady_batch_s"][0]
        mean = statistics.mean(g["steady_batch_s"])
        rows.append({"call": g["call"], "batch_size": g["batch_size"],
                     "omp_num_threads": g["omp_num_threads"], "alone_s": base,
                     "together_s": mean, "slowest_s": max(g["steady_batch_s"]),
                     "slower": mean / base - 1})
    return rows


def by_batch_size(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for g in groups:
        if g["variant"] != f"batch {g['batch_size']}":
            continue
        seconds = g["steady_batch_s"][0]
        rows.append({"batch_size": g["batch_size"], "batch_s": seconds,
                     "prompts_per_s": g["batch_size"] / seconds,
                     "peak_gib": g["runs"][0].get("peak_gib")})
    return sorted(rows, key=lambda r: r["batch_size"])


def chart(slowdown: list[dict[str, Any]], sizes: list[dict[str, Any]], path: Path) -> None:
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(12, 4.5))
    x = [r["batch_size"] for r in sizes]
    (rate,) = left.plot(x, [r["prompts_per_s"] for r in sizes], "o-", label="prompts/s")
    left.set_xscale("log", base=2)
    left.set_xticks(x, [str(v) for v in x])
    left.set_xlabel("batch size")
    left.set_ylabel("prompts/s (128 new tokens each)")
    twin = left.twinx()
    (cost,) = twin.plot(x, [r["batch_s"] for r in sizes], "s--", color="tab:gray",
                        label="seconds per batch")
    twin.set_ylabel("seconds per batch")
    left.legend(handles=[rate, cost], loc="upper left")
    left.set_title("One H200, llama-3.2-1b: throughput by batch size")
    labels = [f"call {r['call']}, batch {r['batch_size']}"
              + ("" if r["omp_num_threads"] else "\nOMP threads unset") for r in slowdown]
    tops = paired_bars(right, labels, [r["alone_s"] for r in slowdown],
                       [r["together_s"] for r in slowdown], ("1 process", "4 at once (mean)"),
                       "seconds per batch (steady)",
                       "4xH200 VM: a batch beside 3 other processes", legend="lower right")
    for x, r in zip(tops, slowdown, strict=True):
        right.annotate(f"+{r['slower']:.1%}", (x, r["together_s"]), ha="center", va="bottom")
    save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="?", default=DEFAULT)
    opts = parser.parse_args()
    groups = json.loads(opts.results.read_text())["groups"]
    slowdown, sizes = contention(groups), by_batch_size(groups)
    print(f"{'call':>4} {'batch':>5} {'alone s':>8} {'4 at once s':>11} {'slowest s':>9} "
          f"{'slower':>7}")
    for r in slowdown:
        print(f"{r['call']:>4} {r['batch_size']:>5} {r['alone_s']:>8.3f} {r['together_s']:>11.3f}"
              f" {r['slowest_s']:>9.3f} {r['slower']:>7.1%}")
    print(f"\n{'batch':>5} {'s/batch':>8} {'prompts/s':>9} {'peak GiB':>8}")
    for r in sizes:
        print(f"{r['batch_size']:>5} {r['batch_s']:>8.3f} {r['prompts_per_s']:>9.0f} "
              f"{r['peak_gib']:>8.1f}")
    png = opts.results.with_suffix(".png")
    chart(slowdown, sizes, png)
    print(f"\nwrote {png}")


if __name__ == "__main__":
    main()
