from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from mgft.spec.job import TrainSpec
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
    # Another number of processes, and the flags that set the global batch with it, may
    # change too (reshard.py maps the run onto them; tests/trainer/test_reshard.py).
    assert checkpoint.check_resumable(path, s, world_size=2).world_size == 1
    checkpoint.check_resumable(path, spec(tmp_path, micro_batch=2, grad_accum=3), world_size=2)


def test_trainer_state_is_plain_json(tmp_path):
    path = checkpoint.write(engine(), state(2, spec(tmp_path)), tmp_path, CTX, keep=2)
    record = json.loads((path / checkpoint.STATE_FILE).read_text())
    assert record["step"] == 2 and record["spec"]["strategy"] == "ddp"


def test_a_damaged_latest_checkpoint_is_named_and_the_previous_one_resumed(tmp_path):
    s = spec(tmp_path)
    eng = engine()
    for step in (2, 4):
        checkpoint.write(eng, state(step, s), tmp_path, CTX, keep=2)
    newest = checkpoint.step_dir(tmp_path, 4)
    model = newest / "model.pt"
    size = model.stat().st_size
    model.write_bytes(model.read_bytes()[:100])  # a copy cut short

    assert checkpoint.problem(newest) == f"model.pt holds 100 bytes where {size} were written"
    assert checkpoint.resume_point(tmp_path).name == "step-00000002"
    assert checkpoint.skipped(tmp_path) == [f"{newest}: {checkpoint.problem(newest)}"]

    # Resumed from step 2, the run writes step 4 again, over the damaged one.
    checkpoint.write(eng, state(4, s), tmp_path, CTX, keep=2)
    assert checkpoint.problem(newest) is None and checkpoint.skipped(tmp_path) == []


def test_when_no_checkpoint_is_complete_the_run_is_refused_with_the_fix(tmp_path):
    path = checkpoint.write(engine(), state(2, spec(tmp_path)), tmp_path, CTX, keep=2)
    (path / checkpoint.STATE_FILE).write_text("")
    assert checkpoint.latest(tmp_path) is None
    with pytest.raises(UsageError) as err:
        checkpoint.resume_point(tmp_path)
    assert str(err.value) == (
        f"--output {tmp_path}: no checkpoint in {tmp_path / 'checkpoints'} is complete "
        f"(step-00000002: trainer_state.json holds 0 bytes where "
        f"{json_size(path)} were written); delete {tmp_path / 'checkpoints'} to start over, "
        "or pick a new --output")


def json_size(path) -> int:
    return json.loads((path / checkpoint.MANIFEST).read_text())["files"][checkpoint.STATE_FILE]


def test_a_checkpoint_of_the_right_size_but_wrong_bytes_is_named_when_loaded(tmp_path):
    path = checkpoint.write(engine(), state(2, spec(tmp_path)), tmp_path, CTX, keep=2)
    model = path / "model.pt"
    model.write_bytes(bytes(model.stat().st_size))
    assert checkpoint.problem(path) is None  # the cheap check cannot see it; loading does
    with pytest.raises(UsageError, match=r"checkpoint step-00000002 cannot be loaded \(.*; "
                                         rf"delete {path} to resume from the checkpoint before"):
        checkpoint.load(scrambled(), path, CTX)


def test_a_failed_write_names_the_error_and_keeps_the_previous_checkpoint(tmp_path,
                                                                          monkeypatch):
    """A full disk without a small filesystem: torch.save, the lowest write the saver calls
    from Python, raises the OSError(ENOSPC) Python's own file writes give on a full disk.
    (test_a_full_disk_... below fills a real tmpfs where user namespaces allow one.)"""
    s = spec(tmp_path)
    eng = engine()
    checkpoint.write(eng, state(2, s), tmp_path, CTX, keep=2)

    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(UsageError) as err:
        checkpoint.write(eng, state(4, s), tmp_path, CTX, keep=2)
    assert str(err.value).startswith(
        f"--output {tmp_path}: no space left on device writing checkpoint "
        f"{tmp_path / 'checkpoints' / 'step-00000004'} (")
    assert "MiB free there; the previous checkpoint step-00000002 is kept)" in str(err.value)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000002"]

    def denied(obj, f, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(f))

    monkeypatch.setattr(torch, "save", denied)
    with pytest.raises(UsageError, match=r"cannot write checkpoint .*: Permission denied \("
                                         r"the previous checkpoint step-00000002 is kept\); make"):
        checkpoint.write(eng, state(4, s), tmp_path, CTX, keep=2)


FULL_DISK = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from tests.trainer import test_checkpoint as t
    from mgft_train import checkpoint
    from mgft_train.errors import UsageError
    out = Path({out!r})
    eng = t.engine()
    checkpoint.write(eng, t.state(2, t.spec(out)), out, t.CTX, keep=2)
    free = os.statvfs(out).f_bavail * os.statvfs(out).f_frsize
    with open(out / "filler", "wb") as f:  # leave 8 KiB: less than a checkpoint needs
        f.write(bytes(free - 8192))
    try:
        checkpoint.write(eng, t.state(4, t.spec(out)), out, t.CTX, keep=2)
    except UsageError as err:
        print(err)
    print(sorted(p.name for p in (out / "checkpoints").iterdir()))
""")


def test_a_full_disk_is_reported_as_such(tmp_path):
    """A real full filesystem: a 256 KiB tmpfs mounted in a user namespace (`unshare -rm`, no
    root needed where unprivileged user namespaces are allowed; skipped elsewhere). torch's
    C++ writer says `unexpected pos` there; the report must say "no space left"."""
    from tests.conftest import REPO

    mnt = tmp_path / "small"
    mnt.mkdir()
    script = FULL_DISK.format(tests=str(REPO), out=str(mnt / "out"))
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no unprivileged user namespace here: {probe.stderr.decode().strip()}")
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=256k tmpfs "{mnt}" && '
                                      f'exec "{sys.executable}" -c "$0"', script],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"--output {mnt / 'out'}: no space left on device writing "
                               f"checkpoint {mnt / 'out' / 'checkpoints' / 'step-00000004'}")
    assert "the previous checkpoint step-00000002 is kept" in lines[0]
    assert lines[1] == "['step-00000002']"  # the partial directory is gone


def test_a_partial_write_left_behind_is_removed(tmp_path):
    stale = tmp_path / "checkpoints" / ".step-00000004.partial"
    stale.mkdir(parents=True)
    checkpoint.clean_partials(tmp_path)
    assert not stale.exists()


NEARLY_FULL = textwrap.dedent("""
    import os
    from pathlib import Path
    from mgft_train import checkpoint
    out = Path({out!r})
    out.mkdir()
    free = os.statvfs(out).f_bavail * os.statvfs(out).f_frsize
    with open(out / "filler", "wb") as f:  # 16 KiB left: less than the 64 KiB probe
        f.write(bytes(free - 16384))
    print(checkpoint.out_of_space(RuntimeError("unexpected pos 75776 vs 75668"), out))
""")


def test_a_disk_with_a_few_kib_left_is_found_full(tmp_path):
    """The probe's write then takes what fits and returns short; only a second write would
    raise ENOSPC. A real tmpfs, as in test_a_full_disk_is_reported_as_such."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no unprivileged user namespace here: {probe.stderr.decode().strip()}")
    script = NEARLY_FULL.format(out=str(mnt / "out"))
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=256k tmpfs "{mnt}" && '
                                      f'exec "{sys.executable}" -c "$0"', script],
        capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout) == (0, "True\n"), proc.stderr[-2000:]
