"""Trainer fixtures; the tiny model/data assets come from tests/conftest.py.

`trainer_job` runs real 2-rank torchrun jobs on CPU/gloo and caches them for the session, so
the strategy proofs, the save checks and the resume tests share runs (a run costs 10-25 s).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from mgft.contract.env import DIST_VARS, MGFT_DEVICE

from tests.trainer import jobs


@pytest.fixture(scope="session")
def tokenizer(tiny):
    from mgft_train.model import load_tokenizer

    return load_tokenizer(str(tiny.model_dir))


@pytest.fixture
def single_process_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """As `python -m mgft_train` sees it: no torchrun variables, CPU."""
    for name in DIST_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(MGFT_DEVICE, "cpu")


@pytest.fixture(scope="session")
def cpu_job_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for a real torchrun job on CPU: one OpenMP thread per rank (two ran 6x
    slower on 2 cores), nothing fetched from the Hub. DeepSpeed JIT-builds its CPU comm op
    once (~30 s); the build is kept for the session."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    extensions = os.environ.get("TORCH_EXTENSIONS_DIR") or str(
        tmp_path_factory.getbasetemp() / "torch_extensions")
    env.update({"OMP_NUM_THREADS": "1", MGFT_DEVICE: "cpu", "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "TORCH_EXTENSIONS_DIR": extensions})
    return env


@pytest.fixture(scope="session")
def trainer_job(tiny, tmp_path_factory: pytest.TempPathFactory,
                cpu_job_env) -> Callable[..., jobs.Job]:
    """`trainer_job(*flags)`: one finished 2-rank job with these trainer flags (on top of
    jobs.trainer_argv's), run once per session; exits non-zero fail the test that asked."""
    done: dict[tuple[str, ...], jobs.Job] = {}

    def run(*flags: str) -> jobs.Job:
        if flags not in done:
            out = tmp_path_factory.mktemp("job") / "out"
            done[flags] = jobs.run(jobs.torchrun() + jobs.trainer_argv(tiny, out, *flags),
                                   cpu_job_env, out).check()
        return done[flags]

    return run


@pytest.fixture
def fresh_output(tmp_path: Path) -> Path:
    return tmp_path / "out"
