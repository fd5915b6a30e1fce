"""bench/two_node.py's CPU plumbing (--tiny): two node processes from the rendered
PyTorchJob, joined by mgft-node's rendezvous into one 4-rank job."""

from __future__ import annotations

import json

import two_node


def test_two_nodes_of_two_ranks_train_as_one_job(tmp_path, monkeypatch):
    assert two_node.main(["--tiny", "--out", str(tmp_path), "--steps", "3"]) == 0
    result = json.loads((tmp_path / "two-node.json").read_text())
    assert result["exit"] == [0, 0]
    assert (result["world_size"], result["backend"], result["strategy"]) == (4, "gloo", "ddp")
    assert len(result["losses"]) == 3
    for rank in (0, 1):
        assert f"mgft-node: node {rank} of 2" in (tmp_path / f"node{rank}.log").read_text()
