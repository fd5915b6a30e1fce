"""The data cache (mgft_train.data.cache): the same data as `prepare` and `pack` make, keyed by
what changes it, built once, never half-written, hit by the next run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from mgft.spec.job import TrainSpec
from mgft_train.data import cache, load, make_loader, prepare
from mgft_train.data.packing import pack

SEQ_LEN = 64


def spec_for(tiny, out: Path, **kw) -> TrainSpec:
    fields = dict(model=str(tiny.model_dir), dataset=str(tiny.data), output=str(out),
                  seq_len=SEQ_LEN)
    return TrainSpec(**(fields | kw))


def entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir())


@pytest.mark.parametrize("packing", [True, False])
def test_cached_batches_equal_the_uncached_pipelines(tiny, tokenizer, tmp_path, packing):
    """Expectation: `prepare` then `make_loader` packing on its own, as before the cache."""
    spec = spec_for(tiny, tmp_path, packing=packing, eval_split=0.1, seed=3)
    ref = prepare(spec, tokenizer)
    built, hit = load(spec, tokenizer), load(spec, tokenizer)
    assert (built.cache["result"], hit.cache["result"]) == ("built", "hit")
    for data in (built, hit):
        assert list(data.examples) == ref.examples
        assert (data.stats, data.format, data.last_turn_only) == (
            ref.stats, ref.format, ref.last_turn_only)
        assert list(data.eval.examples) == ref.eval.examples
        assert (data.eval.stats, data.eval.source) == (ref.eval.stats, ref.eval.source)
        assert data.examples[:3] == ref.examples[:3] and data.examples[-1] == ref.examples[-1]
        if packing:
            assert list(data.packs) == pack(ref.examples, SEQ_LEN, 3)
            assert list(data.eval.packs) == pack(ref.eval.examples, SEQ_LEN, 0)
        else:
            assert data.packs is None and data.eval.packs is None
        for rank in (0, 1):
            args = dict(micro_batch=3, pad_id=tokenizer.pad_token_id, rank=rank, world_size=2,
                        seed=3, pack_len=SEQ_LEN if packing else None)
            mine = list(make_loader(data.examples, packs=data.packs, **args))
            theirs = list(make_loader(ref.examples, **args))
            assert len(mine) == len(theirs) > 0
            for a, b in zip(mine, theirs, strict=True):
                assert a.keys() == b.keys()
                assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_key_follows_the_bytes_the_tokenizer_and_the_settings(tiny, tokenizer, tmp_path):
    from mgft_train.model import load_tokenizer

    base = spec_for(tiny, tmp_path)
    key = cache.key_of(base, tokenizer)[0]
    copy = Path(shutil.copy(tiny.data, tmp_path / "copy.jsonl"))
    assert cache.key_of(spec_for(tiny, tmp_path, dataset=str(copy)), tokenizer)[0] == key
    text = copy.read_text()
    copy.write_text(text.replace("red", "rex", 1))  # one byte
    assert cache.key_of(spec_for(tiny, tmp_path, dataset=str(copy)), tokenizer)[0] != key
    assert cache.key_of(spec_for(tiny, tmp_path, seq_len=SEQ_LEN + 1), tokenizer)[0] != key
    assert cache.key_of(spec_for(tiny, tmp_path, train_on_prompt=True), tokenizer)[0] != key
    assert cache.key_of(spec_for(tiny, tmp_path, packing=False), tokenizer)[0] != key
    # A tokenizer that encodes differently: one more token, in a copy of the model dir.
    model = Path(shutil.copytree(tiny.model_dir, tmp_path / "model"))
    changed = load_tokenizer(str(model))
    changed.add_tokens(["dog fox"])
    changed.save_pretrained(model)
    changed = load_tokenizer(str(model))
    assert changed("dog fox")["input_ids"] != tokenizer("dog fox")["input_ids"]
    assert cache.key_of(spec_for(tiny, tmp_path, model=str(model)), changed)[0] != key
    # Where the cache is and the output are not part of it.
    assert cache.key_of(spec_for(tiny, tmp_path / "elsewhere", data_cache=str(tmp_path)),
                        tokenizer)[0] == key


CRASH = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from mgft.spec.job import TrainSpec
    from mgft_train.data import load
    from mgft_train.model import load_tokenizer

    model, data, out = sys.argv[1:]
    saved = []
    real_save = np.save
    def save_then_die(f, array):
        real_save(f, array)
        saved.append(f)
        if len(saved) == 2:  # ids and labels written, the rest not
            os.kill(os.getpid(), signal.SIGKILL)
    np.save = save_then_die
    load(TrainSpec(model=model, dataset=data, output=out, seq_len=64), load_tokenizer(model))
""")


