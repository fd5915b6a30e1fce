"""The data cache: the training rows (and the eval set) tokenized and packed once, kept as
numpy arrays, memory-mapped by every rank and by every later run that reads the same data
the same way (a resumed run, or another run given the same --data-cache).

An entry is named by a key, a hash of everything that changes the encoded result: the bytes
of --dataset and --eval-dataset, the tokenizer's files, --data-format, --seq-len, --overlong,
--train-on-prompt, --chat-template (a file's text), --packing, --eval-split, --seed where it
decides something (packing order, held-out rows), the source of the modules that read,
render and encode rows, and the transformers/tokenizers/jinja2/datasets versions. Paths and
mtimes are not in it: a copy of the same bytes hits; a file rewritten in place misses.

    <dir>/<key>/meta.json              what `prepare` reported (format, stats), file sizes
                train.ids.npy          token ids and labels (int32) of all examples, end to
                train.labels.npy       end; example i is [offsets[i], offsets[i+1])
                train.offsets.npy
                train.packs.npy        with --packing: example indices, pack after pack;
                train.pack_offsets.npy pack j is packs[pack_offsets[j]:pack_offsets[j+1]]
                eval.*                 the same for the eval set

Who builds an entry: whichever process first takes its lock (flock on <dir>/<key>.lock); the
others block on the lock, then find the entry and map it. A lock rather than a barrier,
because the data is prepared before the process group exists (a bad row fails before
rendezvous, as without the cache); and the kernel drops a lock when its holder dies, so a
builder that crashes, or exits on a bad row, hands the build to the next waiter instead of
leaving a stale lock. With the default directory under --output, which every node sees (as
checkpoints need), that is one build per job where the filesystem honours flock across nodes
(local disks, NFSv4, Lustre mounted -o flock); elsewhere one per node. Where flock is refused
each process builds its own copy and the first rename wins: correct, only not once.

A build writes into `.<key>.partial-<host>-<pid>/` and renames it to <key>/ when every file is
written and synced: a crash at any point leaves no entry, and the next build of that key
removes the remains. Entries (and their empty .lock files, which must outlive every waiter)
are never evicted: delete an entry's directory to reclaim its space.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from mgft.spec.job import DataFormat, TrainSpec

from mgft_train import console, jsonrows
from mgft_train.data import EvalSet, Prepared, eval_source, prepare
from mgft_train.data.encode import EncodeStats, Example
from mgft_train.data.packing import EVAL_PACK_SEED, Pack, pack_indices
from mgft_train.data.templates import BUILTIN_CHAT_TEMPLATES
from mgft_train.errors import UsageError

OFF = "none"
DIRNAME = "data-cache"  # under --output, unless --data-cache names another directory
META = "meta.json"  # written last, before the rename: its presence marks a complete entry
VERSION = 1  # of the layout above
# Their source is part of the key: a change in how rows are read or encoded misses.
ENCODING_SOURCES = (*(Path(__file__).with_name(f"{name}.py") for name in (
    "__init__", "files", "formats", "templates", "encode", "packing", "split")),
    Path(str(jsonrows.__file__)))
LIBRARIES = ("transformers", "tokenizers", "jinja2", "datasets")
# Model files that are not the tokenizer's, left out of its hash: hashing gigabytes of
# weights on every start would cost what the cache saves.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5",
                   ".msgpack", ".onnx", ".index.json")
NO_LOCK = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})


def directory(spec: TrainSpec) -> Path | None:
    """Where entries live, or None with --data-cache none."""
    if spec.data_cache == OFF:
        return None
    return Path(spec.data_cache) if spec.data_cache else Path(spec.output) / DIRNAME


def load(spec: TrainSpec, tokenizer: Any, rank: int = 0) -> Prepared:
    """`prepare(spec, tokenizer)`, from the cache (built here if missing); equal to it in
    every example, pack and count. `.cache` says what happened: "hit" (found), "waited"
    (built by another process while this one waited), "built" or "off", and the seconds
    taken from here until the data was ready."""
    start = time.perf_counter()
    root = directory(spec)
    if root is None:
        data = prepare(spec, tokenizer)
        return dataclasses.replace(data, cache={"result": "off", "seconds": _since(start)})
    key, inputs = key_of(spec, tokenizer)
    entry = root / key
    result = "hit"
    if not (entry / META).is_file():
        created = _make_dir(root)
        lock = root / f"{key}.lock"
        try:
            with _locked(lock):
                if (entry / META).is_file():
                    result = "waited"
                else:
                    result = _build(spec, tokenizer, entry, inputs, rank)
        except UsageError:  # bad data: leave --output as it was, as without the cache
            _remove(lock, created)
            raise
    data = read(entry, spec)
    record = {"result": result, "seconds": _since(start), "dir": str(entry),
              "built_by_rank": data.cache["built_by_rank"] if data.cache else None}
    return dataclasses.replace(data, cache=record)


def key_of(spec: TrainSpec, tokenizer: Any) -> tuple[str, dict[str, Any]]:
    """The entry's name, and what it was hashed from (kept in meta.json, for a reader
    wondering why two runs did not share an entry)."""
    inputs = {
        "version": VERSION,
        "code": _digest(ENCODING_SOURCES),
        "dataset": _path_digest(Path(spec.dataset)),
        "eval_dataset": _path_digest(Path(spec.eval_dataset)) if spec.eval_dataset else None,
        "tokenizer": tokenizer_digest(spec.model, tokenizer),
        "chat_template": _template_input(spec.chat_template),
        "data_format": spec.data_format.value,
        "seq_len": spec.seq_len,
        "overlong": spec.overlong.value,
        "train_on_prompt": spec.train_on_prompt,
        "packing": spec.packing,
        "eval_split": spec.eval_split,
        "seed": spec.seed if spec.packing or spec.eval_split is not None else None,
        "libraries": {name: _version(name) for name in LIBRARIES},
    }
    text = json.dumps(inputs, sort_keys=True).encode()
    return hashlib.sha256(text).hexdigest()[:32], inputs


def tokenizer_digest(model_dir: str, tokenizer: Any) -> str:
    """The model directory's files bar the weights (tokenizer.json, tokenizer_config.json with
    its chat template, vocab and merges files, ...), plus what loading it set (a pad token)."""
    path = Path(model_dir)
    found = [f for f in path.iterdir() if f.is_file() and not f.name.endswith(WEIGHT_SUFFIXES)]
    extra = path / "additional_chat_templates"
    if extra.is_dir():
        found += [f for f in extra.rglob("*") if f.is_file()]
    state = [type(tokenizer).__name__, tokenizer.bos_token_id, tokenizer.eos_token_id,
             tokenizer.pad_token_id, len(tokenizer)]
    return _digest(sorted(found), base=path, extra=json.dumps(state))


def read(entry: Path, spec: TrainSpec) -> Prepared:
    """A complete entry, its arrays memory-mapped; `source`s are named from `spec` (another
    run may have built it from a copy elsewhere)."""
    meta = json.loads((entry / META).read_text(encoding="utf-8"))
    for name, size in meta["files"].items():
        actual = (entry / name).stat().st_size if (entry / name).is_file() else None
        if actual != size:
            raise UsageError("--data-cache", entry.parent,
                             f"entry {entry.name} is damaged ({name}: {actual} bytes, "
                             f"written as {size})", f"delete {entry} and rerun to rebuild it")
    train = _examples(entry, "train")
    held = None
    if meta["eval"] is not None:
        examples = _examples(entry, "eval")
        held = EvalSet(examples=examples, source=eval_source(spec),  # type: ignore[arg-type]
                       stats=EncodeStats(**meta["eval"]["stats"]),
                       packs=_packs(entry, "eval", examples, meta))
    return Prepared(examples=train, format=DataFormat(meta["format"]),  # type: ignore[arg-type]
                    source=spec.dataset, stats=EncodeStats(**meta["stats"]),
                    last_turn_only=meta["last_turn_only"], seq_len=spec.seq_len, eval=held,
                    packs=_packs(entry, "train", train, meta),
                    cache={"built_by_rank": meta["built_by"]["rank"]})


class Examples(Sequence[Example]):
    """Examples cut from memory-mapped arrays when indexed: no rank holds a Python object per
    token, and ranks on one machine share the pages."""

    def __init__(self, ids: np.ndarray, labels: np.ndarray, offsets: np.ndarray) -> None:
        self._ids, self._labels, self._offsets = ids, labels, offsets

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = _index(i, len(self))
        a, b = int(self._offsets[i]), int(self._offsets[i + 1])
        return Example(input_ids=self._ids[a:b].tolist(), labels=self._labels[a:b].tolist())


class Packs(Sequence[Pack]):
    """`packing.pack`'s packs, as the cache stores them: indices into `examples`."""

    def __init__(self, examples: Examples, order: np.ndarray, bounds: np.ndarray) -> None:
        self._examples, self._order, self._bounds = examples, order, bounds

    def __len__(self) -> int:
        return len(self._bounds) - 1

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = _index(i, len(self))
        members = self._order[int(self._bounds[i]):int(self._bounds[i + 1])]
        return tuple(self._examples[int(j)] for j in members)


