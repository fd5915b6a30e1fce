"""--report-to, end to end without a network: a real 2-rank CPU job reports to TensorBoard, W&B
(offline mode: a local run directory) and MLflow (a local file store), is preempted and
resumed; what each tracker holds, read back with its own tools, equals metrics.json and the
console's per-step lines, and the resumed job continued the same tracker runs.
"""

from __future__ import annotations

import json
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from mgft.contract.argv import parse_train
from mgft.contract.exitcodes import PREEMPTED
from mgft_train import tracking
from mgft_train.main import main

from tests.trainer import jobs
from tests.trainer.cases import STEPS, flags

STEP_LINE = re.compile(r"^step (\d+)/\d+ loss (\S+)(?: eval_loss \S+)? lr (\S+) tok/s (\S+)",
                       re.MULTILINE)


# --- readers, each tracker's own format ------------------------------------------------------

def tensorboard_scalars(logdir: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir))
    events.Reload()
    return {e.step: e.value for e in events.Scalars(tag)}


def wandb_records(path: Path) -> list[Any]:
    """The records of a .wandb file: a ":W&B" header, then LevelDB log blocks of 32 KiB whose
    chunks (crc32, length, type) carry serialized wandb Record protos."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, records, pending, pos = path.read_bytes(), [], b"", 7
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


@dataclass
class WandbRun:
    run_id: str
    config: dict[str, Any]
    history: dict[int, dict[str, float]]  # step -> values


def wandb_runs(root: Path) -> list[WandbRun]:
    runs = []
    for path in sorted(root.glob("wandb/offline-run-*/run-*.wandb")):
        run_id, config, history = "", {}, {}
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run_id = record.run.run_id
                config |= {u.key: json.loads(u.value_json) for u in record.run.config.update}
            elif kind == "config":
                config |= {u.key: json.loads(u.value_json) for u in record.config.update}
            elif kind == "history":
                items = {(i.nested_key[0] if i.nested_key else i.key): json.loads(i.value_json)
                         for i in record.history.item}
                history[record.history.step.num] = {k: v for k, v in items.items()
                                                    if not k.startswith("_")}
        runs.append(WandbRun(run_id, config, history))
    return runs


# --- the job -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tracked:
    cut: jobs.Job  # the preempted run
    done: jobs.Job  # its resumption, to the end
    wandb_dir: Path
    mlflow_store: Path

    @property
    def console(self) -> dict[int, tuple[str, str, str]]:
        """step -> (loss, lr, tok/s) as the console printed them, over both runs."""
        text = self.cut.output + self.done.output
        return {int(m[1]): (m[2], m[3], m[4]) for m in STEP_LINE.finditer(text)}


@pytest.fixture(scope="module")
def tracked(tiny, cpu_job_env, tmp_path_factory) -> Tracked:
    pytest.importorskip("wandb", reason="mgft[track] is not installed")
    pytest.importorskip("mlflow", reason="mgft[track] is not installed")
    root = tmp_path_factory.mktemp("tracked")
    out, wandb_dir, store = root / "out", root / "wandb", root / "mlruns"
    env = {k: v for k, v in cpu_job_env.items() if not k.startswith(("WANDB_", "MLFLOW_"))}
    env |= {"WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir), "WANDB_SILENT": "true",
            "MLFLOW_TRACKING_URI": f"file:{store}", "MLFLOW_ALLOW_FILE_STORE": "true",
            "MGFT_JOB_NAME": "tracked-job"}
    wandb_dir.mkdir()
    cmd = jobs.torchrun() + jobs.trainer_argv(
        tiny, out, *flags("ddp", "lora", "--report-to=tensorboard,wandb,mlflow"))
    cut = jobs.run_and_hit(cmd, env, out, when="step 3/", rank=1, sig=jobs.STOP)
    assert f"exitcode  : {PREEMPTED} " in cut.output, cut.output[-3000:]
    done = jobs.run(cmd, env, out).check()
    assert "resuming from" in done.output
    return Tracked(cut, done, wandb_dir, store)


@pytest.fixture
def mlflow_client(tracked, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it
    return MlflowClient(tracking_uri=f"file:{tracked.mlflow_store}")


@pytest.mark.e2e
def test_the_resumed_job_continued_the_same_tracker_runs(tracked, mlflow_client):
    ids = json.loads((tracked.done.out / tracking.IDS_FILE).read_text())
    runs = wandb_runs(tracked.wandb_dir)
    # One W&B run directory per start of rank 0 (other ranks report nothing), one run id.
    assert len(runs) == 2 and {r.run_id for r in runs} == {ids["wandb"]}
    first, second = (sorted(r.history) for r in runs)
    stop = tracked.done.metrics["resumed_from_step"]
    assert first == list(range(1, stop + 1)) and second == list(range(stop + 1, STEPS + 1))

    client = mlflow_client
    found = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_id for r in found] == [ids["mlflow"]]
    assert found[0].info.status == "FINISHED" and found[0].info.run_name == "tracked-job"


@pytest.mark.e2e
def test_wandb_history_equals_metrics_json_and_the_console(tracked):
    m = tracked.done.metrics
    history: dict[int, dict[str, float]] = {}
    for run in wandb_runs(tracked.wandb_dir):
        history |= run.history
    assert [history[s]["train/loss"] for s in range(1, STEPS + 1)] == m["losses"]
    evals = [{"step": s, "loss": v["eval/loss"]} for s, v in history.items() if "eval/loss" in v]
    assert evals == m["eval"]["points"]
    for step, (_, lr, tok_s) in tracked.console.items():
        assert f"{history[step]['train/lr']:.1e}" == lr
        assert f"{history[step]['train/tokens_per_s']:.0f}" == tok_s
    _check_peaks([history[s]["train/peak_memory_gib"] for s in sorted(history)], m)
    config = wandb_runs(tracked.wandb_dir)[0].config
    assert config["spec"]["model"] == m["spec"]["model"]
    assert config["spec"]["report_to"] == ["tensorboard", "wandb", "mlflow"]
    assert config["versions"]["torch"] == torch.__version__ and config["world_size"] == 2


@pytest.mark.e2e
def test_mlflow_history_equals_metrics_json_and_the_console(tracked, mlflow_client):
    m, client = tracked.done.metrics, mlflow_client
    run_id = json.loads((tracked.done.out / tracking.IDS_FILE).read_text())["mlflow"]

    def series(name: str) -> list[tuple[int, float]]:
        return sorted((p.step, p.value) for p in client.get_metric_history(run_id, name))

    # Each step once: the preempted run logged up to its checkpoint, the resumed one after it.
    assert series("train/loss") == list(enumerate(m["losses"], start=1))
    assert series("eval/loss") == [(p["step"], p["loss"]) for p in m["eval"]["points"]]
    lrs, rates = dict(series("train/lr")), dict(series("train/tokens_per_s"))
    for step, (_, lr, tok_s) in tracked.console.items():
        assert f"{lrs[step]:.1e}" == lr and f"{rates[step]:.0f}" == tok_s
    _check_peaks([v for _, v in series("train/peak_memory_gib")], m)
    params = client.get_run(run_id).data.params
    assert params["spec.model"] == m["spec"]["model"]
    assert params["spec.lr"] == json.dumps(m["spec"]["lr"])
    assert params["versions.torch"] == torch.__version__


@pytest.mark.e2e
def test_tensorboard_events_equal_metrics_json(tracked):
    m = tracked.done.metrics
    logdir = tracked.done.out / tracking.TENSORBOARD_DIR
    # TensorBoard stores float32; the resumed run purged nothing it needed.
    losses = tensorboard_scalars(logdir, "train/loss")
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert [losses[s] for s in range(1, STEPS + 1)] == pytest.approx(m["losses"], rel=1e-6)
    evals = tensorboard_scalars(logdir, "eval/loss")
    assert [(s, pytest.approx(v, rel=1e-6)) for s, v in sorted(evals.items())] == [
        (p["step"], p["loss"]) for p in m["eval"]["points"]]


def _check_peaks(gib: list[float], metrics: dict[str, Any]) -> None:
    """Rank 0's peak so far at each step: positive, and never above the peak metrics.json
    measured for rank 0 at the end of the (resumed) run, for that run's steps."""
    rank0 = next(p["bytes"] for p in metrics["peak_memory_per_device"] if p["rank"] == 0)
    resumed = gib[metrics["resumed_from_step"]:]
    assert all(v > 0 for v in gib) and resumed == sorted(resumed)
    assert max(resumed) <= rank0 / 2**30


