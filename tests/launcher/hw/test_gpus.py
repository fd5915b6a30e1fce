"""GPU selection against injected inventories: the rules hold without a GPU on this machine."""

from __future__ import annotations

import pytest
from mgft.hw import gpus
from mgft.hw.gpus import choose, choose_for
from mgft.hw.nvml import Device, Inventory, NvmlUnavailable
from mgft.spec.errors import SpecError

from tests.launcher.render.cases import spec

GIB = 1 << 30


def gpu(index: int, *, used: float = 0.3, util: int = 0, procs: int = 0,
        mig_mode: bool = False) -> Device:
    return Device(index=index, uuid=f"GPU-{index:04d}aaaa-1111", name="NVIDIA H200",
                  memory_total=141 * GIB, memory_used=int(used * GIB), utilization=util,
                  processes=procs, bus_id=f"0000:{0x18 + index:02x}:00.0", mig_mode=mig_mode)


def mig(parent: int, number: int, procs: int = 0) -> Device:
    return Device(index=parent, mig=number, uuid=f"MIG-{parent}{number}bbbb-2222",
                  name="NVIDIA H200 MIG 1g.18gb", memory_total=18 * GIB,
                  memory_used=int(0.1 * GIB), utilization=None, processes=procs)


def inventory(*devices: Device) -> Inventory:
    return Inventory(driver="580.82.07", cuda_driver="13.0", devices=devices)


# Two GPUs kept busy by someone else's job, two idle: the proof run's machine.
BUSY2 = inventory(gpu(0, used=40, util=99, procs=1), gpu(1, used=40, util=97, procs=1),
                  gpu(2), gpu(3))


def test_gpus_n_picks_the_idle_ones_and_says_which_it_passed_over() -> None:
    choice = choose(BUSY2, count=2)
    assert choice.visible == ("2", "3")
    assert [d.index for d, _ in choice.passed_over] == [0, 1]
    assert "GPUs 2,3" in choice.summary() and "99% utilized" in choice.summary()


def test_least_busy_among_idle_wins_and_order_is_by_index() -> None:
    inv = inventory(gpu(0, used=2.0, util=5), gpu(1, used=0.2), gpu(2, used=0.5, util=3),
                    gpu(3, used=0.1))
    assert choose(inv, count=2).visible == ("1", "3")
    assert choose(inv, count=3).visible == ("1", "2", "3")


def test_one_process_sees_exactly_one_gpu() -> None:
    # One process that sees several GPUs makes HF Trainer fall into nn.DataParallel.
    assert choose(BUSY2, count=1).visible == ("2",)


def test_more_gpus_than_free_is_a_clear_error() -> None:
    with pytest.raises(SpecError) as err:
        choose(BUSY2, count=3)
    text = str(err.value)
    assert text.startswith("--gpus 3: only 2 of 4 GPUs are free")
    assert "GPU 0: 1 process, 40.0 GiB used, 99% utilized" in text
    assert "use --gpus 2" in text


def test_more_gpus_than_exist_is_a_clear_error() -> None:
    with pytest.raises(SpecError, match=r"^--gpus 5: only 4 GPUs visible here; use --gpus 4"):
        choose(BUSY2, count=5)


def test_existing_cuda_visible_devices_bounds_the_choice() -> None:
    # Slurm gave this job GPUs 1 and 3; GPU 2 is idle but not ours.
    choice = choose(BUSY2, count=1, within="1,3")
    assert choice.visible == ("3",) and choice.within == "1,3"
    with pytest.raises(SpecError, match="only 1 of 2 GPUs are free within CUDA_VISIBLE_DEVICES"):
        choose(BUSY2, count=2, within="1,3")


def test_cuda_visible_devices_by_uuid_and_prefix() -> None:
    choice = choose(BUSY2, count=2, within="GPU-0002aaaa-1111,GPU-0003")
    assert choice.visible == ("2", "3")


def test_cuda_visible_devices_naming_no_gpu_is_an_error() -> None:
    with pytest.raises(SpecError, match=r"^CUDA_VISIBLE_DEVICES 2,7: names '7'"):
        choose(BUSY2, count=1, within="2,7")


@pytest.mark.parametrize("hidden", ["", "-1", "NoDevFiles"])
def test_cuda_visible_devices_that_hides_everything(hidden: str) -> None:
    with pytest.raises(SpecError, match="only 0 GPUs visible here within CUDA_VISIBLE_DEVICES"):
        choose(BUSY2, count=1, within=hidden)


def test_gpu_ids_picks_exactly_those_in_their_order() -> None:
    choice = choose(BUSY2, count=2, ids=["3", "GPU-0002aaaa-1111"])
    assert choice.visible == ("3", "2") and not choice.warnings


