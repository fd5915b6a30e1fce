"""Shared fixtures: golden files (`pytest --update-golden`) and tiny model/data assets built
once per session with no download (a random-init Llama, its tokenizer, alpaca rows and
held-out rows of the same task)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The Kubeflow CRD schemas the rendered jobs are validated against: 5 MB of upstream files, not
# carried here. `bash .ci/fetch-kubeflow-crds.sh` downloads them into .kubeflow/ (or point
# MGFT_KUBEFLOW_DIR at a copy); without them the tests that need them skip, saying so.
KUBEFLOW = Path(os.environ.get("MGFT_KUBEFLOW_DIR") or REPO / ".kubeflow")
# The stock runtime a TrainJob patches, carried (Apache-2.0, unchanged): see the file.
TORCH_RUNTIME = REPO / "tests" / "kubeflow" / "torch_distributed.v2.3.0.yaml"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="Rewrite golden files from the current renderers instead of comparing.")


@pytest.fixture
def golden(request: pytest.FixtureRequest):
    """`golden(path, text)`: compare text with the file, or rewrite it with --update-golden."""
    update = request.config.getoption("--update-golden")

    def check(path: Path, text: str) -> None:
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return
        assert path.is_file(), f"{path} missing: run `pytest --update-golden` and review the diff"
        assert text == path.read_text(), (
            f"{path.name} differs from the renderer's output; if the change is intended, "
            "run `pytest --update-golden` and review the diff")

    return check


@dataclass(frozen=True)
class Tiny:
    root: Path
    model_dir: Path
    data: Path
    eval_data: Path  # EVAL_ROWS other rows of the same task, for --eval-dataset


EVAL_ROWS = 18  # not a multiple of 2 ranks x 4 rows: one rank gets a batch fewer


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    from mgft_train import demo_assets as tiny_mod

    root = tmp_path_factory.mktemp("tiny")
    data = tiny_mod.build(root, rows=256, seed=0)
    held_out = [tiny_mod.as_format(r, "alpaca") for r in tiny_mod.make_rows(EVAL_ROWS, seed=1)]
    eval_data = tiny_mod.write_data(root / "eval.jsonl", held_out, "jsonl")
    return Tiny(root=root, model_dir=root / "model", data=data, eval_data=eval_data)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """The local 2-node Slurm cluster (tests/slurm_cluster.py), up for the whole session."""
    from tests.slurm_cluster import cluster

    with cluster(tmp_path_factory.mktemp("mgft-state")) as running:
        yield running


@pytest.fixture
def slurm_jobs(slurm_cluster):
    """Job ids a test submitted; any still queued or running when it ends is cancelled."""
    ids: list[str] = []
    yield ids
    for job_id in ids:
        slurm_cluster.run("scancel", job_id, check=False)
