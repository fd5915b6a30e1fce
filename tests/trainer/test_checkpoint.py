from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from mgft.spec import TrainSpec
from mgft_train import checkpoint
from mgft_train.checkpoint import TrainState
from mgft_train.distributed import Dist
from mgft_train.errors import UsageError
from mgft_train.parallel import ddp

CTX = Dist(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="none")


def spec(tmp_path, **kw) -> TrainSpec:
    return TrainSpec(model="m", dataset="d", output=str(tmp_path), max_steps=10, **kw)


def engine(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5),
                                torch.nn.Linear(4, 1))
    model[0].weight.requires_grad_(False)  # a frozen "base" weight stays out of checkpoints
    return ddp.apply(model, spec_for_engine(), CTX, total=10)


def scrambled():
    """The same frozen base as engine() (it comes from --model, not from checkpoints), but
    trainable weights and RNG that only a checkpoint can put right."""
    eng = engine()
    torch.manual_seed(123)
    with torch.no_grad():
        for p in eng.trainable:
            p.normal_()
    return eng


def spec_for_engine() -> TrainSpec:
    return TrainSpec(model="m", dataset="d", lr=0.1, max_steps=10)


def train_steps(eng, n: int) -> list[float]:
    losses = []
    for _ in range(n):
        loss = eng.model(torch.ones(3, 4)).pow(2).mean()  # dropout draws from the torch RNG
        eng.backward(loss)
        eng.step()
        losses.append(loss.item())
    return losses


def state(step: int, s: TrainSpec) -> TrainState:
    return TrainState(step=step, losses=[1.0] * step, tokens=10 * step, elapsed_s=0.5,
                      world_size=1, spec=checkpoint.spec_record(s))


def test_save_then_load_continues_exactly_where_the_original_goes(tmp_path):
    s = spec(tmp_path)
    original = engine()
    train_steps(original, 3)
    path = checkpoint.write(original, state(3, s), tmp_path, CTX, keep=2)
    expected = train_steps(original, 4)  # model, Adam moments, schedule and dropout RNG move on

    restored = scrambled()
    loaded = checkpoint.load(restored, path, CTX)

    assert loaded == state(3, s)
    assert train_steps(restored, 4) == expected


def test_only_the_last_k_complete_checkpoints_are_kept(tmp_path):
    s = spec(tmp_path)
    eng = engine()
    for step in (2, 4, 6, 8):
        checkpoint.write(eng, state(step, s), tmp_path, CTX, keep=2)
    assert [p.name for p in checkpoint.complete(tmp_path)] == ["step-00000006",
                                                               "step-00000008"]
    assert checkpoint.latest(tmp_path).name == "step-00000008"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-00000006", "step-00000008"]


def test_the_end_of_run_checkpoint_after_a_periodic_one_is_not_rewritten(tmp_path):
    s = spec(tmp_path)
    eng = engine()
    first = checkpoint.write(eng, state(4, s), tmp_path, CTX, keep=2)
    stamp = (first / checkpoint.STATE_FILE).stat().st_mtime_ns
    assert checkpoint.write(eng, state(4, s), tmp_path, CTX, keep=2) == first
    assert (first / checkpoint.STATE_FILE).stat().st_mtime_ns == stamp


KILL_MID_WRITE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import torch
    sys.path.insert(0, {tests!r})
    from tests.trainer import test_checkpoint as t
    from mgft_train import checkpoint
    out = Path({out!r})
    eng = t.engine()
    t.train_steps(eng, 2)
    checkpoint.write(eng, t.state(2, t.spec(out)), out, t.CTX, keep=2)
    t.train_steps(eng, 2)
    real_save = eng.save_state
    def save_then_die(directory):
        real_save(directory)  # the new checkpoint's files are half there...
        os.kill(os.getpid(), signal.SIGKILL)  # ...when the process is killed
    eng.save_state = save_then_die
    checkpoint.write(eng, t.state(4, t.spec(out)), out, t.CTX, keep=1)
""")


def test_a_kill_during_a_write_leaves_the_previous_checkpoint_loadable(tmp_path):
    from tests.conftest import REPO

    proc = subprocess.run([sys.executable, "-c", KILL_MID_WRITE.format(
        tests=str(REPO), out=str(tmp_path))], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    # The step-4 files were being written into a partial directory; step 2 was not pruned.
    assert (tmp_path / "checkpoints" / ".step-00000004.partial" / "model.pt").is_file()
    assert checkpoint.latest(tmp_path).name == "step-00000002"

    reference = engine()
    train_steps(reference, 2)
    expected = train_steps(reference, 3)
    eng = scrambled()
    loaded = checkpoint.load(eng, checkpoint.latest(tmp_path), CTX)
    assert loaded.step == 2
    assert train_steps(eng, 3) == expected

    checkpoint.write(eng, state(5, spec(tmp_path)), tmp_path, CTX, keep=2)  # cleans up
    assert not list((tmp_path / "checkpoints").glob(".*partial"))


def test_resume_refuses_a_changed_flag_naming_it(tmp_path):
    s = spec(tmp_path)
    path = checkpoint.write(engine(), state(2, s), tmp_path, CTX, keep=2)
    assert checkpoint.check_resumable(path, s, world_size=1).step == 2
    # Where and how often it saves may change between attempts.
    checkpoint.check_resumable(path, spec(tmp_path / "elsewhere", save_every=3), world_size=1)
    with pytest.raises(UsageError) as err:
        checkpoint.check_resumable(path, spec(tmp_path, lr=1e-3), world_size=1)
    assert str(err.value).startswith("--lr 0.001: the run in ")
    assert "was started with 0.0002" in str(err.value)
    with pytest.raises(UsageError, match="written by 1 ranks, this job has 2"):
        checkpoint.check_resumable(path, s, world_size=2)


def test_trainer_state_is_plain_json(tmp_path):
    path = checkpoint.write(engine(), state(2, spec(tmp_path)), tmp_path, CTX, keep=2)
    record = json.loads((path / checkpoint.STATE_FILE).read_text())
    assert record["step"] == 2 and record["spec"]["strategy"] == "ddp"