def _index(i: int, n: int) -> int:
    i = int(i)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(i)
    return i


def _examples(entry: Path, name: str) -> Examples:
    return Examples(*(np.load(entry / f"{name}.{part}.npy", mmap_mode="r")
                      for part in ("ids", "labels", "offsets")))


def _packs(entry: Path, name: str, examples: Examples, meta: dict[str, Any]) -> Packs | None:
    if f"{name}.packs.npy" not in meta["files"]:
        return None
    return Packs(examples, np.load(entry / f"{name}.packs.npy", mmap_mode="r"),
                 np.load(entry / f"{name}.pack_offsets.npy", mmap_mode="r"))


def _build(spec: TrainSpec, tokenizer: Any, entry: Path, inputs: dict[str, Any],
           rank: int) -> str:
    """Called holding the entry's lock. Returns "built", or "waited" where there was no lock
    and another process renamed its copy into place first."""
    for remains in entry.parent.glob(f".{entry.name}.partial-*"):  # of a build that died
        shutil.rmtree(remains, ignore_errors=True)
    start = time.perf_counter()
    data = prepare(spec, tokenizer)  # every bad row fails here, as without the cache
    partial = entry.parent / f".{entry.name}.partial-{socket.gethostname()}-{os.getpid()}"
    try:
        partial.mkdir()
        capacity = spec.seq_len if spec.packing else None
        sizes = _write_set(partial, "train", data.examples, capacity, spec.seed)
        if data.eval is not None:
            sizes |= _write_set(partial, "eval", data.eval.examples, capacity, EVAL_PACK_SEED)
        meta = {
            "format": data.format.value,
            "stats": dataclasses.asdict(data.stats),
            "last_turn_only": data.last_turn_only,
            "eval": None if data.eval is None else {
                "stats": dataclasses.asdict(data.eval.stats)},
            "built_by": {"rank": rank, "host": socket.gethostname(), "pid": os.getpid(),
                         "seconds": _since(start), "at": time.time()},
            "key_inputs": inputs,
            "files": sizes,
        }
        _write(partial / META, json.dumps(meta, indent=1).encode())
        _sync_dir(partial)
        try:
            partial.rename(entry)
        except OSError as err:
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY) and (entry / META).is_file():
                shutil.rmtree(partial, ignore_errors=True)
                return "waited"
            raise
        _sync_dir(entry.parent)
    except OSError as err:
        shutil.rmtree(partial, ignore_errors=True)
        raise UsageError("--data-cache", entry.parent,
                         f"cannot write the data cache: {err.strerror or err}",
                         "free space there, pass a writable --data-cache DIR, or "
                         "--data-cache none") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    # From whichever rank built it (rank 0's `data:` line says only that it waited).
    console.out(f"data cache: built {entry} by rank {rank} ({len(data.examples)} samples, "
                f"{sum(sizes.values()) / 2**20:.1f} MiB) in {_since(start):.1f} s")
    return "built"


