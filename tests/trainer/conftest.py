"""Trainer fixtures; the tiny model/data assets come from tests/conftest.py."""

from __future__ import annotations

import os

import pytest
from mgft.envcontract import DIST_VARS, MGFT_DEVICE


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
def cpu_job_env() -> dict[str, str]:
    """Environment for a real torchrun job on CPU (facts: shared/notes/cpu-gloo-training.md)."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env.update({"OMP_NUM_THREADS": "1", MGFT_DEVICE: "cpu", "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false"})
    return env
