"""mgft-node: the torchrun line for what each operator injects, and the bounded wait."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from mgft.contract import exitcodes
from mgft.contract.env import OperatorEnv
from mgft.node import k8s as k8s_entry
from mgft.node.k8s import NodeError, Options, parse, plan, wait_for_master

OPTS = Options(nproc_per_node=4, master_wait=30, trainer=("-m", "mgft_train", "--model=m"))
# Exactly what each operator injects (training-operator v1.9.x envvar.go; Trainer v2.3's torch
# plugin; as tests/k8s_operators.py re-implements them).
V1_WORKER = {"PYTHONUNBUFFERED": "1", "MASTER_PORT": "23456", "MASTER_ADDR": "job-master-0",
             "PET_MASTER_PORT": "23456", "PET_MASTER_ADDR": "job-master-0", "WORLD_SIZE": "8",
             "RANK": "1", "PET_NODE_RANK": "1", "PET_NPROC_PER_NODE": "4", "PET_NNODES": "2"}
V2_NODE1 = {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "4", "PET_NODE_RANK": "1",
            "PET_MASTER_ADDR": "job-node-0-0.job", "PET_MASTER_PORT": "29500"}
V1_ELASTIC = {"PET_RDZV_ENDPOINT": "job-worker-0:23456", "PET_RDZV_BACKEND": "c10d",
              "PET_NNODES": "2:4", "PET_MAX_RESTARTS": "3", "PET_NPROC_PER_NODE": "4"}


def test_v1_worker_gets_a_static_rendezvous_and_waits_for_the_master_port() -> None:
    p = plan(OperatorEnv.from_env(V1_WORKER), OPTS, "job", "job-worker-0")
    assert p.torchrun_args == ["--nnodes=2", "--nproc-per-node=4", "--node-rank=1",
                               "--master-addr=job-master-0", "--master-port=23456"]
    assert (p.wait_host, p.wait_port, p.connect) == ("job-master-0", 23456, True)


def test_v1_master_waits_for_its_own_name_only() -> None:
    env = V1_WORKER | {"RANK": "0", "PET_NODE_RANK": "0"}
    p = plan(OperatorEnv.from_env(env), OPTS, "job", "job-master-0")
    assert "--node-rank=0" in p.torchrun_args and p.connect is False
    assert p.wait_host == "job-master-0"


def test_v1_without_pet_falls_back_to_master_addr_and_rank() -> None:
    """Operators before PET_MASTER_*/PET_NODE_RANK set only MASTER_ADDR/PORT and RANK."""
    env = {k: v for k, v in V1_WORKER.items()
           if k not in ("PET_MASTER_ADDR", "PET_MASTER_PORT", "PET_NODE_RANK")}
    p = plan(OperatorEnv.from_env(env), OPTS, "job", "job-worker-0")
    assert p.torchrun_args[2:] == ["--node-rank=1", "--master-addr=job-master-0",
                                   "--master-port=23456"]


def test_v2_node_uses_pet_only() -> None:
    p = plan(OperatorEnv.from_env(V2_NODE1), OPTS, "job", "job-node-0-1")
    assert p.torchrun_args == ["--nnodes=2", "--nproc-per-node=4", "--node-rank=1",
                               "--master-addr=job-node-0-0.job", "--master-port=29500"]
    assert p.connect is True


@pytest.mark.parametrize("hostname,connect", [("job-worker-0", False), ("job-worker-1", True)])
def test_elastic_uses_c10d_and_only_the_store_host_skips_the_port_wait(hostname: str,
                                                                      connect: bool) -> None:
    p = plan(OperatorEnv.from_env(V1_ELASTIC), OPTS, "job", hostname)
    assert p.torchrun_args == ["--nnodes=2:4", "--nproc-per-node=4", "--rdzv-backend=c10d",
                               "--rdzv-endpoint=job-worker-0:23456", "--rdzv-id=job",
                               "--max-restarts=3"]
    assert (p.wait_host, p.wait_port, p.connect) == ("job-worker-0", 23456, connect)


def test_one_node_is_standalone_with_no_wait() -> None:
    env = {"PET_NNODES": "1", "PET_NPROC_PER_NODE": "4", "PET_MASTER_ADDR": "job-master-0",
           "PET_MASTER_PORT": "23456", "PET_NODE_RANK": "0"}
    p = plan(OperatorEnv.from_env(env), OPTS, "job", "job-master-0")
    assert p.torchrun_args == ["--standalone", "--nnodes=1", "--nproc-per-node=4"]
    assert p.wait_host is None


def test_missing_nproc_falls_back_to_the_rendered_one() -> None:
    env = {k: v for k, v in V2_NODE1.items() if k != "PET_NPROC_PER_NODE"}
    assert "--nproc-per-node=4" in plan(OperatorEnv.from_env(env), OPTS, "j", "h").torchrun_args


@pytest.mark.parametrize("env,needle", [
    ({}, "PET_NNODES is not set"),
    ({"PET_NNODES": "2"}, "PET_MASTER_ADDR, PET_MASTER_PORT, PET_NODE_RANK not set"),
    ({"PET_RDZV_ENDPOINT": "nohostport", "PET_NNODES": "2"}, "need host:port"),
])
def test_not_a_kubeflow_pod_is_a_usage_error(env: dict, needle: str) -> None:
    with pytest.raises(NodeError) as err:
        plan(OperatorEnv.from_env(env), OPTS, "job", "h")
    assert err.value.code == exitcodes.USAGE and needle in str(err.value)


def test_operator_env_round_trip_and_bad_numbers() -> None:
    op = OperatorEnv.from_env(V1_ELASTIC | V2_NODE1)
    assert OperatorEnv.from_env(op.to_env()) == op
    with pytest.raises(ValueError, match="PET_NODE_RANK='x' is not a whole number"):
        OperatorEnv.from_env({"PET_NODE_RANK": "x"})


@pytest.mark.parametrize("argv,needle", [
    (["-m", "x"], "missing `--`"),
    (["--"], "nothing after"),
    (["--bogus=1", "--", "-m", "x"], "unknown option"),
    (["--master-wait=soon", "--", "-m", "x"], "take numbers"),
])
def test_parse_errors(argv: list[str], needle: str) -> None:
    with pytest.raises(NodeError, match=needle):
        parse(argv)


def test_parse() -> None:
    opts = parse(["--nproc-per-node=2", "--master-wait=5", "--workdir=/w", "--", "-m", "t", "--"])
    assert opts == Options(nproc_per_node=2, master_wait=5.0, workdir="/w",
                           trainer=("-m", "t", "--"))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_gives_up_at_the_deadline_naming_what_failed(monkeypatch) -> None:
    monkeypatch.setattr(k8s_entry, "NOTE_EVERY_S", 2.0)
    clock, notes = FakeClock(), []
    with pytest.raises(NodeError) as err:
        wait_for_master("no-such-master.invalid", 23456, True, 5, notes.append, clock,
                        clock.sleep)
    assert err.value.code == exitcodes.FAILED
    assert "gave up after 5 s waiting for the master no-such-master.invalid:23456" in str(
        err.value)
    assert "does not resolve" in str(err.value)
    assert len(notes) == 2 and "still waiting" in notes[0]  # at 2 s and 4 s


def test_wait_for_a_closed_port_reports_refused_and_an_open_one_returns() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    clock = FakeClock()
    with pytest.raises(NodeError, match="does not accept connections"):
        wait_for_master("127.0.0.1", closed, True, 3, lambda _: None, clock, clock.sleep)
    wait_for_master("127.0.0.1", closed, False, 3, lambda _: None, clock, clock.sleep)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        wait_for_master("127.0.0.1", server.getsockname()[1], True, 3, lambda _: None)


def test_outside_a_pod_the_command_says_so_and_exits_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "mgft.node.k8s", "--", "-m", "mgft_train"],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert proc.stderr.startswith("mgft-node: error: PET_NNODES is not set")
    assert proc.stderr.count("\n") == 1