def test_a_build_killed_midway_leaves_no_entry_and_the_next_one_builds(tiny, tokenizer,
                                                                       tmp_path):
    proc = subprocess.run([sys.executable, "-c", CRASH, str(tiny.model_dir), str(tiny.data),
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    root = tmp_path / cache.DIRNAME
    key = cache.key_of(spec_for(tiny, tmp_path), tokenizer)[0]
    assert not (root / key).exists()
    (partial,) = [p for p in root.iterdir() if p.is_dir()]  # what the kill left
    assert partial.name.startswith(f".{key}.partial-")
    data = load(spec_for(tiny, tmp_path), tokenizer)
    assert data.cache["result"] == "built"
    assert list(data.examples) == prepare(spec_for(tiny, tmp_path), tokenizer).examples
    assert entries(root) == [key]  # the remains removed


def test_a_failed_build_leaves_nothing(tiny, tokenizer, tmp_path, monkeypatch):
    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache, "_write", full_disk)
    with pytest.raises(cache.UsageError, match="--data-cache .*No space left on device"):
        load(spec_for(tiny, tmp_path), tokenizer)
    assert not (tmp_path / cache.DIRNAME).exists()  # nor the lock, nor the directory made


def test_a_damaged_entry_is_named_with_the_fix(tiny, tokenizer, tmp_path):
    data = load(spec_for(tiny, tmp_path), tokenizer)
    entry = Path(data.cache["dir"])
    with open(entry / "train.ids.npy", "r+b") as f:
        f.truncate(100)
    with pytest.raises(cache.UsageError, match=f"delete {entry} and rerun"):
        load(spec_for(tiny, tmp_path), tokenizer)


def test_none_turns_it_off(tiny, tokenizer, tmp_path):
    data = load(spec_for(tiny, tmp_path, data_cache="none"), tokenizer)
    assert data.cache["result"] == "off" and data.packs is None
    assert not (tmp_path / cache.DIRNAME).exists()


def test_a_process_that_finds_the_lock_taken_waits_and_builds_nothing(tiny, tokenizer,
                                                                     tmp_path, monkeypatch):
    """flock locks of two open() calls exclude each other, as two processes' do: the test
    holds the entry's lock and builds it, while a thread's `load` waits on it."""
    spec = spec_for(tiny, tmp_path)
    key, inputs = cache.key_of(spec, tokenizer)
    root = tmp_path / cache.DIRNAME
    root.mkdir()
    results = []
    with cache._locked(root / f"{key}.lock"):
        waiter = threading.Thread(target=lambda: results.append(load(spec, tokenizer, 1)))
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive() and not (root / key).exists()  # blocked on the lock
        cache._build(spec, tokenizer, root / key, inputs, rank=0)
    waiter.join(timeout=60)
    (data,) = results
    assert (data.cache["result"], data.cache["built_by_rank"]) == ("waited", 0)
    assert list(data.examples) == prepare(spec, tokenizer).examples


def train(tiny, out: Path, env: dict[str, str], *extra: str, nproc: int = 1):
    runner = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = [sys.executable, *(runner if nproc > 1 else []), "-m", "mgft_train",
           f"--model={tiny.model_dir}", f"--dataset={tiny.data}", f"--output={out}",
           "--max-steps=1", "--micro-batch=2", f"--seq-len={SEQ_LEN}", "--save=none", *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads((out / "metrics.json").read_text())["data_cache"]


@pytest.mark.e2e
def test_a_second_run_hits_the_shared_cache(tiny, tmp_path, cpu_job_env):
    shared = tmp_path / "shared"
    _, first = train(tiny, tmp_path / "one", cpu_job_env, f"--data-cache={shared}")
    stdout, second = train(tiny, tmp_path / "two", cpu_job_env, f"--data-cache={shared}")
    assert (first["result"], second["result"]) == ("built", "hit")
    assert first["dir"] == second["dir"] and second["seconds"] < first["seconds"]
    assert f"data cache hit in {second['seconds']:.1f} s" in stdout


@pytest.mark.e2e
def test_two_ranks_build_it_once(tiny, tmp_path, cpu_job_env):
    # The ranks' start-up skew can exceed the tiny build, so this shows the outcome only;
    # the lock itself is shown by the test above.
    out = tmp_path / "out"
    stdout, record = train(tiny, out, cpu_job_env, nproc=2)
    builds = [ln for ln in stdout.splitlines() if "data cache: built" in ln]
    assert len(builds) == 1, stdout
    # rank 0's view: it built, or rank 1 did while it waited, or before it looked
    assert (record["result"] == "built") == (record["built_by_rank"] == 0)
    assert f" by rank {record['built_by_rank']} " in builds[0]
    assert entries(out / cache.DIRNAME) == [Path(record["dir"]).name]  # no partial copies
