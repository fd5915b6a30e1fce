from __future__ import annotations

from mgft.contract.env import DistEnv, LaunchEnv


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


def test_comm_env_round_trip_and_defaults() -> None:
    from mgft.contract.env import DEFAULT_DIST_TIMEOUT, CommEnv

    env = CommEnv(fabric="infiniband", timeout_s=120, preflight=True)
    assert CommEnv.from_env(env.to_env()) == env
    assert CommEnv.from_env({}) == CommEnv(fabric="auto", timeout_s=DEFAULT_DIST_TIMEOUT)
    assert CommEnv.from_env({"MGFT_DIST_TIMEOUT": "soon"}).timeout_s == DEFAULT_DIST_TIMEOUT
    assert "MGFT_PREFLIGHT" not in CommEnv().to_env()


def test_device_env_pins_the_order_with_the_indices() -> None:
    from mgft.contract.env import DeviceEnv, visible_devices

    env = DeviceEnv(visible=("2", "3")).to_env()
    assert env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "2,3"}
    assert visible_devices(env) == "2,3" and visible_devices({}) is None
    assert visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == "", "empty hides every GPU"


def test_comm_vars_and_fill_unset() -> None:
    from mgft.contract.env import comm_vars, fill_unset

    env = {"NCCL_DEBUG": "WARN", "FI_PROVIDER": "efa", "PATH": "/bin", "TORCH_NCCL_X": "1"}
    assert comm_vars(env) == {"FI_PROVIDER": "efa", "NCCL_DEBUG": "WARN", "TORCH_NCCL_X": "1"}
    assert fill_unset({"NCCL_DEBUG": "INFO", "NCCL_IB_DISABLE": "1"}, env) == {
        "NCCL_IB_DISABLE": "1"}
    assert env["NCCL_DEBUG"] == "WARN" and env["NCCL_IB_DISABLE"] == "1"
