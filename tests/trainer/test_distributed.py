from __future__ import annotations

import pytest
import torch
from mgft.contract.env import DistEnv, LaunchEnv
from mgft_train import distributed
from mgft_train.errors import UsageError


def launch(device: str) -> LaunchEnv:
    return LaunchEnv(device=device, job_name="t", backend="local")


def test_cpu_is_cpu_and_auto_follows_cuda_availability():
    assert distributed.resolve_device(launch("cpu"), DistEnv()) == torch.device("cpu")
    auto = distributed.resolve_device(launch("auto"), DistEnv())
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_usage_error():
    with pytest.raises(UsageError, match="^MGFT_DEVICE cuda: torch sees no CUDA device"):
        distributed.resolve_device(launch("cuda"), DistEnv())


def test_single_process_joins_no_group(single_process_env):
    ctx = distributed.init(DistEnv.from_env(), torch.device("cpu"))
    assert (ctx.backend, ctx.world_size, ctx.rank, ctx.grouped) == ("none", 1, 0, False)
    assert not torch.distributed.is_initialized()
    assert distributed.all_reduce([2.0, 3.0], ctx) == [2.0, 3.0]
    distributed.teardown(ctx)  # a no-op, and must not raise


def test_the_group_waits_mgft_dist_timeout_for_a_missing_rank(monkeypatch, single_process_env):
    """A real gloo group: the collective timeout is the launcher's, not torch's 30 minutes."""
    import socket
    from datetime import timedelta

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "MGFT_DIST_TIMEOUT": "45"}.items():
        monkeypatch.setenv(key, value)
    ctx = distributed.init(DistEnv.from_env(), torch.device("cpu"))
    try:
        group = torch.distributed.distributed_c10d._get_default_group()
        assert group._get_backend(torch.device("cpu")).options._timeout == timedelta(seconds=45)
    finally:
        distributed.teardown(ctx)


def test_each_restart_attempt_sees_only_its_own_store_keys(monkeypatch):
    """torchrun restarts workers against the same store: a key the dead attempt left (gloo's
    address of a killed rank) must not be what the new attempt reads."""
    import socket
    from datetime import timedelta

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    first = distributed.attempt_store(DistEnv(rank=0, world_size=1, restart_count=0))
    first.set("rank_1_address", "dead")
    first.set_timeout(timedelta(seconds=1))
    second = distributed.attempt_store(DistEnv(rank=0, world_size=1, restart_count=1))
    second.set_timeout(timedelta(seconds=1))
    assert not second.check(["rank_1_address"])
    second.set("rank_1_address", "alive")
    assert first.get("rank_1_address") == b"dead"
