"""Shards on disk: torn writes, what counts as done, the merge and the settings check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mgft_train.errors import UsageError
from mgft_train.generate import store
from mgft_train.generate.prompts import Prompt


def result(index: int, text: str = "x") -> dict:
    return {"index": index, "completion": text, "finish_reason": "stop", "prompt_tokens": 3,
            "completion_tokens": 1}


def prompts(n: int) -> list[Prompt]:
    return [Prompt(index=i, row={"prompt": f"p{i}"}, text=f"p{i}", ids=[1, 2, 3])
            for i in range(n)]


def test_appends_survive_and_a_torn_tail_is_ignored_then_cut(tmp_path: Path) -> None:
    writer = store.ShardWriter(tmp_path, 1)
    writer.append([result(1), result(3)])
    writer.close()
    path = store.shard_path(tmp_path, 1)
    with open(path, "a") as f:
        f.write('{"index": 5, "completion": "half')  # a crash mid-write
    assert sorted(store.read_done(tmp_path)) == [1, 3]
    writer = store.ShardWriter(tmp_path, 1)  # cuts the torn line before appending
    writer.append([result(5)])
    writer.close()
    assert sorted(store.read_done(tmp_path)) == [1, 3, 5]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_done_comes_from_every_shard_of_any_world_size(tmp_path: Path) -> None:
    for rank, indices in {0: [0, 4], 1: [1, 5], 2: [2], 3: [3]}.items():
        writer = store.ShardWriter(tmp_path, rank)
        writer.append(result(i) for i in indices)
        writer.close()
    store.shard_path(tmp_path, 9).write_text('not json\n{"index": 6}\n')  # no result fields
    assert sorted(store.read_done(tmp_path)) == [0, 1, 2, 3, 4, 5]


def test_merge_writes_input_order_and_refuses_gaps(tmp_path: Path) -> None:
    writer = store.ShardWriter(tmp_path, 0)
    writer.append([result(2, "c"), result(0, "a")])
    writer.close()
    with pytest.raises(RuntimeError, match="1 prompts have no result"):
        store.merge(tmp_path, prompts(3))
    assert not (tmp_path / store.RESULT).exists()
    writer = store.ShardWriter(tmp_path, 1)
    writer.append([result(1, "b")])
    writer.close()
    lines = [json.loads(line) for line in store.merge(tmp_path, prompts(3)).open()]
    assert [(r["index"], r["completion"], r["input"]) for r in lines] == [
        (0, "a", {"prompt": "p0"}), (1, "b", {"prompt": "p1"}), (2, "c", {"prompt": "p2"})]


def test_other_settings_are_refused_naming_what_changed(tmp_path: Path) -> None:
    settings = {"model": "/m", "temperature": 0.0, "max_new_tokens": 8}
    store.check_settings(tmp_path, settings)  # nothing yet: fine
    store.write_settings(tmp_path, settings)
    store.check_settings(tmp_path, dict(settings))
    with pytest.raises(UsageError, match="temperature 0.0 then, 0.7 now"):
        store.check_settings(tmp_path, settings | {"temperature": 0.7})
    store.write_settings(tmp_path, settings | {"temperature": 0.7})  # never overwrites
    assert json.loads((tmp_path / "shards" / "settings.json").read_text()) == settings
