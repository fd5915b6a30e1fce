from __future__ import annotations

import pytest
from mgft.spec import Strategy, Tuning
from mgft_train.checks import (
    RESULT_NAMES,
    check_dataset_file,
    check_model_dir,
    check_output_dir,
    check_strategy,
    check_tuning,
)
from mgft_train.errors import UsageError


@pytest.mark.parametrize("name", RESULT_NAMES)
def test_output_holding_a_previous_result_is_refused(tmp_path, name):
    (tmp_path / name).mkdir()
    with pytest.raises(UsageError) as err:
        check_output_dir(str(tmp_path))
    assert str(err.value) == (f"--output {tmp_path}: already holds a previous run's results "
                              f"({name}); pick a new --output, or move the old results away")


def test_new_or_empty_output_is_fine(tmp_path):
    check_output_dir(str(tmp_path))
    check_output_dir(str(tmp_path / "new"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        check_output_dir(str(tmp_path / "file"))


def test_model_dir_must_exist_and_hold_config(tmp_path):
    with pytest.raises(UsageError, match=r"^--model .*/nope: directory not found; pass"):
        check_model_dir(str(tmp_path / "nope"))
    with pytest.raises(UsageError, match="no config.json"):
        check_model_dir(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    check_model_dir(str(tmp_path))


def test_dataset_must_exist_as_a_file_or_a_saved_directory(tmp_path):
    with pytest.raises(UsageError) as err:
        check_dataset_file("/x.jsonl")
    assert str(err.value) == ("--dataset /x.jsonl: not found; pass an existing .jsonl, .json or "
                              ".parquet file, or a directory written by datasets' save_to_disk")
    check_dataset_file(str(tmp_path))  # save_to_disk writes a directory; data.files reads it


@pytest.mark.parametrize("strategy", [s for s in Strategy if s is not Strategy.DDP])
def test_strategies_other_than_ddp_are_refused_by_name(strategy):
    with pytest.raises(UsageError) as err:
        check_strategy(strategy)
    assert str(err.value) == (f"--strategy {strategy.value}: not implemented by this trainer "
                              "version yet (ddp is); use --strategy ddp")


def test_ddp_lora_and_full_pass_qlora_does_not():
    check_strategy(Strategy.DDP)
    check_tuning(Tuning.LORA)
    check_tuning(Tuning.FULL)
    with pytest.raises(UsageError, match="^--tuning qlora: not implemented"):
        check_tuning(Tuning.QLORA)