def _write_set(partial: Path, name: str, examples: Sequence[Example], capacity: int | None,
               seed: int) -> dict[str, int]:
    lengths = np.fromiter((len(e.input_ids) for e in examples), np.int64, len(examples))
    offsets = np.zeros(len(examples) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    arrays = {
        "ids": np.fromiter(itertools.chain.from_iterable(e.input_ids for e in examples),
                           np.int32, total),
        "labels": np.fromiter(itertools.chain.from_iterable(e.labels for e in examples),
                              np.int32, total),
        "offsets": offsets,
    }
    if capacity is not None:
        packs = pack_indices(lengths.tolist(), capacity, seed)
        arrays["packs"] = np.fromiter(itertools.chain.from_iterable(packs), np.int64,
                                      len(examples))
        bounds = np.zeros(len(packs) + 1, np.int64)
        np.cumsum([len(p) for p in packs], out=bounds[1:])
        arrays["pack_offsets"] = bounds
    sizes = {}
    for part, array in arrays.items():
        path = partial / f"{name}.{part}.npy"
        with open(path, "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
        sizes[path.name] = path.stat().st_size
    return sizes


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise UsageError("--data-cache", path.parent, f"cannot create {path.name} there: "
                         f"{err.strerror or err}", "pass a writable --data-cache DIR, or "
                         "--data-cache none") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:
            if err.errno not in NO_LOCK:
                raise
            console.err(f"mgft-train: data cache: {path.parent} refuses file locks "
                        f"({err.strerror}); each process builds its own copy")
        yield
    finally:
        os.close(fd)  # releases the lock


def _make_dir(root: Path) -> list[Path]:
    """Creates `root`; returns the directories it created, deepest first."""
    created = [p for p in (root, *root.parents) if not p.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError("--data-cache", root, f"cannot create it: {err.strerror or err}",
                         "pass a writable --data-cache DIR, or --data-cache none") from None
    return created


def _remove(lock: Path, created: list[Path]) -> None:
    """The lock file and the directories `_make_dir` created, where nothing else is in them.
    A process still waiting on the lock then builds under a lock of its own: on bad data it
    fails the same way."""
    lock.unlink(missing_ok=True)
    for path in created:
        try:
            path.rmdir()
        except OSError:
            return


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _path_digest(path: Path) -> str:
    """A file's bytes, or a save_to_disk directory's files (names and bytes)."""
    if path.is_dir():
        return _digest(sorted(f for f in path.rglob("*") if f.is_file()), base=path)
    return _digest([path])


def _digest(paths: Sequence[Path], base: Path | None = None,
            extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for path in paths:
        if base is not None:
            h.update(str(path.relative_to(base)).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def _template_input(name: str | None) -> str | None:
    """A built-in name stands for itself (templates.py's source is in the key); a file for its
    text. None: the tokenizer's own, in its files."""
    if name is None or name in BUILTIN_CHAT_TEMPLATES or not Path(name).is_file():
        return name
    return "file:" + _digest([Path(name)])


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 3)