# --- in-process: the interface, other ranks, a missing package --------------------------------

def _spec(tiny, out: Path, *extra: str):
    return parse_train([f"--model={tiny.model_dir}", f"--dataset={tiny.data}",
                        f"--output={out}", *extra])


def _ctx(is_main: bool = True) -> SimpleNamespace:
    return SimpleNamespace(is_main=is_main, device=torch.device("cpu"), world_size=1,
                           backend="gloo")


def test_tensorboard_gets_every_value_of_the_console_line(tiny, tmp_path):
    with tracking.open_trackers(_spec(tiny, tmp_path), _ctx()) as trackers:
        for step, loss in enumerate([3.0, 2.0, 1.5], start=1):
            trackers.step(step, loss=loss, lr=1e-3, tok_s=100.0 * step,
                          eval_loss=2.5 if step == 2 else None)
    logdir = tmp_path / tracking.TENSORBOARD_DIR
    assert tensorboard_scalars(logdir, "train/loss") == {1: 3.0, 2: 2.0, 3: 1.5}
    assert tensorboard_scalars(logdir, "train/tokens_per_s") == {1: 100.0, 2: 200.0, 3: 300.0}
    assert tensorboard_scalars(logdir, "eval/loss") == {2: 2.5}
    assert len(tensorboard_scalars(logdir, "train/lr")) == 3
    assert all(v > 0 for v in tensorboard_scalars(logdir, "train/peak_memory_gib").values())