def test_gpu_ids_outside_cuda_visible_devices_is_refused() -> None:
    with pytest.raises(SpecError) as err:
        choose(BUSY2, count=1, ids=["2"], within="1,3")
    assert str(err.value).startswith("--gpu-ids 2: outside CUDA_VISIBLE_DEVICES=1,3")
    assert "pick from 1,3" in str(err.value)


def test_busy_gpu_id_warns_and_exclusive_refuses() -> None:
    choice = choose(BUSY2, count=1, ids=["0"])
    assert choice.visible == ("0",)
    assert choice.warnings and "GPU 0 is in use (1 process" in choice.warnings[0]
    with pytest.raises(SpecError, match=r"^--gpu-ids 0: GPU 0 is in use .* --exclusive is set"):
        choose(BUSY2, count=1, ids=["0"], exclusive=True)


@pytest.mark.parametrize("ids,needle", [
    (["9"], "--gpu-ids 9: no such GPU here (GPUs: 0,1,2,3)"),
    (["2", "2"], "--gpu-ids 2,2: names GPU 2 twice"),
    (["GPU-"], "--gpu-ids GPU-: no such GPU here"),  # a prefix of every UUID names none
])
def test_bad_gpu_ids(ids: list[str], needle: str) -> None:
    with pytest.raises(SpecError) as err:
        choose(BUSY2, count=len(ids), ids=ids)
    assert str(err.value).startswith(needle)


MIGGED = inventory(gpu(0, mig_mode=True), mig(0, 0), mig(0, 1, procs=1), gpu(1))


def test_mig_devices_are_chosen_by_uuid_or_parent_colon_number() -> None:
    assert choose(MIGGED, count=1, ids=["0:0"]).visible == ("MIG-00bbbb-2222",)
    assert choose(MIGGED, count=1, ids=["MIG-00bb"]).visible == ("MIG-00bbbb-2222",)


def test_gpus_n_never_picks_a_mig_mode_gpu_or_its_slices() -> None:
    assert choose(MIGGED, count=1).visible == ("1",)
    with pytest.raises(SpecError, match="only 1 GPU visible here"):
        choose(MIGGED, count=2)


def test_a_gpu_in_mig_mode_is_not_usable_whole() -> None:
    with pytest.raises(SpecError, match=r"GPU 0 is in MIG mode .* \(0:0, 0:1\)"):
        choose(MIGGED, count=1, ids=["0"])


def test_two_mig_devices_cannot_go_to_one_torchrun() -> None:
    with pytest.raises(SpecError, match="CUDA shows a process one MIG device only"):
        choose(MIGGED, count=2, ids=["0:0", "0:1"])


def test_mig_device_from_kubernetes_cuda_visible_devices() -> None:
    # The device plugin hands a pod one MIG slice by UUID.
    assert choose(MIGGED, count=1, within="MIG-00bbbb-2222").visible == ("MIG-00bbbb-2222",)


def test_choose_for_uses_the_spec_and_the_environment() -> None:
    job = spec(**{"resources.gpus": 2})
    choice = choose_for(job, load=lambda _: BUSY2, env={"CUDA_VISIBLE_DEVICES": "0,2,3"})
    assert choice is not None and choice.visible == ("2", "3")


def test_env_flag_cuda_visible_devices_bounds_it_too() -> None:
    job = spec(**{"resources.gpus": 1, "env.CUDA_VISIBLE_DEVICES": "3"})
    choice = choose_for(job, load=lambda _: BUSY2, env={})
    assert choice is not None and choice.visible == ("3",)


def test_no_selection_for_cpu_or_cluster_backends() -> None:
    def fail(_: int) -> Inventory:
        raise AssertionError("must not look at GPUs")

    assert choose_for(spec(**{"resources.gpus": 0}), load=fail) is None
    assert choose_for(spec(**{"backend": "slurm", "resources.gpus": 8}), load=fail) is None


def test_no_driver_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from mgft.hw import nvml

    def no_driver() -> Inventory:
        raise NvmlUnavailable("NVML: NVML Shared Library Not Found")

    monkeypatch.setattr(nvml, "inventory", no_driver)
    with pytest.raises(gpus.NoGpuDriver) as err:
        choose_for(spec(**{"resources.gpus": 2}))
    assert str(err.value) == ("--gpus 2: no NVIDIA GPU can be seen here (NVML: NVML Shared "
                              "Library Not Found); install the NVIDIA driver and nvidia-ml-py, "
                              "or use --gpus 0 to run on CPU")
