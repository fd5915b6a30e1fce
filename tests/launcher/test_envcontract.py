from __future__ import annotations

from mgft.envcontract import DistEnv, LaunchEnv


def test_dist_env_round_trip() -> None:
    env = DistEnv(rank=3, local_rank=1, world_size=4, local_world_size=2, master_addr="h",
                  master_port=1234, launched=True)
    assert DistEnv.from_env(env.to_env()) == env
    assert not DistEnv.from_env({}).distributed
    assert DistEnv.from_env({"RANK": "0", "WORLD_SIZE": "1"}).distributed


def test_launch_env_round_trip_and_unknown_device() -> None:
    env = LaunchEnv(device="cpu", job_name="j", backend="slurm")
    assert LaunchEnv.from_env(env.to_env()) == env
    assert LaunchEnv.from_env({"MGFT_DEVICE": "tpu"}).device == "auto"