@pytest.mark.parametrize("is_main,report_to", [(False, "tensorboard,wandb,mlflow"),
                                               (True, "none")])
def test_other_ranks_and_report_to_none_write_nothing(tiny, tmp_path, is_main, report_to):
    spec = _spec(tiny, tmp_path / "out", f"--report-to={report_to}")
    with tracking.open_trackers(spec, _ctx(is_main)) as trackers:
        trackers.step(1, loss=1.0, lr=1e-3, tok_s=1.0)
    assert not (tmp_path / "out").exists()


def test_a_tracker_not_installed_is_one_line_before_training(tiny, tmp_path, capsys,
                                                             single_process_env, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if mgft[track] were not installed
    out = tmp_path / "out"
    assert main([f"--model={tiny.model_dir}", f"--dataset={tiny.data}", f"--output={out}",
                 "--report-to=tensorboard,wandb"]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "mgft-train: --report-to tensorboard,wandb: wandb needs the wandb package, which is "
        "not installed here; pip install 'mgft[track]' in the image, or drop wandb\n")
    assert not out.exists()


def test_a_tracker_that_cannot_start_a_run_is_one_line_naming_it(tiny, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mgft[track] is not installed")
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'a-file' / 'mlruns'}")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    spec = _spec(tiny, tmp_path / "out", "--report-to=mlflow")
    with pytest.raises(tracking.UsageError) as err, tracking.open_trackers(spec, _ctx()):
        pass
    assert str(err.value).startswith("--report-to mlflow: could not start a run (")
    assert str(err.value).endswith("; check its settings (MLFLOW_TRACKING_URI and its "
                                   "credentials), or drop it")
    assert "\n" not in str(err.value)


def test_none_with_a_tracker_is_refused_by_the_trainer_too(tiny, tmp_path):
    with pytest.raises(tracking.UsageError, match="pass --report-to none alone"):
        tracking.check(_spec(tiny, tmp_path, "--report-to=none,mlflow"))
