"""bench/perf.py's report: issue 7's targets judged on the runs, the markdown table, the
progress line, and the chart (tok/s/GPU of mgft against the recipe per config, with the
targets; loss against tokens of both, the correctness guard)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perf_runs import BATCH_TOLERANCE, LOSS_TOLERANCE, loss_gap
from plotting import pyplot, save

TARGET_ARCH = "llama-3-8b"


@dataclass(frozen=True)
class Target:
    """`run`'s real tokens/s/GPU, divided by `versus`'s when given, must reach `threshold`."""

    label: str
    run: str
    threshold: float
    versus: str | None = None


# Issue 7, on 4xH200 with the Llama-3-8B architecture.
TARGETS = (
    Target("8B LoRA DDP x4 >= 8,600 tok/s/GPU", "mgft-lora-ddp-4g", 8600),
    Target("8B LoRA DDP x4 >= 2x the recipe", "mgft-lora-ddp-4g", 2.0, "base-lora-ddp-4g"),
    Target("8B LoRA ZeRO-2 x4 >= 8,600 tok/s/GPU", "mgft-lora-zero2-4g", 8600),
    Target("8B LoRA ZeRO-2 x4 >= 2x the recipe", "mgft-lora-zero2-4g", 2.0,
           "base-lora-zero2-4g"),
    Target("8B LoRA ZeRO-3 x4 >= 0.8x mgft DDP", "mgft-lora-zero3-4g", 0.8, "mgft-lora-ddp-4g"),
    Target("8B LoRA FSDP x4 >= 0.8x mgft DDP", "mgft-lora-fsdp-4g", 0.8, "mgft-lora-ddp-4g"),
    Target("8B full FSDP x4 >= 5,400 tok/s/GPU", "mgft-full-fsdp-4g", 5400),
    Target("8B full FSDP x4 >= 2x the recipe", "mgft-full-fsdp-4g", 2.0, "base-full-fsdp-4g"),
    Target("LoRA DDP x4 per GPU >= 95% of x1", "mgft-lora-ddp-4g", 0.95, "mgft-lora-ddp-1g"),
)


def _ok(runs: dict[str, dict[str, Any]], name: str) -> dict[str, Any] | None:
    r = runs.get(name)
    return r if r and r.get("status") == "ok" and r.get("tokens_per_s_per_gpu") else None


def base_of(entry: dict[str, Any]) -> str:
    """The recipe run an mgft run is compared with: same tuning, strategy and GPUs."""
    return f"base-{entry['tuning']}-{entry['strategy']}-{entry['gpus']}g"


def ratio(runs: dict[str, dict[str, Any]], entry: dict[str, Any]) -> float | None:
    base = _ok(runs, base_of(entry))
    if entry["impl"] != "mgft" or not base or not _ok(runs, entry["name"]):
        return None
    return entry["tokens_per_s_per_gpu"] / base["tokens_per_s_per_gpu"]


def guard(runs: dict[str, dict[str, Any]], entry: dict[str, Any]) -> dict[str, Any] | None:
    """The correctness guard for an mgft run: its loss-vs-tokens curve against the recipe's,
    and the two sides' tokens per optimizer step."""
    base = _ok(runs, base_of(entry))
    if entry["impl"] != "mgft" or not base or entry.get("status") != "ok":
        return None
    gap = loss_gap(entry["loss_curve"], base["loss_curve"])
    batch = entry["tokens_per_step"] / base["tokens_per_step"] - 1
    return {"loss_gap": gap, "loss_ok": gap is not None and gap <= LOSS_TOLERANCE,
            "batch_diff": batch, "batch_ok": abs(batch) <= BATCH_TOLERANCE}


