"""The final save: what is written, that it is not empty, and that reloading it with plain
transformers/peft reproduces the trained model's loss on a fixed set of training rows
(metrics.json's reload_check_loss), including from FSDP and ZeRO-3 shards, where naive saves
write nothing or empty adapters."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from mgft.spec.job import TrainSpec, Tuning
from mgft_train import save
from mgft_train.distributed import Dist

from tests.trainer import jobs
from tests.trainer.cases import flags

CTX = Dist(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="none")


def reload_check_loss(model, tiny, tokenizer) -> float:
    """The trainer's reload check: the first rows it trained on, no dropout; here in one batch
    (the trainer goes a micro-batch at a time: summed losses, the same mean)."""
    from mgft_train.data import encode, label_tokens, load_rows
    from mgft_train.evaluate import RELOAD_CHECK_ROWS, reload_check_batches
    from mgft_train.loop import loss_sum

    [batch] = reload_check_batches(encode(load_rows(tiny.data)[:RELOAD_CHECK_ROWS], tokenizer,
                                          64), tokenizer.pad_token_id, rows=RELOAD_CHECK_ROWS)
    with torch.no_grad():
        return loss_sum(model.eval(), batch).item() / label_tokens(batch)


def base_model(tiny):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny.model_dir, local_files_only=True)


def adapter_tensors(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path / "adapter_model.safetensors")


def test_publish_replaces_a_stale_partial_and_renames_into_place(tmp_path, tokenizer):
    stale = tmp_path / ".adapter.partial"
    stale.mkdir()
    (stale / "junk").write_text("from a crashed run")

    final = save.publish(tmp_path / "adapter", lambda d: (d.mkdir(), (d / "w").write_text("1")),
                         tokenizer)

    assert final == tmp_path / "adapter"
    assert sorted(p.name for p in final.iterdir()) == ["tokenizer.json", "tokenizer_config.json",
                                                       "w"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_single_process_lora_saves_adapter_and_merged_model(tiny, tokenizer, tmp_path):
    from mgft_train.model import load_model
    from mgft_train.parallel import ddp

    spec = TrainSpec(model=str(tiny.model_dir), dataset="d", output=str(tmp_path), lora_r=4,
                     save_merged=True)
    model = load_model(spec, CTX)
    with torch.no_grad():  # a "trained" adapter: lora_B away from its zero init
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    trained = reload_check_loss(model, tiny, tokenizer)
    engine = ddp.apply(model, spec, CTX, total=1)

    saved = save.save_final(engine, tokenizer, spec, CTX)

    assert saved == {"adapter": tmp_path / "adapter", "merged": tmp_path / "merged"}
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    reloaded = PeftModel.from_pretrained(base_model(tiny), tmp_path / "adapter")
    assert reload_check_loss(reloaded, tiny, tokenizer) == pytest.approx(trained, rel=1e-6)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", local_files_only=True)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert reload_check_loss(merged, tiny, tokenizer) == pytest.approx(trained, rel=1e-4)


def test_full_tuning_saves_the_model():
    assert save.result_dir("/o", Tuning.FULL).name == "model"
    assert save.result_dir("/o", Tuning.LORA).name == "adapter"
    assert save.result_dir("/o", Tuning.QLORA).name == "adapter"


@pytest.mark.e2e
@pytest.mark.parametrize("strategy", ["fsdp", "zero3"])
def test_sharded_lora_writes_a_real_adapter_and_merged_model(strategy, tiny, tokenizer,
                                                             trainer_job):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job = trainer_job(*flags(strategy, "lora", "--save-merged=true"))
    trained = job.metrics["reload_check_loss"]
    tensors = adapter_tensors(job.out / "adapter")
    assert len(tensors) == 2 * 7 * 2  # 2 blocks x 7 projections x (A, B)
    assert all(t.numel() > 0 for t in tensors.values())  # not ZeRO-3's empty placeholders
    assert all(t.abs().max() > 0 for n, t in tensors.items() if "lora_B" in n)  # trained

    reloaded = PeftModel.from_pretrained(base_model(tiny), job.out / "adapter")
    assert reload_check_loss(reloaded, tiny, tokenizer) == pytest.approx(trained, rel=1e-5)
    merged = AutoModelForCausalLM.from_pretrained(job.out / "merged", local_files_only=True)
    assert reload_check_loss(merged, tiny, tokenizer) == pytest.approx(trained, rel=1e-4)
    assert reload_check_loss(base_model(tiny), tiny, tokenizer) > trained + 0.5


@pytest.mark.e2e
@pytest.mark.parametrize("strategy", ["fsdp", "zero3"])
def test_sharded_full_tuning_saves_a_whole_model(strategy, tiny, tokenizer, trainer_job):
    from transformers import AutoModelForCausalLM

    job = trainer_job(*flags(strategy, "full"))
    model = AutoModelForCausalLM.from_pretrained(job.out / "model", local_files_only=True)
    assert sum(p.numel() for p in model.parameters()) == job.metrics["total_params"]
    assert reload_check_loss(model, tiny, tokenizer) == pytest.approx(
        job.metrics["reload_check_loss"], rel=1e-5)


@pytest.mark.e2e
def test_every_finished_run_leaves_metrics_tensorboard_and_a_loss_curve(trainer_job):
    job = trainer_job(*flags("zero2"))
    names = {p.name for p in job.out.iterdir()}
    assert {"adapter", "checkpoints", "metrics.json", "loss.png", "tensorboard"} <= names
    assert any((job.out / "tensorboard").glob("events.out.tfevents.*"))
    checkpoints = sorted(p.name for p in (job.out / "checkpoints").iterdir())
    assert checkpoints == ["step-00000020", "step-00000030"]  # every 10 steps, last 2 kept


def test_a_failed_write_leaves_no_partial_and_says_whether_the_disk_is_full(tmp_path, tokenizer):
    def failing(error):
        def write(d):
            d.mkdir()
            (d / "model.safetensors").write_bytes(b"half")
            raise error
        return write

    for error, full in [(PermissionError(errno.EACCES, os.strerror(errno.EACCES)), False),
                        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), True),
                        # safetensors' Rust writer: its own error type, the reason in words
                        (Exception("Error while serializing: I/O error: No space left on "
                                   "device (os error 28)"), True)]:
        with pytest.raises(save.WriteFailed) as err:
            save.publish(tmp_path / "adapter", failing(error), tokenizer)
        assert (err.value.final, err.value.full) == (tmp_path / "adapter", full)
        assert list(tmp_path.iterdir()) == []  # neither the result nor its partial
    with pytest.raises(ValueError, match="a bug"):  # not the filesystem: raised as it is
        save.publish(tmp_path / "adapter", failing(ValueError("a bug")), tokenizer)
    assert list(tmp_path.iterdir()) == []


FULL_DISK_RUNS = """
import json, subprocess, sys
from pathlib import Path
from mgft_train import checkpoint
cmd, out, mnt = json.loads(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
first = subprocess.run(cmd, capture_output=True, text=True)
seen = {"code": first.returncode, "stderr": first.stderr,
        "names": sorted(p.name for p in out.iterdir()),
        "checkpoints": {p.name: checkpoint.problem(p) for p in (out / "checkpoints").iterdir()}}
subprocess.run(["mount", "-o", "remount,size=16m", mnt], check=True)  # space freed
again = subprocess.run(cmd, capture_output=True, text=True)
seen |= {"code_again": again.returncode, "output_again": again.stdout + again.stderr,
         "names_again": sorted(p.name for p in out.iterdir())}
print(json.dumps(seen))
"""


@pytest.mark.e2e
def test_a_full_disk_during_the_final_save_is_one_line_and_the_checkpoint_resumes(
        tiny, tmp_path, cpu_job_env):
    """A real full filesystem: a tmpfs in a user namespace (`unshare -rm`) with room for the
    run's two checkpoints (~0.9 MB) and the adapter (~0.15 MB) but not the merged model
    (~0.5 MB). safetensors says `SafetensorError: ... No space left on device`; the job must
    end with one line naming the path and the kept checkpoint, leave no partial result and
    no metrics.json, and a rerun with space must resume from that checkpoint and finish."""
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no unprivileged user namespace here: {probe.stderr.decode().strip()}")
    mnt = tmp_path / "small"
    mnt.mkdir()
    out = mnt / "out"
    cmd = jobs.torchrun() + [f"--model={tiny.model_dir}", f"--dataset={tiny.data}",
                             f"--output={out}", "--seq-len=64", "--micro-batch=4", "--seed=0",
                             "--max-steps=4", "--save-every=2", "--save-merged=true"]
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=1300k tmpfs "{mnt}" && '
                                      f'exec "{sys.executable}" -c "$0" "$@"',
         FULL_DISK_RUNS, json.dumps(cmd), str(out), str(mnt)],
        capture_output=True, text=True, env=cpu_job_env, timeout=2 * jobs.TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.splitlines()[-1])
    said = seen["stderr"]  # two ranks share the pipe: their lines may run into each other
    # torchrun exits 1 when a rank fails; its report lists each rank's own code: 2, bad input.
    codes = re.findall(r"^\s+exitcode\s+: (-?\d+)", said, re.M)
    assert seen["code"] == 1 and codes == ["2", "2"], said[-3000:]
    # That report is torchrun's (mgft submit keeps it in the log directory); no rank may add a
    # traceback of its own.
    assert "[rank" not in said and "SafetensorError" not in said, said[-3000:]
    assert said.count("mgft-train:") == 2, said[-3000:]
    assert re.search(
        rf"mgft-train: --output {out}: no space left on device writing {out}/merged \({out}/"
        rf"adapter written; \d+ KiB free there; the last checkpoint step-00000004 is kept\); "
        r"free some space and rerun the same command: it resumes from that checkpoint and "
        r"saves again", said), said[-3000:]
    assert (f"mgft-train: rank 1: --output {out}: rank 0 could not write the final results; "
            "see rank 0's line") in said
    # no .merged.partial left
    assert seen["names"] == ["adapter", "checkpoints", "data-cache", "tensorboard"]
    assert seen["checkpoints"] == {"step-00000002": None, "step-00000004": None}  # complete
    assert seen["code_again"] == 0, seen["output_again"][-3000:]
    assert f"resuming from {out}/checkpoints/step-00000004 (step 4 of 4)" in seen["output_again"]
    assert {"adapter", "merged", "metrics.json"} <= set(seen["names_again"])
