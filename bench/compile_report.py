"""Eager against compiled blocks, run by run: a table, JSON and a chart from the trainer's
metrics.json files (bench/issue19_h200.sh parts 9-12 write them).

    python bench/compile_report.py --out bench/results/perf-compile-blocks \\
        --pair "LoRA" compile-flag/lora-none compile-flag/lora-blocks ...

Each --pair names a label and two metrics files (without .metrics.json) under --out: the
run as shipped, then the same run with compiled blocks, taken on the same machine. The
speed is the median step's tokens/s (robust to the stalls of a shared host); the compile
cost is how much longer the first two steps took than two steady steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mgft_train.rates import median_tokens_per_s  # the trainer's own rule  # noqa: E402
from plotting import paired_bars, pyplot, save  # noqa: E402


def run_figures(metrics: dict[str, Any]) -> dict[str, float]:
    steps, tokens = metrics["step_s"], metrics["step_tokens"]
    steady = statistics.median(steps[2:])
    return {"tokens_per_s_median_step": median_tokens_per_s(steps, tokens),
            "peak_gib": metrics["peak_memory_bytes"] / 2**30,
            "first_two_steps_extra_s": max(0.0, steps[0] + steps[1] - 2 * steady),
            "last_loss": metrics["last_loss"]}


def compare(label: str, eager: dict[str, Any], compiled: dict[str, Any]) -> dict[str, Any]:
    a, b = run_figures(eager), run_figures(compiled)
    return {"label": label, "eager": a, "compiled": b,
            "speedup": b["tokens_per_s_median_step"] / a["tokens_per_s_median_step"],
            "compile_s": b["first_two_steps_extra_s"] - a["first_two_steps_extra_s"],
            "loss_gap": abs(b["last_loss"] - a["last_loss"]) / a["last_loss"]}


def table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| run | eager tok/s | compiled tok/s | speed-up | peak GiB (eager → compiled) "
             "| compile s | loss gap |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        e, c = r["eager"], r["compiled"]
        lines.append(f"| {r['label']} | {e['tokens_per_s_median_step']:,.0f} | "
                     f"{c['tokens_per_s_median_step']:,.0f} | {r['speedup']:.2f}× | "
                     f"{e['peak_gib']:.1f} → {c['peak_gib']:.1f} | {r['compile_s']:.0f} | "
                     f"{r['loss_gap']:.2%} |")
    return "\n".join(lines) + "\n"


def chart(rows: Sequence[dict[str, Any]], path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(2.2 + 1.6 * len(rows), 4))
    compiled_x = paired_bars(
        ax, [r["label"] for r in rows],
        [r["eager"]["tokens_per_s_median_step"] for r in rows],
        [r["compiled"]["tokens_per_s_median_step"] for r in rows],
        ("as shipped", "--compile blocks"), "tokens/s (median step)",
        "Compiled transformer blocks, same machine", legend="upper center")
    ax.legend(loc="upper center", ncol=2)  # one row, above the bars' labels
    for x, r in zip(compiled_x, rows, strict=True):
        ax.annotate(f"{r['speedup']:.2f}×\n{r['compiled']['peak_gib']:.1f} GiB",
                    (x, r["compiled"]["tokens_per_s_median_step"]), ha="center",
                    va="bottom", fontsize=8)
    save(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pair", nargs=3, action="append", required=True,
                        metavar=("LABEL", "EAGER", "COMPILED"))
    args = parser.parse_args(argv)

    def load(name: str) -> dict[str, Any]:
        return json.loads((args.out / f"{name}.metrics.json").read_text())

    rows = [compare(label, load(eager), load(done)) for label, eager, done in args.pair]
    (args.out / "compile.json").write_text(json.dumps(rows, indent=1) + "\n")
    (args.out / "compile.md").write_text(table(rows))
    chart(rows, args.out / "compile.png")
    print(table(rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
