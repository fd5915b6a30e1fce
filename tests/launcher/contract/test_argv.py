from __future__ import annotations

import pytest
from mgft.contract.argv import parse_train, to_argv
from mgft.spec.job import Compile, DataFormat, Kernels, Overlong, Strategy, TrainSpec, Tuning


def test_round_trip_with_hostile_values() -> None:
    train = TrainSpec(model="-m --dataset=x", dataset="a\nb c", output="'$(x)'",
                      strategy=Strategy.ZERO3, tuning=Tuning.FULL, max_steps=7, lr=3e-5)
    assert parse_train(to_argv(train)) == train


def test_every_field_is_written() -> None:
    argv = to_argv(TrainSpec(model="m", dataset="d", max_steps=3))
    assert [a.split("=", 1)[0] for a in argv] == [
        "--model", "--dataset", "--output", "--strategy", "--tuning", "--max-steps", "--epochs",
        "--lr", "--micro-batch", "--grad-accum", "--seq-len", "--seed", "--lora-r",
        "--lora-alpha", "--lora-dropout", "--data-format", "--train-on-prompt", "--packing",
        "--overlong", "--kernels", "--compile", "--activation-checkpointing",
        "--lora-dropout-recompute",
        "--precision", "--lora-targets",
        "--save", "--save-every", "--keep-checkpoints", "--save-merged",
        "--random-init", "--report-to"]


def test_data_options_round_trip_including_booleans() -> None:
    train = TrainSpec(model="m", dataset="d", data_format=DataFormat.SHAREGPT,
                      chat_template="-t $(x).jinja", train_on_prompt=True, packing=False,
                      overlong=Overlong.DROP)
    assert parse_train(to_argv(train)) == train
    assert "--packing=False" in to_argv(train)


def test_booleans_round_trip() -> None:
    train = TrainSpec(model="m", dataset="d", save_merged=True, random_init=True,
                      kernels=Kernels.NONE, activation_checkpointing=True,
                      lora_dropout_recompute=True, compile=Compile.BLOCKS)
    assert "--save-merged=True" in to_argv(train)
    assert parse_train(to_argv(train)) == train


def test_eval_options_round_trip_and_are_written_only_when_set() -> None:
    assert not any(a.startswith("--eval") for a in to_argv(TrainSpec(model="m", dataset="d")))
    for train in (TrainSpec(model="m", dataset="d", eval_dataset="-e $(x).jsonl", eval_every=5),
                  TrainSpec(model="m", dataset="d", eval_split=0.05)):
        assert parse_train(to_argv(train)) == train
    assert "--eval-split=0.05" in to_argv(TrainSpec(model="m", dataset="d", eval_split=0.05))


def test_deepspeed_local_rank_is_accepted() -> None:
    assert parse_train(["--model=m", "--dataset=d", "--local_rank=3"]).model == "m"


def test_bad_value_exits_2_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_train(["--model=m", "--dataset=d", "--micro-batch=0"])
    assert exit_.value.code == 2
    assert "--micro-batch '0'" in capsys.readouterr().err
