from __future__ import annotations

import pytest
from mgft.contract.env import DistEnv
from mgft.spec.job import Compile, Strategy, TrainSpec
from mgft_train import checkpoint
from mgft_train.checks import (
    RESULT_NAMES,
    check_compiler,
    check_dataset_file,
    check_model_dir,
    check_output_dir,
    check_strategy,
)
from mgft_train.errors import UsageError

TORCHRUN = DistEnv(rank=0, world_size=2, local_world_size=2, launched=True)
ALONE = DistEnv()


@pytest.mark.parametrize("name", [n for n in RESULT_NAMES if n != "metrics.json"])
def test_output_holding_a_previous_result_is_refused(tmp_path, name):
    (tmp_path / name).mkdir()
    with pytest.raises(UsageError) as err:
        check_output_dir(str(tmp_path))
    assert str(err.value) == (f"--output {tmp_path}: already holds a previous run's results "
                              f"({name}); pick a new --output, or move the old results away")


def test_a_finished_run_is_refused_even_with_checkpoints(tmp_path):
    (tmp_path / "checkpoints" / "step-00000004").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-00000004" / checkpoint.STATE_FILE).write_text("{}")
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(UsageError, match=r"finished run's results \(metrics.json\)"):
        check_output_dir(str(tmp_path))


def test_an_unfinished_run_is_resumed_from_its_latest_complete_checkpoint(tmp_path):
    for step in (4, 8):
        d = tmp_path / "checkpoints" / f"step-{step:08d}"
        d.mkdir(parents=True)
        (d / checkpoint.STATE_FILE).write_text("{}")
    (tmp_path / "checkpoints" / ".step-00000012.partial").mkdir()  # killed mid-write
    (tmp_path / "adapter").mkdir()  # killed between the final save and metrics.json
    assert check_output_dir(str(tmp_path)) == tmp_path / "checkpoints" / "step-00000008"


def test_new_or_empty_output_is_fine(tmp_path):
    assert check_output_dir(str(tmp_path)) is None
    assert check_output_dir(str(tmp_path / "new")) is None
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        check_output_dir(str(tmp_path / "file"))


def test_model_dir_must_exist_and_hold_config_and_weights(tmp_path):
    with pytest.raises(UsageError, match=r"^--model .*/nope: directory not found; pass"):
        check_model_dir(str(tmp_path / "nope"))
    with pytest.raises(UsageError, match="no config.json"):
        check_model_dir(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UsageError, match=r"no weights in it .* or pass --random-init"):
        check_model_dir(str(tmp_path))
    check_model_dir(str(tmp_path), random_init=True)
    (tmp_path / "model.safetensors").write_bytes(b"")
    check_model_dir(str(tmp_path))


def test_dataset_must_exist_as_a_file_or_a_saved_directory(tmp_path):
    with pytest.raises(UsageError) as err:
        check_dataset_file("/x.jsonl")
    assert str(err.value) == ("--dataset /x.jsonl: not found; pass an existing .jsonl, .json or "
                              ".parquet file, or a directory written by datasets' save_to_disk")
    check_dataset_file(str(tmp_path))  # save_to_disk writes a directory; data.files reads it


@pytest.mark.parametrize("strategy", [Strategy.FSDP, Strategy.ZERO1, Strategy.ZERO2,
                                      Strategy.ZERO3, Strategy.ZERO3_OFFLOAD])
def test_sharded_strategies_need_torchrun(strategy):
    check_strategy(strategy, TORCHRUN)
    with pytest.raises(UsageError) as err:
        check_strategy(strategy, ALONE)
    assert str(err.value).startswith(f"--strategy {strategy.value}: needs a process group")


def test_ddp_runs_alone_and_mp_wants_one_process_per_node():
    check_strategy(Strategy.DDP, ALONE)
    check_strategy(Strategy.MP, DistEnv(world_size=2, local_world_size=1, launched=True))
    with pytest.raises(UsageError, match="2 processes were started on this node"):
        check_strategy(Strategy.MP, TORCHRUN)




def test_compile_needs_a_c_compiler_where_it_runs(tmp_path, monkeypatch):
    spec = TrainSpec(model="m", dataset="d", compile=Compile.BLOCKS)
    check_compiler(spec)  # this machine has gcc and Python's headers (the tests compile)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler on it
    with pytest.raises(UsageError) as err:
        check_compiler(spec)
    assert (err.value.flag, err.value.value) == ("--compile", "blocks")
    assert "no gcc, clang or cc on PATH" in err.value.problem and "gcc" in err.value.fix
    check_compiler(TrainSpec(model="m", dataset="d"))  # --compile none needs nothing
