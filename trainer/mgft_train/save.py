"""The final save: the adapter (LoRA, QLoRA) or the model (full), and on request the merged
model, all as Hugging Face safetensors that load with from_pretrained.

Weights come from `engine.full_state_dict()`: whole tensors gathered from FSDP or ZeRO-3
shards onto rank 0. Saving the module as it sits in memory is what writes an empty adapter
under ZeRO-3 (its parameters are placeholders) and nothing at all under sharded FSDP.
Each result is written beside its final name and renamed into place, so a crash never
leaves a half-written one. A write that fails (a full disk, a read-only --output) removes its
partial directory and is reported in one line naming the path, the free space and the last
checkpoint, which is kept: rerunning the same command resumes from it and saves again.
"""

from __future__ import annotations

import copy
import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from mgft.spec.job import TrainSpec, Tuning

from mgft_train import checkpoint, distributed
from mgft_train.distributed import Dist
from mgft_train.errors import UsageError

ADAPTER, MODEL, MERGED = "adapter", "model", "merged"


def result_dir(output: str | Path, tuning: Tuning) -> Path:
    """LoRA saves only the adapter (MBs, loaded onto the base model); full saves the model."""
    return Path(output) / (MODEL if tuning is Tuning.FULL else ADAPTER)


class WriteFailed(Exception):
    """Writing `final` failed; its partial directory is gone. `full`: for want of space."""

    def __init__(self, final: Path, error: Exception, full: bool) -> None:
        super().__init__(f"writing {final}: {error}")
        self.final, self.error, self.full = final, error, full


def save_final(engine: Any, tokenizer: Any, spec: TrainSpec, ctx: Dist) -> dict[str, Path]:
    """Collective (the gather); rank 0 writes. Returns {kind: path} on rank 0, {} elsewhere."""
    state = engine.full_state_dict()
    saved: dict[str, Path] = {}
    failed: WriteFailed | None = None
    if ctx.is_main:
        base = engine.base
        try:
            saved[result_dir(spec.output, spec.tuning).name] = publish(
                result_dir(spec.output, spec.tuning),
                lambda d: base.save_pretrained(d, state_dict=state), tokenizer)
            if spec.save_merged:
                saved[MERGED] = publish(
                    Path(spec.output) / MERGED,
                    lambda d: merged_model(base, state, spec).save_pretrained(d), tokenizer)
        except WriteFailed as err:
            failed = err
    # In place of a barrier (no rank exits and tears down while rank 0 still writes): every
    # rank learns whether rank 0's write failed, so that none waits for it at teardown.
    if distributed.all_reduce([float(failed is not None)], ctx)[0] == 0:
        return saved
    raise _report(failed, saved, spec.output)


def publish(final: Path, write: Callable[[Path], None], tokenizer: Any) -> Path:
    # Written beside the final name, then renamed: a rename within a directory is atomic.
    partial = final.with_name(f".{final.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by an earlier crash; never complete
    try:
        write(partial)
        tokenizer.save_pretrained(partial)
    except Exception as err:  # safetensors raises its own error type, torch a RuntimeError
        # Asked before the partial's bytes are freed: safetensors and torch's writers raise
        # no OSError for a full disk; the one says so in words, the other only leaves the disk
        # full (`checkpoint.out_of_space` then asks the filesystem).
        full = _says_no_space(err) or checkpoint.out_of_space(err, partial)
        shutil.rmtree(partial, ignore_errors=True)
        if not (full or isinstance(err, OSError)):
            raise  # not a filesystem problem: the traceback is the report
        raise WriteFailed(final, err, full) from err
    if final.exists():
        # Only reachable on a resumed run (checks.check_output_dir refuses a finished one):
        # the previous attempt died between this save and metrics.json.
        shutil.rmtree(final)
    os.rename(partial, final)
    return final


def _says_no_space(error: Exception) -> bool:
    """safetensors: `I/O error: No space left on device (os error 28)`."""
    return any(os.strerror(code) in str(error) for code in (errno.ENOSPC, errno.EDQUOT))


def _report(failed: WriteFailed | None, saved: dict[str, Path], output: str) -> UsageError:
    if failed is None:
        return UsageError("--output", output, "rank 0 could not write the final results",
                          "see rank 0's line")
    kept = checkpoint.latest(output)
    written = "".join(f"{path} written; " for path in saved.values())
    keeps = (f"the last checkpoint {kept.name} is kept" if kept is not None
             else "no checkpoint to resume from (--save final)")
    resume = ("rerun the same command: it resumes from that checkpoint and saves again"
              if kept is not None else "run again (training starts over)")
    if failed.full:
        return UsageError("--output", output,
                          f"no space left on device writing {failed.final} ({written}"
                          f"{_free(output)} free there; {keeps})",
                          f"free some space and {resume}")
    reason = getattr(failed.error, "strerror", None) or failed.error
    return UsageError("--output", output, f"cannot write {failed.final}: {reason} ({written}"
                      f"{keeps})", f"make it writable by this user, then {resume}")


def _free(output: str | Path) -> str:
    try:
        free = shutil.disk_usage(output).free
    except OSError:
        return "unknown"
    return f"{free / 2**20:.1f} MiB" if free >= 2**20 else f"{free / 2**10:.0f} KiB"


def merged_model(trained: Any, state: dict[str, torch.Tensor], spec: TrainSpec) -> Any:
    """The base with the trained adapter folded into its weights, on rank 0's CPU."""
    from transformers import AutoModelForCausalLM

    from mgft_train.model import peft_model

    lora_config = trained.peft_config["default"]
    if spec.tuning is Tuning.QLORA:
        # The 4-bit base cannot take a merge: fold the adapter into the 16-bit original.
        base = AutoModelForCausalLM.from_pretrained(spec.model, dtype="auto",
                                                    local_files_only=True)
        state = {k: v for k, v in state.items() if "lora_" in k}
        strict = False
    else:
        # Every weight is in `state`: build the skeleton without allocating, then adopt them.
        with torch.device("meta"):
            base = AutoModelForCausalLM.from_config(trained.get_base_model().config)
        strict = True
    model = peft_model(base, copy.deepcopy(lora_config))
    result = model.load_state_dict(state, strict=strict, assign=True)
    if not strict and result.unexpected_keys:
        raise RuntimeError(f"adapter weights not in the model: {result.unexpected_keys[:3]}")
    return model.merge_and_unload()
