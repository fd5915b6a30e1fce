"""mgft's trainer against the common recipe (TRL SFTTrainer + peft, no packing), side by side
in one invocation, on one machine, with the same data, model and global batch (issue 7).

Each run is a subprocess: `mgft submit --backend local` for mgft, `torchrun
bench/perf_baseline.py` for the recipe. Both write a metrics.json; from it each run gets real
(non-pad) tokens/s/GPU over the steps after warm-up, MFU against the bf16 matmul throughput
measured here (bench/perf_matmul.py, its own process), peak GiB per GPU, time to first step
(first_step_at - launch) and the loss curve; each config gets the mgft/baseline ratio.

    python bench/perf.py --gpus 4 --out DIR [--only RUNS] [--steps 12] [--lengths 128:1024]
    python bench/perf.py --tiny --out DIR     (CPU plumbing: tiny Llama, 2 gloo processes)

Runs are named <impl>-<tuning>-<strategy>-<gpus>g[@<ablation>], impl mgft or base, e.g.
mgft-lora-ddp-4g, base-full-fsdp-4g, mgft-lora-ddp-1g@nokernels (ablations: perf_runs.py).
DIR/perf.json is rewritten after every run; runs it holds as done are skipped (--redo runs them
again), so a matrix can be split over several invocations with --only. A failed run is
recorded with its exit code and log tail, and the matrix goes on. DIR also gets perf.md,
perf.png and runs/<name>.log. Models, data and run outputs go under --work (run outputs are
deleted once read: a full fine-tune's checkpoint is ~100 GB).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import perf_report  # noqa: E402
from bench_assets import GPU_SAFE_ENV, model_config, sft_rows  # noqa: E402
from perf_runs import (  # noqa: E402
    BASE_SAMPLES_PER_STEP,
    LORA_R,
    TUNINGS,
    Assets,
    Run,
    default_configs,
    flops_per_token,
    match_micro_batch,
    matrix,
    mean_context,
    micro_batch,
    summarize,
)

SETTINGS = ("tiny", "arch", "steps", "seq_len", "lengths", "rows", "seed", "lr_lora", "lr_full")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="CPU plumbing check (tiny model, gloo)")
    p.add_argument("--gpus", type=int, default=4, help="GPUs of the default matrix")
    p.add_argument("--only", help="comma-separated run names instead of the default matrix")
    p.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    p.add_argument("--seq-len", type=int, default=None, help="1024 (128 with --tiny)")
    p.add_argument("--lengths", default=None, help="sample lengths LO:HI in tokens, uniform "
                   "(128:1024; 16:128 with --tiny)")
    p.add_argument("--rows", type=int, default=None, help="dataset rows (enough for the steps)")
    p.add_argument("--lr-lora", type=float, default=None, help="2e-4 (3e-3 with --tiny)")
    p.add_argument("--lr-full", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=int, default=None, help="seconds per run (420; 180 tiny)")
    p.add_argument("--out", type=Path, required=True, help="perf.json, perf.md, perf.png, logs")
    p.add_argument("--work", type=Path, default=Path("/tmp/mgft-bench/perf"),
                   help="model config, data and run outputs")
    p.add_argument("--redo", action="store_true", help="run again what --out holds as done")
    p.add_argument("--fresh", action="store_true", help="ignore an earlier perf.json in --out")
    p.add_argument("--keep-outputs", action="store_true", help="keep each run's --output")
    args = p.parse_args(argv)
    args.arch = "tiny" if args.tiny else "llama-3-8b"
    args.seq_len = args.seq_len or (128 if args.tiny else 1024)
    args.lengths = args.lengths or ("16:128" if args.tiny else "128:1024")
    args.lr_lora = args.lr_lora or (3e-3 if args.tiny else 2e-4)
    args.timeout = args.timeout or (180 if args.tiny else 420)
    try:
        lo, hi = (int(x) for x in args.lengths.split(":"))
    except ValueError:
        p.error(f"--lengths {args.lengths}: expected LO:HI in tokens, e.g. 128:1024")
    if not 0 < lo <= hi <= args.seq_len:
        p.error(f"--lengths {args.lengths}: need 0 < LO <= HI <= --seq-len {args.seq_len} "
                "(longer samples would be cut differently by the two sides)")
    args.lengths = f"{lo}:{hi}"
    try:
        names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else []
        args.runs = [Run.parse(n) for n in names] if names else matrix(
            ["lora-ddp-2g"] if args.tiny else default_configs(args.gpus))
    except ValueError as err:
        p.error(f"--only: {err}")
    # Enough rows that no run wraps into a second epoch, with room to spare; not from --only,
    # so every part of a split matrix trains on the same file.
    widest = max([args.gpus, *(r.gpus for r in args.runs)])
    args.rows = args.rows or max(256, math.ceil(1.5 * args.steps * BASE_SAMPLES_PER_STEP * widest))
    return args


def settings(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in SETTINGS}


def prepare_assets(args: argparse.Namespace) -> Assets:
    from mgft.plan.arch import resolve
    from mgft_train.data.encode import Example
    from mgft_train.data.packing import pack

    model_dir = model_config(args.arch, args.work / "models" / args.arch, seed=args.seed)
    lo, hi = (int(x) for x in args.lengths.split(":"))
    data = args.work / f"sft-{args.arch}-{lo}-{hi}-{args.rows}-{args.seed}.jsonl"
    lengths = sft_rows(model_dir, data, args.rows, (lo, hi), seed=args.seed)
    # mgft's own packer on these lengths: how full its packs will be.
    packs = pack([Example(input_ids=[0] * n, labels=[0] * n) for n in lengths], args.seq_len,
                 args.seed)
    arch = resolve(str(model_dir))
    context = mean_context(lengths)
    return Assets(model_dir=model_dir, data=data, lengths=lengths,
                  mean_pack=sum(lengths) / len(packs),
                  flops={t: flops_per_token(arch, t, LORA_R, context) for t in TUNINGS})


def base_env(args: argparse.Namespace, gpus: int) -> dict[str, str]:
    env = os.environ | GPU_SAFE_ENV | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1"}
    if args.tiny:  # gloo on 2 cores: more threads per process only fight (notes)
        return env | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return env | {"CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                  "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(gpus))}


def command(run: Run, assets: Assets, args: argparse.Namespace, output: Path) -> list[str]:
    lr = str(args.lr_lora if run.tuning == "lora" else args.lr_full)
    common = ["--model", str(assets.model_dir), "--dataset", str(assets.data), "--output",
              str(output), "--strategy", run.strategy, "--tuning", run.tuning,
              "--max-steps", str(args.steps), "--lr", lr, "--seed", str(args.seed),
              "--lora-r", str(LORA_R)]
    if run.impl == "base":
        # The tuned recipe packs to --seq-len, mgft's micro-batch at a time (perf_runs).
        tuned = ["--seq-len", str(args.seq_len), "--micro-batch",
                 str(micro_batch(run, assets))] if run.tuned else []
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={run.gpus}", str(HERE / "perf_baseline.py"), *common,
                *(["--cpu"] if args.tiny else []), *tuned, *run.flags]
    from mgft.spec.flags import FLAGS

    procs = ["--gpus", "0", "--nproc-per-node", str(run.gpus)] if args.tiny else [
        "--gpus", str(run.gpus), "--gpu-ids", ",".join(str(i) for i in range(run.gpus))]
    # Only metrics.json, like the recipe's save_strategy="no": a full fine-tune's checkpoint
    # and final model are ~130 GB of writes (an mgft without --save writes them).
    save = ["--save", "none"] if "--save" in FLAGS else []
    return [sys.executable, "-m", "mgft.cli", "submit", "--backend", "local", *procs, *common,
            "--random-init", "--micro-batch", str(micro_batch(run, assets)), "--grad-accum",
            "1", "--seq-len", str(args.seq_len), *save, *run.flags]


def launch(argv: list[str], env: dict[str, str], log: Path, timeout: int) -> tuple[Any, float]:
    """Exit code (or "timeout") and wall seconds. Its own session, so a timeout ends torchrun
    and every worker it started, and nothing else."""
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(argv)}\n")
        f.flush()
        proc = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        code: Any = "timeout"
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:  # also when this driver is stopped (SIGTERM, Ctrl-C): leave no GPU busy
            if proc.poll() is None:
                _end_group(proc)
    return code, time.perf_counter() - start


def _end_group(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def measure_matmul(args: argparse.Namespace, gpus: int, log: Path) -> dict[str, Any] | None:
    argv = [sys.executable, str(HERE / "perf_matmul.py"), *(["--cpu"] if args.tiny else [])]
    proc = subprocess.run(argv, env=base_env(args, gpus), capture_output=True, text=True,
                          timeout=300)
    log.write_text(f"$ {shlex.join(argv)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        print(f"matmul throughput: failed (exit {proc.returncode}), MFU left out; see {log}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_one(run: Run, assets: Assets, matmul: dict[str, Any] | None,
            args: argparse.Namespace) -> dict[str, Any]:
    output = args.work / "runs" / run.name
    shutil.rmtree(output, ignore_errors=True)  # this benchmark's own output from before
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    log = args.out / "runs" / f"{run.name}.log"
    argv = command(run, assets, args, output)
    launched_at = time.time()
    code, wall = launch(argv, base_env(args, run.gpus), log, args.timeout)
    entry: dict[str, Any] = {
        "name": run.name, "impl": run.impl, "tuning": run.tuning, "strategy": run.strategy,
        "gpus": run.gpus, "ablations": list(run.ablations), "exit": code,
        "wall_s": round(wall, 1), "launched_at": launched_at, "command": shlex.join(argv),
        "log": str(log.relative_to(args.out))}
    metrics_file = output / "metrics.json"
    try:
        if code != 0 or not metrics_file.is_file():
            return entry | {"status": "timeout" if code == "timeout" else "failed",
                            **_error(log)}
        metrics = json.loads(metrics_file.read_text())
        shutil.copy(metrics_file, args.out / "runs" / f"{run.name}.metrics.json")
        return entry | {"status": "ok"} | summarize(run, metrics, assets, matmul, launched_at,
                                                    arch=args.arch, seq_len=args.seq_len)
    finally:
        if not args.keep_outputs:
            shutil.rmtree(output, ignore_errors=True)


# The line that says why: an exception ("torch.OutOfMemoryError: ...") or a one-line refusal
# ("mgft: error: ..."), but not torchrun's summary that some worker failed.
WHY = re.compile(r"\w(Error|Exception)\b:|\berror: ")


def _error(log: Path) -> dict[str, str]:
    text = log.read_text(encoding="utf-8", errors="replace")
    lines = [x for x in text.strip().splitlines()[1:] if x.strip()] or ["(no output)"]
    key = next((x for x in reversed(lines) if WHY.search(x) and "ChildFailedError" not in x),
               lines[-1])
    return {"error": key.strip()[:300], "error_tail": text[-3000:]}


def hardware(args: argparse.Namespace) -> dict[str, Any]:
    gpus: list[dict[str, str]] = []
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=60).stdout
        gpus = [dict(zip(("index", "name", "memory", "driver"),
                         (x.strip() for x in line.split(",")), strict=False))
                for line in smi.strip().splitlines()]
    except (FileNotFoundError, subprocess.TimeoutExpired):
        pass
    return {"gpus": gpus, "gpu_count": len(gpus), "gpu_name": gpus[0]["name"] if gpus else None,
            "driver": gpus[0]["driver"] if gpus else None, "host": platform.node(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "device": "cpu" if args.tiny else "cuda"}


def versions() -> dict[str, str]:
    found = {}
    for name in ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "deepspeed",
                 "liger-kernel", "bitsandbytes", "triton", "mgft"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def load_previous(args: argparse.Namespace) -> dict[str, Any] | None:
    path = args.out / "perf.json"
    if args.fresh or not path.is_file():
        return None
    previous = json.loads(path.read_text())
    if previous.get("settings") != settings(args):
        before = previous.get("settings") or {}
        diff = ", ".join(f"{k}={before.get(k)!r} (now {v!r})" for k, v in settings(args).items()
                         if before.get(k) != v)
        raise SystemExit(f"perf: --out {args.out}: its perf.json was made with {diff}; run "
                         "with the same settings to add to it, or pass --fresh or another --out")
    return previous


def write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".perf.json.partial"
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, out / "perf.json")
    (out / "perf.md").write_text(perf_report.markdown(result))
    perf_report.chart(result, out / "perf.png")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # `timeout` or a scheduler stops the driver with SIGTERM: unwind, so the run in flight is
    # ended (launch) and everything finished before it is already in perf.json.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        previous = load_previous(args)
    except SystemExit as err:
        print(err, file=sys.stderr)
        return 2
    runs = {r["name"]: r for r in (previous or {}).get("runs", [])}
    todo = [r for r in args.runs if args.redo or runs.get(r.name, {}).get("status") != "ok"]
    for r in args.runs:
        if r not in todo:
            print(f"{r.name}: done earlier, skipped (--redo runs it again)", flush=True)
    result = {"benchmark": "bench/perf.py (issue 7)", "settings": settings(args),
              "command": shlex.join([sys.executable, *sys.argv]), "cwd": os.getcwd(),
              "hardware": hardware(args), "versions": versions(), "runs": list(runs.values())}
    if not todo:
        write(result, args.out)
        return 0
    started = time.perf_counter()
    assets = prepare_assets(args)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    matmul = measure_matmul(args, max(r.gpus for r in todo), args.out / "runs" / "matmul.log")
    result |= {"matmul": matmul, "data": {
        "rows": len(assets.lengths), "lengths": args.lengths, "mean_len": assets.mean_len,
        "mgft_mean_pack_tokens": assets.mean_pack, "seq_len": args.seq_len},
        "flops_per_token": assets.flops,
        "steady_rule": "tokens/s over the steps after the first fifth (at most 5), as "
                       "mgft_train.rates.steady_tokens_per_s; per GPU = / world size",
        "global_batch": {"base_samples_per_gpu_step": BASE_SAMPLES_PER_STEP,
                         "base_tokens_per_gpu_step": BASE_SAMPLES_PER_STEP * assets.mean_len,
                         "mgft_micro_batch": match_micro_batch(assets.mean_len, assets.mean_pack),
                         "mgft_tokens_per_gpu_step": match_micro_batch(
                             assets.mean_len, assets.mean_pack) * assets.mean_pack}}
    print(f"data: {len(assets.lengths)} rows of {args.lengths} tokens (mean "
          f"{assets.mean_len:.0f}); mgft packs {assets.mean_pack:.0f} tokens per {args.seq_len}"
          f", micro-batch {result['global_batch']['mgft_micro_batch']}; matmul "
          f"{_tflops(matmul)}; {time.perf_counter() - started:.0f} s", flush=True)
    for i, run in enumerate(todo, 1):
        entry = run_one(run, assets, matmul, args)
        runs[run.name] = entry
        result["runs"] = list(runs.values())
        write(result, args.out)  # after every run: a later hang or timeout loses nothing
        print(f"[{i}/{len(todo)}] {perf_report.progress(entry)}", flush=True)
    print(perf_report.markdown(result))
    print(f"wrote {args.out / 'perf.json'}, perf.md, perf.png")
    return 0


def _tflops(matmul: dict[str, Any] | None) -> str:
    if not matmul:
        return "not measured"
    each = [d["tflops"] for d in matmul["devices"]]
    return f"{sum(each) / len(each):.1f} TFLOP/s ({matmul['devices'][0]['dtype']})"


if __name__ == "__main__":
    sys.exit(main())
