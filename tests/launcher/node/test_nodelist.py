from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mgft.node import nodelist

from tests.slurm_cluster import Cluster

CASES = {
    "gpu[01-03,07]": ["gpu01", "gpu02", "gpu03", "gpu07"],
    "a[1-2]-ib,b3": ["a1-ib", "a2-ib", "b3"],
    "n[08-10]": ["n08", "n09", "n10"],
    "n[9-11]": ["n9", "n10", "n11"],
    "n[1-010]": [f"n{i}" for i in range(1, 11)],  # the width of lo, as Slurm pads
    "a[001-003]": ["a001", "a002", "a003"],
    "rack[1-2]-node[01-02]": ["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"],
    "x-1,y.example.org": ["x-1", "y.example.org"],
    " a , b ": ["a", "b"],
    "node[1-2],node1": ["node1", "node2", "node1"],
    "c[1,3-4]d[5]": ["c1d5", "c3d5", "c4d5"],
}
BAD = ["a[1-2", "a]1", "a[2-1]", "a[x]", "", " , ", "a[[1]]", "a[1-]", "a[-3]",
       "a[0-70000]"]


@pytest.mark.parametrize("text", CASES)
def test_tricky_lists(text: str) -> None:
    assert nodelist.expand(text) == CASES[text]
    assert nodelist.first(text) == CASES[text][0]


@pytest.mark.parametrize("text", BAD)
def test_bad_lists_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        nodelist.expand(text)


def test_command_line() -> None:
    run = [sys.executable, "-m", "mgft.node.nodelist"]
    first = subprocess.run([*run, "--first", "gpu[07-09]"], capture_output=True, text=True)
    assert first.returncode == 0 and first.stdout == "gpu07\n"
    every = subprocess.run([*run, "a[1-2]-ib,b3"], capture_output=True, text=True)
    assert every.stdout.split() == ["a1-ib", "a2-ib", "b3"]
    bad = subprocess.run([*run, "a[3-1]"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1


def _scontrol(cluster: Cluster, text: str) -> list[str]:
    return cluster.run("scontrol", "show", "hostnames", text).stdout.split()


# Slurm 22.05's scontrol refuses a suffix after the last bracket; newer hostlist parsers
# (and mgft) take it, as test_tricky_lists shows.
SCONTROL_22_REFUSES = {"a[1-2]-ib,b3"}


def test_same_as_scontrol(slurm_cluster: Cluster) -> None:
    for text, hosts in CASES.items():
        proc = slurm_cluster.run("scontrol", "show", "hostnames", text, check=False)
        if "Invalid hostlist" in proc.stderr and text in SCONTROL_22_REFUSES:
            continue
        assert proc.stdout.split() == hosts, text


_range = st.tuples(st.integers(0, 30), st.integers(0, 4), st.integers(1, 3)).map(
    lambda t: f"{t[0]:0{t[2]}d}" + (f"-{t[0] + t[1]}" if t[1] else ""))
_bracket = st.lists(_range, min_size=1, max_size=3).map(lambda rs: "[" + ",".join(rs) + "]")
_host = st.one_of(
    st.from_regex(r"[a-z]{1,4}[0-9]{0,3}", fullmatch=True),
    st.tuples(st.from_regex(r"[a-z]{1,4}-?", fullmatch=True), _bracket).map("".join),
    st.tuples(st.from_regex(r"[a-z]{1,3}", fullmatch=True), _bracket,
              st.from_regex(r"-[a-z]{1,3}", fullmatch=True), _bracket).map("".join),
)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(hosts=st.lists(_host, min_size=1, max_size=4))
def test_random_lists_match_scontrol(slurm_cluster: Cluster, hosts: list[str]) -> None:
    text = ",".join(hosts)
    assert nodelist.expand(text) == _scontrol(slurm_cluster, text)
