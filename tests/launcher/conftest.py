"""Fixtures for the launcher tests: the local Slurm cluster (tests/slurm_cluster.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.slurm_cluster import Cluster, cluster


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("mgft-state")) as running:
        yield running


@pytest.fixture
def slurm_jobs(slurm_cluster: Cluster) -> Iterator[list[str]]:
    """Job ids a test submitted; any still queued or running when it ends is cancelled."""
    ids: list[str] = []
    yield ids
    for job_id in ids:
        slurm_cluster.run("scancel", job_id, check=False)
