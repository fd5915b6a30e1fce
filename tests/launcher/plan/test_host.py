"""mgft.plan.host: host memory per node against hand-computed cases, `auto` skipping what the
host cannot hold, and the Slurm --mem comparison at validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from mgft.cli.main import main
from mgft.plan.arch import KNOWN
from mgft.plan.auto import resolve_auto
from mgft.plan.host import host, slurm_mem_bytes
from mgft.plan.memory import Job
from mgft.plan.pick import Budget, make_plan
from mgft.spec.build import build_spec, merge
from mgft.spec.errors import SpecError
from mgft.spec.job import Strategy, Tuning

GIB = 2**30
RUNTIME = 2 * GIB  # Assumptions.process_host_gib


def offload_extra(offload: float) -> float:
    """zero3-offload's measured overhead: 17% of the offloaded state plus 3 GiB per process
    (bench/results/host-memory-h100.json)."""
    return 0.17 * offload + 3 * GIB

L8 = KNOWN["llama-3-8b"]
P = L8.params


def test_zero3_offload_full_by_hand() -> None:
    h = host(Job(arch=L8, tuning=Tuning.FULL, gpus_per_node=4), Strategy.ZERO3_OFFLOAD)
    # per rank: bf16 weights (2) + fp32 master (4) + Adam (8) + bf16 grads (2) + fp32 grads
    # (4) = 20 bytes per parameter over 4 ranks; pinned: the weights and both gradients
    assert h.offload == 20 * P / 4 and h.pinned == 8 * P / 4
    assert h.processes == 4 and h.gather == 2 * P and h.merged == 0
    assert h.load == 2 * L8.vocab * L8.hidden  # the embedding, the largest tensor
    assert h.offload_extra == pytest.approx(offload_extra(5 * P))
    assert h.peak == pytest.approx(4 * (RUNTIME + 5 * P + offload_extra(5 * P)) + 2 * P)
    assert h.peak_moment == "save"


def test_the_issue_case_needs_more_than_128_gib() -> None:
    """8B full fine-tune, zero3-offload, one GPU: the worker was SIGKILLed on 128 GiB."""
    h = host(Job(arch=L8, tuning=Tuning.FULL, gpus_per_node=1), Strategy.ZERO3_OFFLOAD)
    assert h.peak == pytest.approx(RUNTIME + 20 * P + offload_extra(20 * P) + 2 * P)
    assert h.peak / GIB > 128


def test_lora_gathers_the_base_and_fp32_adapters() -> None:
    job = Job(arch=L8, tuning=Tuning.LORA, gpus_per_node=8)
    t = job.trainable
    for strategy in (Strategy.DDP, Strategy.FSDP):
        h = host(job, strategy)
        assert (h.offload, h.processes) == (0, 8)
        assert h.gather == 2 * P + 4 * t  # bf16 base, fp32 adapters (mixed precision)
        assert h.peak == 8 * RUNTIME + 2 * P + 4 * t
    z3 = host(job, Strategy.ZERO3)
    assert z3.gather == 2 * P + 2 * t  # DeepSpeed holds the adapters in bf16
    mp = host(job, Strategy.MP)
    assert mp.processes == 1 and mp.peak == RUNTIME + 2 * P + 4 * t


def test_qlora_save_merged_reloads_the_16_bit_base() -> None:
    job = Job(arch=L8, tuning=Tuning.QLORA, gpus_per_node=1, save_merged=True)
    assert host(job, Strategy.DDP).merged == 2 * P
    assert host(Job(arch=L8, tuning=Tuning.QLORA), Strategy.DDP).merged == 0
    nothing = host(Job(arch=L8, tuning=Tuning.FULL, save=False), Strategy.ZERO3_OFFLOAD)
    assert nothing.gather == 0
    assert nothing.peak == pytest.approx(RUNTIME + 20 * P + offload_extra(20 * P))


def test_auto_skips_a_strategy_the_host_cannot_hold() -> None:
    job = Job(arch=KNOWN["llama-3.2-1b"], tuning=Tuning.LORA, gpus_per_node=8)
    assert make_plan(job, Budget()).choice is Strategy.DDP
    # ddp: 8 processes of 2 GiB, loading or with the gather of the model; mp: one process
    plan = make_plan(job, Budget(host_memory_gib=10))
    assert plan.choice is Strategy.MP
    assert not plan.row(Strategy.DDP).host_fits and plan.row(Strategy.DDP).fits
    arch = job.arch
    save = 8 * RUNTIME + 2 * arch.params + 4 * job.trainable
    load = 8 * (RUNTIME + 2 * arch.vocab * arch.hidden)  # each rank's embedding in flight
    ddp = max(save, load) / GIB
    assert f"over the 10 GiB of host memory: ddp ({ddp:.1f} GiB per node)" in plan.reason


def test_auto_refuses_when_nothing_fits_the_host() -> None:
    job = Job(arch=L8, tuning=Tuning.FULL, checkpointing=True)  # only offload fits 80 GiB
    assert make_plan(job, Budget()).choice is Strategy.ZERO3_OFFLOAD
    plan = make_plan(job, Budget(host_memory_gib=128))
    assert plan.choice is None
    assert plan.reason.startswith("nothing that fits 70.5 GiB per GPU fits 128 GiB of host "
                                  "memory per node: the smallest, zero3-offload, needs 195.0")


SLURM = {"backend": "slurm", "train.model": "/cluster/models/l8", "train.dataset": "/d.jsonl",
         "plan.arch": "llama-3-8b", "train.tuning": "full", "resources.gpus": 1}


def test_slurm_auto_sizes_the_host_with_mem() -> None:
    flags = SLURM | {"train.strategy": "auto", "train.activation_checkpointing": True}
    assert build_spec(merge({}, flags, []),
                      resolve_auto=resolve_auto).train.strategy is Strategy.ZERO3_OFFLOAD
    with pytest.raises(SpecError, match="fits 128 GiB of host memory per node"):
        build_spec(merge({}, flags | {"slurm.mem": "128G"}, []), resolve_auto=resolve_auto)


def test_slurm_mem_below_the_plan_is_refused_at_render() -> None:
    args = ["render", "--backend", "slurm", "--model", "/cluster/models/l8", "--dataset",
            "/d.jsonl", "--arch", "llama-3-8b", "--tuning", "full", "--strategy",
            "zero3-offload", "--gpus", "1"]
    result = CliRunner().invoke(main, [*args, "--mem", "128G"])
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line
    assert line.startswith("mgft: error: --strategy zero3-offload: plans 195.0 GiB of host "
                           "memory per node (1 processes, peak at save) and --mem 128G is "
                           "128.0 GiB; use fewer processes per node")
    for mem in ("256G", "0"):  # enough, and all of the node's (unknown here)
        assert CliRunner().invoke(main, [*args, "--mem", mem]).exit_code == 0


def test_slurm_without_a_known_shape_is_not_checked() -> None:
    flags = {k: v for k, v in SLURM.items() if k != "plan.arch"}
    build_spec(merge({}, flags | {"train.strategy": "zero3-offload", "slurm.mem": "1G"}, []))


@pytest.mark.parametrize("mem,expected", [("64G", 64 * GIB), ("512", 512 * 2**20),
                                          ("2T", 2 * 2**40), ("0", None), (None, None)])
def test_slurm_mem_units(mem: str | None, expected: int | None) -> None:
    assert slurm_mem_bytes(mem) == expected


def test_plan_json_gives_host_terms() -> None:
    result = CliRunner().invoke(main, ["plan", "--model", "llama-3-8b", "--tuning", "full",
                                       "--host-memory", "128", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["budget"]["host_memory_gib"] == 128
    row = next(r for r in data["strategies"] if r["strategy"] == "zero3-offload")
    peak = RUNTIME + 22 * P + offload_extra(20 * P)
    assert row["host_gib"] == round(peak / GIB, 2) and not row["host_fits"]
    assert row["host_terms_gib"]["offload"] == round(20 * P / GIB, 2)
    assert row["host_terms_gib"]["offload_extra"] == round(offload_extra(20 * P) / GIB, 2)


MEASURED = Path(__file__).resolve().parents[3] / "bench/results/host-memory-h100.json"


@pytest.mark.parametrize("row", json.loads(MEASURED.read_text())["rows"],
                         ids=lambda row: row["config"])
def test_zero3_offload_within_15_percent_of_the_measured_host_memory(row) -> None:
    """Issue 18's criterion against what bench/host_memory.py measured on one H100 host (the
    largest sum of the job's resident memory, final save included); the plan's own figure
    at the time of the measurement is recorded beside it: it was 16-20% low."""
    job = Job(arch=KNOWN[row["arch"]], tuning=Tuning.FULL, micro_batch=2, seq_len=1024)
    planned = host(job, Strategy.ZERO3_OFFLOAD).peak
    assert abs(planned - row["measured_node_bytes"]) / row["measured_node_bytes"] <= 0.15
