"""Experiment tracking (--report-to): TensorBoard, Weights & Biases and MLflow behind one small
interface, on rank 0 only.

Each step logs what the console line shows, under the same names everywhere: train/loss,
train/lr, train/tokens_per_s, train/peak_memory_gib (rank 0's device) and, at the steps that
evaluate, eval/loss. The run's config is the resolved TrainSpec and the stack's versions.

A resumed run continues the same tracker run: the W&B and MLflow run ids are kept in
<output>/tracking.json from the first start on. TensorBoard drops the events after the
checkpoint (purge_step). A run killed outright (not preempted: that stops at a checkpoint)
may have logged steps after its last checkpoint; the resumed run logs them again, with the
same values (resume is exact): W&B drops steps below its run's current one, MLflow keeps
both points.

Credentials come from the environment only: WANDB_API_KEY (on Kubernetes from --wandb-secret),
MLFLOW_TRACKING_URI and its token or password. WANDB_PROJECT (default mgft), WANDB_MODE,
WANDB_DIR (default --output), MLFLOW_EXPERIMENT_NAME (default mgft) are honoured; the run is
named after the job (MGFT_JOB_NAME).
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from mgft.contract import exitcodes
from mgft.contract.env import LaunchEnv
from mgft.spec.job import Tracker, TrainSpec
from mgft.spec.rules.tracking import report_to_problem

from mgft_train.errors import UsageError

TENSORBOARD_DIR = "tensorboard"
IDS_FILE = "tracking.json"  # {"wandb": run id, "mlflow": run id}
DEFAULT_PROJECT = "mgft"
GiB = 1024**3
# Tracker -> the module it needs, from the mgft[track] extra.
_MODULES = {Tracker.WANDB: "wandb", Tracker.MLFLOW: "mlflow"}


class Backend(Protocol):
    def log(self, step: int, values: Mapping[str, float]) -> None: ...

    def close(self, outcome: str) -> None:
        """`outcome`: "finished", "preempted" (to be resumed) or "failed"."""


def check(spec: TrainSpec) -> None:
    """Before training starts, on every rank: a tracker asked for and not installed is one
    line, not a traceback an hour in."""
    if problem := report_to_problem(spec.report_to):
        raise UsageError("--report-to", ",".join(spec.report_to), *problem)
    for tracker in spec.report_to:
        module = _MODULES.get(tracker)
        if module is not None and not _installed(module):
            raise UsageError("--report-to", ",".join(spec.report_to),
                             f"{tracker.value} needs the {module} package, which is not "
                             "installed here",
                             f"pip install 'mgft[track]' in the image, or drop {tracker.value}")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # sys.modules[module] is None: imports of it are blocked
        return False


class Trackers:
    """What the loop talks to: one call per step, fanned out to every --report-to backend."""

    def __init__(self, backends: list[Backend], device: Any = None) -> None:
        self._backends, self._device = backends, device
        self.outcome = "finished"

    def step(self, step: int, *, loss: float, lr: float, tok_s: float,
             eval_loss: float | None = None) -> None:
        if not self._backends:
            return
        from mgft_train.memory import device_peak_bytes

        values = {"train/loss": loss, "train/lr": lr, "train/tokens_per_s": tok_s,
                  "train/peak_memory_gib": device_peak_bytes(self._device) / GiB}
        if eval_loss is not None:
            values["eval/loss"] = eval_loss
        for backend in self._backends:
            backend.log(step, values)

    def preempted(self) -> None:
        self.outcome = "preempted"


@contextmanager
def open_trackers(spec: TrainSpec, ctx: Any, *, start: int = 0) -> Iterator[Trackers]:
    """Rank 0 opens every --report-to backend (other ranks get none); `start` > 0 is a resumed
    run, continuing the runs named in <output>/tracking.json."""
    chosen = [t for t in spec.report_to if t is not Tracker.NONE]
    if not ctx.is_main or not chosen:
        yield Trackers([])
        return
    ids = read_ids(spec.output)
    config = run_config(spec, ctx)
    backends: list[Backend] = []
    trackers = Trackers(backends, ctx.device)
    try:
        for tracker in chosen:
            backends.append(_start(tracker, spec, config, ids, start))
        write_ids(spec.output, ids)
        yield trackers
    except BaseException:
        trackers.outcome = "failed"
        raise
    finally:
        for backend in backends:
            backend.close(trackers.outcome)


def _start(tracker: Tracker, spec: TrainSpec, config: Mapping[str, Any], ids: dict[str, str],
           start: int) -> Backend:
    """A tracker that cannot start a run (no W&B key, an unreachable MLflow server) is one
    line naming it, before the first step is logged."""
    try:
        return _OPEN[tracker](spec, config, ids, start)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UsageError("--report-to", tracker.value, f"could not start a run ({first})",
                         f"check its settings ({_SETTINGS[tracker]}), or drop it") from err


def run_config(spec: TrainSpec, ctx: Any) -> dict[str, Any]:
    from mgft_train.checkpoint import spec_record
    from mgft_train.versions import versions

    launch = LaunchEnv.from_env()
    return {"spec": spec_record(spec), "versions": versions(), "job": launch.job_name,
            "launcher": launch.backend, "world_size": ctx.world_size, "backend": ctx.backend,
            "device": ctx.device.type}


def read_ids(output: str | Path) -> dict[str, str]:
    try:
        record = json.loads((Path(output) / IDS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict):
        return {}
    return {k: v for k, v in record.items() if isinstance(v, str)}


def write_ids(output: str | Path, ids: Mapping[str, str]) -> None:
    if not ids:
        return
    path = Path(output) / IDS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{IDS_FILE}.tmp")
    tmp.write_text(json.dumps(dict(ids), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _run_name() -> str:
    return LaunchEnv.from_env().job_name


class _TensorBoard:
    def __init__(self, spec: TrainSpec, config: Mapping[str, Any], ids: dict[str, str],
                 start: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run purges the events after its checkpoint: a restarted job's repeated
        # steps show once, not twice.
        self._writer = SummaryWriter(log_dir=str(Path(spec.output) / TENSORBOARD_DIR),
                                     purge_step=start + 1 if start else None)
        if not start:
            self._writer.add_text("config", f"```\n{json.dumps(config, indent=2)}\n```")

    def log(self, step: int, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self._writer.add_scalar(name, value, step)

    def close(self, outcome: str) -> None:
        self._writer.close()


class _WandB:
    def __init__(self, spec: TrainSpec, config: Mapping[str, Any], ids: dict[str, str],
                 start: int) -> None:
        import wandb

        env = os.environ
        self._run = wandb.init(
            project=None if env.get("WANDB_PROJECT") else DEFAULT_PROJECT,
            name=None if env.get("WANDB_NAME") else _run_name(),
            dir=None if env.get("WANDB_DIR") else spec.output,
            id=ids.get("wandb"), resume="allow",
            config=dict(config))
        ids["wandb"] = self._run.id

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self._run.log(dict(values), step=step)

    def close(self, outcome: str) -> None:
        if outcome == "preempted":
            self._run.mark_preempting()
            self._run.finish(exit_code=exitcodes.PREEMPTED)
        else:
            self._run.finish(exit_code=0 if outcome == "finished" else 1)


class _MLflow:
    _STATUS = {"finished": "FINISHED", "preempted": "KILLED", "failed": "FAILED"}

    def __init__(self, spec: TrainSpec, config: Mapping[str, Any], ids: dict[str, str],
                 start: int) -> None:
        import mlflow

        self._mlflow = mlflow
        if "mlflow" in ids:
            run = mlflow.start_run(run_id=ids["mlflow"])
        else:
            if not (os.environ.get("MLFLOW_EXPERIMENT_NAME")
                    or os.environ.get("MLFLOW_EXPERIMENT_ID")):
                mlflow.set_experiment(DEFAULT_PROJECT)
            run = mlflow.start_run(run_name=os.environ.get("MLFLOW_RUN_NAME") or _run_name())
        ids["mlflow"] = run.info.run_id
        # A param cannot change once logged: a resumed run adds only the ones it lacks (a
        # changed --save-every keeps the first run's value).
        logged = run.data.params
        params = {k: v for k, v in _flat(config).items() if k not in logged}
        try:
            if params:
                mlflow.log_params(params)
        except Exception:
            mlflow.end_run(status="FAILED")
            raise

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self._mlflow.log_metrics(dict(values), step=step)

    def close(self, outcome: str) -> None:
        self._mlflow.end_run(status=self._STATUS[outcome])


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"spec": {"lr": 0.1}} -> {"spec.lr": "0.1"}: MLflow params are flat strings of at most
    500 characters in older servers."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            flat[f"{prefix}{key}"] = text[:500]
    return flat


_OPEN: dict[Tracker, Any] = {Tracker.TENSORBOARD: _TensorBoard, Tracker.WANDB: _WandB,
                             Tracker.MLFLOW: _MLflow}
_SETTINGS = {Tracker.TENSORBOARD: "a writable --output",
             Tracker.WANDB: "WANDB_API_KEY, or WANDB_MODE=offline",
             Tracker.MLFLOW: "MLFLOW_TRACKING_URI and its credentials"}