def judge(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: measured value and pass/fail, or why it was not judged."""
    runs = {r["name"]: r for r in result["runs"]}
    applicable = result["settings"]["arch"] == TARGET_ARCH and not result["settings"]["tiny"]
    rows = []
    for t in TARGETS:
        run, versus = _ok(runs, t.run), _ok(runs, t.versus) if t.versus else None
        if not applicable:
            rows.append({"target": t.label, "value": None, "passed": None,
                         "note": f"n/a: {result['settings']['arch']} runs"})
        elif run is None or (t.versus and versus is None):
            missing = t.run if run is None else t.versus
            rows.append({"target": t.label, "value": None, "passed": None,
                         "note": f"not measured ({missing})"})
        else:
            value = run["tokens_per_s_per_gpu"] / (versus["tokens_per_s_per_gpu"]
                                                   if versus else 1)
            rows.append({"target": t.label, "value": value, "passed": value >= t.threshold,
                         "note": ""})
    return rows


def _num(x: float | None, fmt: str = ",.0f", none: str = "-") -> str:
    return none if x is None else format(x, fmt)


def progress(entry: dict[str, Any]) -> str:
    if entry["status"] != "ok":
        return (f"{entry['name']}: {entry['status']} (exit {entry['exit']}, "
                f"{entry['wall_s']} s): {entry.get('error', '')[:160]}")
    return (f"{entry['name']}: {_num(entry['tokens_per_s_per_gpu'])} tok/s/GPU, MFU "
            f"{_num(entry['mfu'], '.1%')}, peak {entry['peak_gib_max']:.1f} GiB, first step "
            f"{_num(entry['time_to_first_step_s'], '.1f')} s, loss {entry['first_loss']:.3f} -> "
            f"{entry['last_loss']:.3f} (wall {entry['wall_s']} s)")


def markdown(result: dict[str, Any]) -> str:
    runs = {r["name"]: r for r in result["runs"]}
    hw, s = result["hardware"], result["settings"]
    device = (f"{hw['gpu_count']} x {hw['gpu_name']} (driver {hw['driver']})"
              if hw.get("gpu_name") and not s["tiny"] else f"CPU ({hw['cpus']} cores)")
    versions = ", ".join(f"{k} {v}" for k, v in result.get("versions", {}).items())
    lines = [
        "# mgft against the common recipe (bench/perf.py)", "",
        f"{device}; {versions}.", "",
        f"Model {s['arch']} (random init), samples {s['lengths']} tokens, seq-len "
        f"{s['seq_len']}, {s['steps']} steps per run; recipe: TRL SFTTrainer + peft, micro-batch "
        "2 x grad-accum 4 per GPU, no packing. tok/s/GPU: real (non-pad) tokens over the steps "
        "after warm-up. MFU: model FLOPs/s over the bf16 matmul throughput measured in the same "
        "invocation. vs recipe: mgft / recipe, same tuning, strategy and GPUs.", "",
        *_setup_lines(result),
        "| run | status | ran | tok/s/GPU | vs recipe | MFU | peak GiB/GPU | first step s | "
        "tokens/step | loss first -> last | loss gap | batch diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {r['status']} (exit {r['exit']}) | | | | | | | | "
                         f"{r.get('error', '')[:120].replace('|', '/')} | | |")
            continue
        g = guard(runs, r)
        ran = f"{r['ran']['strategy']} x{r['ran']['world_size']}" + (
            "" if r.get("ran_as_requested") else " (not as requested)")
        lines.append(
            f"| {r['name']} | ok | {ran} | {_num(r['tokens_per_s_per_gpu'])} | "
            f"{_num(ratio(runs, r), '.2f')}{'x' if ratio(runs, r) else ''} | "
            f"{_num(r['mfu'], '.1%')} | {r['peak_gib_max']:.1f} | "
            f"{_num(r['time_to_first_step_s'], '.1f')} | {_num(r['tokens_per_step'])} | "
            f"{r['first_loss']:.3f} -> {r['last_loss']:.3f} | "
            f"{_guard_cell(g, 'loss_gap', 'loss_ok', '.1%')} | "
            f"{_guard_cell(g, 'batch_diff', 'batch_ok', '+.1%')} |")
    lines += ["", f"loss gap: mean |mgft - recipe| / recipe over the second half of the tokens "
              f"both trained on (ok within {LOSS_TOLERANCE:.0%}); batch diff: mgft's tokens per "
              f"optimizer step against the recipe's (ok within {BATCH_TOLERANCE:.0%}).", "",
              "## Targets (issue 7: 4 x H200, Llama-3-8B)", "",
              "| target | measured | result |", "|---|---|---|"]
    for j in judge(result):
        value = "-" if j["value"] is None else (
            f"{j['value']:,.0f}" if j["value"] > 50 else f"{j['value']:.2f}")
        verdict = j["note"] or ("pass" if j["passed"] else "FAIL")
        lines.append(f"| {j['target']} | {value} | {verdict} |")
    return "\n".join(lines) + "\n"


def _setup_lines(result: dict[str, Any]) -> list[str]:
    """Batch, FLOPs and matmul figures of the latest invocation (absent if it ran nothing)."""
    if "global_batch" not in result:
        return []
    b, d, mm = result["global_batch"], result["data"], result.get("matmul")
    flops = result["flops_per_token"]
    peak = (f"{sum(x['tflops'] for x in mm['devices']) / len(mm['devices']):.3g} TFLOP/s "
            f"({mm['devices'][0]['dtype']}, {mm['n']}^3)" if mm else "not measured")
    return [f"Per GPU and optimizer step: recipe {b['base_samples_per_gpu_step']} rows, "
            f"~{b['base_tokens_per_gpu_step']:,.0f} tokens; mgft {b['mgft_micro_batch']} packs of "
            f"~{d['mgft_mean_pack_tokens']:,.0f}, ~{b['mgft_tokens_per_gpu_step']:,.0f} tokens. "
            f"Model FLOPs per token: LoRA {flops['lora']['total'] / 1e9:.3g} G, full "
            f"{flops['full']['total'] / 1e9:.3g} G ({flops['lora']['formula']}). Matmul "
            f"throughput per GPU: {peak}.", ""]


def _guard_cell(g: dict[str, Any] | None, key: str, ok: str, fmt: str) -> str:
    if not g or g[key] is None:
        return "-"
    return f"{format(g[key], fmt)} {'ok' if g[ok] else 'OFF'}"


def chart(result: dict[str, Any], path: Path) -> None:
    runs = {r["name"]: r for r in result["runs"]}
    configs = list(dict.fromkeys(f"{r['tuning']}-{r['strategy']}-{r['gpus']}g"
                                 for r in result["runs"]))
    fig, (bars, curves) = pyplot().subplots(1, 2, figsize=(15, 5.5),
                                            gridspec_kw={"width_ratios": [3, 2]})
    for i, config in enumerate(configs):
        members = [r for r in result["runs"] if r["name"].split("-", 1)[1].split("@")[0]
                   == config]
        members.sort(key=lambda r: (r["impl"] != "mgft", r["name"]))
        width = 0.8 / max(len(members), 1)
        for k, r in enumerate(members):
            x = i - 0.4 + width * (k + 0.5)
            value = r.get("tokens_per_s_per_gpu") if r["status"] == "ok" else 0
            color = "tab:blue" if r["impl"] == "mgft" else "tab:gray"
            bars.bar(x, value or 0, width, color=color, alpha=1 if "@" not in r["name"] else
                     0.5, edgecolor="black", linewidth=0.5)
            label = r["name"].split("@")[1] if "@" in r["name"] else (
                "failed" if r["status"] != "ok" else "")
            if label:
                bars.text(x, (value or 0), label, rotation=90, ha="center", va="bottom",
                          fontsize=7)
            ratio_ = ratio(runs, r)
            if ratio_ and "@" not in r["name"]:
                bars.text(x, value, f"{ratio_:.2f}x", ha="center", va="bottom", fontsize=8)
        bar_target = _bar_target(result, runs, config)
        if bar_target:
            bars.hlines(bar_target, i - 0.45, i + 0.45, colors="tab:red", linestyles="--")
    bars.set_xticks(range(len(configs)), configs, rotation=20, fontsize=8)
    bars.set_ylabel("real tokens/s per GPU (steady)")
    bars.set_title("mgft (blue) vs the recipe (gray); red dashes: issue 7's bar")
    for config in configs:
        m, b = _ok(runs, f"mgft-{config}"), _ok(runs, f"base-{config}")
        if not (m and b):
            continue
        line = curves.plot(*zip(*m["loss_curve"], strict=True), label=f"mgft {config}")[0]
        curves.plot(*zip(*b["loss_curve"], strict=True), linestyle="--",
                    color=line.get_color(), label=f"recipe {config}")
    curves.set_xlabel("tokens trained (all GPUs)")
    curves.set_ylabel("loss (token mean per step)")
    curves.set_title("correctness guard: loss vs tokens")
    if curves.lines:
        curves.legend(fontsize=7)
    hw = result["hardware"]
    fig.suptitle(f"bench/perf.py: {result['settings']['arch']}, "
                 f"{hw.get('gpu_name') or 'CPU'}", fontsize=10)
    save(fig, path)


def _bar_target(result: dict[str, Any], runs: dict[str, dict[str, Any]],
                config: str) -> float | None:
    """The highest target tok/s/GPU mgft's run of `config` must reach (8B on GPUs only)."""
    if result["settings"]["arch"] != TARGET_ARCH or result["settings"]["tiny"]:
        return None
    levels = []
    for t in TARGETS:
        if t.run != f"mgft-{config}":
            continue
        if t.versus is None:
            levels.append(t.threshold)
        elif (v := _ok(runs, t.versus)) is not None:
            levels.append(t.threshold * v["tokens_per_s_per_gpu"])
    return max(levels, default=None)
