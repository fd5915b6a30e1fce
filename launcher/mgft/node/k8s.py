"""mgft-node: what the container of every Kubeflow pod runs before the trainer.

    mgft-node [--nproc-per-node N] [--master-wait S] [--workdir DIR] -- -m mgft_train ...

It reads what the operator injected (`mgft.contract.env.OperatorEnv`: PET_* from both
training-operator v1 and Trainer v2, plus v1's MASTER_ADDR/MASTER_PORT/RANK), waits until the
master's DNS name resolves and, on the other nodes, until its port accepts connections, then
execs `torchrun` with an explicit rendezvous. A master that never comes up is an error after
`--master-wait` seconds naming the address and what failed, not a silent hang until torch's
own 15-minute timeout. Torch-free: it only looks at the environment and the network.

Exit codes: torchrun's own once it runs; 2 when the pod environment is not a Kubeflow one;
1 when the master did not come up in time (restartPolicy OnFailure then retries the pod).
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mgft.contract import exitcodes
from mgft.contract.env import LaunchEnv, OperatorEnv
from mgft.node.torchrun import TorchrunNotFound, torchrun_path

PROG = "mgft-node"
NOTE_EVERY_S = 30.0


class NodeError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, kw_only=True, slots=True)
class Options:
    nproc_per_node: int = 1  # used only when the operator does not say
    master_wait: float = 600.0
    workdir: str | None = None
    trainer: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """torchrun's rendezvous flags, and what to wait for before starting it."""

    torchrun_args: list[str]
    describe: str
    wait_host: str | None = None
    wait_port: int | None = None
    connect: bool = False  # also wait for the port (nodes that do not host the store)


def parse(argv: Sequence[str]) -> Options:
    argv = list(argv)
    if "--" not in argv:
        raise NodeError(exitcodes.USAGE, "missing `--` before the trainer's arguments; "
                        "usage: mgft-node [--nproc-per-node N] [--master-wait S] "
                        "[--workdir DIR] -- -m mgft_train ...")
    cut = argv.index("--")
    own, trainer = argv[:cut], argv[cut + 1:]
    if not trainer:
        raise NodeError(exitcodes.USAGE, "nothing after `--`; pass e.g. -m mgft_train ...")
    values: dict[str, str] = {}
    for word in own:
        flag, sep, value = word.partition("=")
        if flag not in ("--nproc-per-node", "--master-wait", "--workdir") or not sep:
            raise NodeError(exitcodes.USAGE, f"unknown option {word!r}; use "
                            "--nproc-per-node=N, --master-wait=S or --workdir=DIR")
        values[flag] = value
    try:
        nproc = int(values.get("--nproc-per-node", "1"))
        wait = float(values.get("--master-wait", "600"))
    except ValueError as err:
        raise NodeError(exitcodes.USAGE, f"{err}; --nproc-per-node and --master-wait take "
                        "numbers") from None
    return Options(nproc_per_node=nproc, master_wait=wait, workdir=values.get("--workdir"),
                   trainer=tuple(trainer))


