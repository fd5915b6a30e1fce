"""Input checks that run before any process group exists, so a bad flag costs no rendezvous.

Every rank runs them on the same inputs and reaches the same verdict; only rank 0 prints it.
Dataset rows are validated too (`data.load_rows`), in `main`, for the same reason.
"""

from __future__ import annotations

from pathlib import Path

from mgft.spec import Strategy, TrainSpec, Tuning

from mgft_train.errors import UsageError

# What a finished run leaves in --output; any of them means "this is someone's results".
RESULT_NAMES = ("metrics.json", "adapter", "model")
SUPPORTED_STRATEGIES = frozenset({Strategy.DDP})
SUPPORTED_TUNINGS = frozenset({Tuning.LORA, Tuning.FULL})


def check_inputs(spec: TrainSpec) -> None:
    check_strategy(spec.strategy)
    check_tuning(spec.tuning)
    check_model_dir(spec.model)
    check_dataset_file(spec.dataset)
    check_output_dir(spec.output)


def check_strategy(strategy: Strategy) -> None:
    if strategy not in SUPPORTED_STRATEGIES:
        raise UsageError("--strategy", strategy.value,
                         "not implemented by this trainer version yet (ddp is)",
                         "use --strategy ddp")


def check_tuning(tuning: Tuning) -> None:
    if tuning not in SUPPORTED_TUNINGS:
        raise UsageError("--tuning", tuning.value,
                         "not implemented by this trainer version yet (lora and full are)",
                         "use --tuning lora")


def check_model_dir(model: str) -> None:
    path = Path(model)
    fix = "pass a local model directory holding config.json, weights and tokenizer files"
    if not path.exists():
        raise UsageError("--model", model, "directory not found", fix)
    if not path.is_dir():
        raise UsageError("--model", model, "not a directory", fix)
    if not (path / "config.json").is_file():
        raise UsageError("--model", model, "no config.json in it", fix)


def check_dataset_file(dataset: str) -> None:
    """Only that it exists: its type and rows are checked by `data.files` as it is read."""
    if not Path(dataset).exists():
        raise UsageError("--dataset", dataset, "not found",
                         "pass an existing .jsonl, .json or .parquet file, or a directory "
                         "written by datasets' save_to_disk")


def check_output_dir(output: str) -> None:
    path = Path(output)
    if path.exists() and not path.is_dir():
        raise UsageError("--output", output, "exists and is not a directory",
                         "pick a new --output directory")
    for name in RESULT_NAMES:
        if (path / name).exists():
            raise UsageError("--output", output,
                             f"already holds a previous run's results ({name})",
                             "pick a new --output, or move the old results away")