def plan(op: OperatorEnv, opts: Options, job_name: str, hostname: str) -> Plan:
    """The torchrun invocation for what the operator injected."""
    nproc = op.nproc_per_node or str(opts.nproc_per_node)
    if op.rdzv_endpoint:  # v1 with an elasticPolicy: c10d rendezvous, ranks assigned by torch
        host, _, port = op.rdzv_endpoint.rpartition(":")
        if not host or not port.isdigit() or not op.nnodes:
            raise NodeError(exitcodes.USAGE, f"PET_RDZV_ENDPOINT={op.rdzv_endpoint!r} with "
                            f"PET_NNODES={op.nnodes!r}: need host:port and a node count")
        args = [f"--nnodes={op.nnodes}", f"--nproc-per-node={nproc}",
                f"--rdzv-backend={op.rdzv_backend or 'c10d'}",
                f"--rdzv-endpoint={op.rdzv_endpoint}", f"--rdzv-id={op.rdzv_id or job_name}"]
        if op.rdzv_conf:
            args.append(f"--rdzv-conf={op.rdzv_conf}")
        if op.max_restarts is not None:
            args.append(f"--max-restarts={op.max_restarts}")
        # The pod whose name is the endpoint's host (worker 0) hosts the store; torch decides
        # the same way, from the hostname.
        hosts_store = host.split(".")[0] == hostname.split(".")[0]
        return Plan(torchrun_args=args, wait_host=host, wait_port=int(port),
                    connect=not hosts_store,
                    describe=f"elastic, {op.nnodes} nodes, rendezvous at {op.rdzv_endpoint}")
    if op.nnodes is None:
        raise NodeError(exitcodes.USAGE, "PET_NNODES is not set: mgft-node runs in the pods "
                        "of a Kubeflow PyTorchJob or TrainJob, whose operator sets it; on one "
                        "machine use `mgft submit --backend local`")
    if op.nnodes == "1":  # no other node to meet: no DNS, no fixed port
        return Plan(torchrun_args=["--standalone", "--nnodes=1", f"--nproc-per-node={nproc}"],
                    describe="1 node")
    missing = [name for name, value in (("PET_MASTER_ADDR", op.master_addr),
                                        ("PET_MASTER_PORT", op.master_port),
                                        ("PET_NODE_RANK", op.node_rank)) if value is None]
    if missing:
        raise NodeError(exitcodes.USAGE, f"{', '.join(missing)} not set with "
                        f"PET_NNODES={op.nnodes}: the operator did not describe the master; "
                        "is this pod part of a PyTorchJob with a Master, or a TrainJob?")
    assert op.master_addr is not None and op.master_port is not None
    args = [f"--nnodes={op.nnodes}", f"--nproc-per-node={nproc}", f"--node-rank={op.node_rank}",
            f"--master-addr={op.master_addr}", f"--master-port={op.master_port}"]
    return Plan(torchrun_args=args, wait_host=op.master_addr, wait_port=op.master_port,
                connect=op.node_rank != 0,
                describe=f"node {op.node_rank} of {op.nnodes}, master "
                         f"{op.master_addr}:{op.master_port}")


def wait_for_master(host: str, port: int, connect: bool, deadline_s: float,
                    log: Callable[[str], None],
                    clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> None:
    """Until `host` resolves (and accepts connections on `port` when `connect`), or fail."""
    start = last_note = clock()
    while True:
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            if not connect:
                return
            remaining = max(0.5, min(5.0, deadline_s - (clock() - start)))
            with socket.create_connection((host, port), timeout=remaining):
                return
        except socket.gaierror as err:
            reason = f"the name {host} does not resolve ({err.strerror})"
        except OSError as err:
            reason = f"{host}:{port} does not accept connections ({err.strerror or err})"
        waited = clock() - start
        if waited >= deadline_s:
            raise NodeError(exitcodes.FAILED, f"gave up after {waited:.0f} s waiting for the "
                            f"master {host}:{port}: {reason}; check that the master pod is "
                            "running (mgft status <job> --backend k8s), or raise "
                            "k8s.master_wait if its image pulls slowly")
        if clock() - last_note >= NOTE_EVERY_S:
            log(f"{PROG}: still waiting for the master {host}:{port}: {reason}")
            last_note = clock()
        sleep(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        opts = parse(sys.argv[1:] if argv is None else argv)
        try:
            op = OperatorEnv.from_env()
        except ValueError as err:
            raise NodeError(exitcodes.USAGE, str(err)) from None
        the_plan = plan(op, opts, LaunchEnv.from_env().job_name, socket.gethostname())
        if the_plan.wait_host is not None and the_plan.wait_port is not None:
            wait_for_master(the_plan.wait_host, the_plan.wait_port, the_plan.connect,
                            opts.master_wait, log)
        if opts.workdir is not None:
            try:
                os.chdir(opts.workdir)
            except OSError as err:
                raise NodeError(exitcodes.USAGE, f"--workdir {opts.workdir}: {err.strerror}; "
                                "is the claim mounted there?") from None
        argv_out = [torchrun_path(), *the_plan.torchrun_args, *opts.trainer]
    except TorchrunNotFound as err:
        log(f"{PROG}: error: {err}")
        return exitcodes.USAGE
    except NodeError as err:
        log(f"{PROG}: error: {err}")
        return err.code
    log(f"{PROG}: {the_plan.describe}: {shlex.join(['torchrun', *argv_out[1:]])}")
    os.execv(argv_out[0], argv_out)
    return exitcodes.FAILED  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main())
