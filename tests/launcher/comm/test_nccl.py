"""The communication environment: layers, reasons, overrides, debug, NVLS, and one module for
every backend."""

from __future__ import annotations

import shlex
from itertools import product

import pytest
import yaml
from mgft.comm import nccl
from mgft.comm.fabric import PRESETS
from mgft.render.local import local_command
from mgft.render.pytorchjob import render_pytorchjob
from mgft.render.sbatch import render_sbatch
from mgft.spec.errors import SpecError
from mgft.spec.job import Fabric

from tests.launcher.render.cases import IMAGE, spec


def env_of(job) -> dict[str, str]:
    return {v.name: v.value for v in nccl.comm_env(job)}


def test_gpu_defaults_detect_failures_and_leave_the_fabric_to_the_job() -> None:
    env = env_of(spec(**{"resources.gpus": 4}))
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "3"
    assert env["MGFT_FABRIC"] == "auto" and env["MGFT_DIST_TIMEOUT"] == "600"
    assert not any(k.startswith("NCCL_P2P") or k.startswith("NCCL_IB") for k in env)


def test_cpu_jobs_get_no_nccl_preset_but_the_timeout() -> None:
    env = env_of(spec(**{"resources.gpus": 0}))
    assert env == {"OMP_NUM_THREADS": "1", "MGFT_DIST_TIMEOUT": "600"}


@pytest.mark.parametrize("fabric", list(Fabric))
def test_every_preset_variable_has_a_reason(fabric: Fabric) -> None:
    preset = PRESETS[fabric]
    assert preset.summary
    for var in preset.static:
        assert var.name and var.value and len(var.why) > 15, var
    for item in preset.at_start:
        assert item.name.startswith("NCCL_") and len(item.how) > 15


def test_every_rendered_variable_has_a_reason_and_a_source() -> None:
    job = spec(**{"resources.gpus": 8, "resources.nodes": 2, "backend": "slurm",
                  "dist.fabric": "infiniband", "dist.debug": True,
                  "dist.nccl.NCCL_IB_TIMEOUT": "20"})
    settings = nccl.settings(job)
    assert all(s.var.why and s.source for s in settings)
    assert len({s.var.name for s in settings}) == len(settings), "one row per variable"


@pytest.mark.parametrize("fabric,debug", list(product(Fabric, [False, True])))
def test_no_preset_or_debug_setting_turns_nvls_on(fabric: Fabric, debug: bool) -> None:
    job = spec(**{"resources.gpus": 4, "dist.fabric": fabric.value, "dist.debug": debug})
    assert "NCCL_NVLS_ENABLE" not in env_of(job)


def test_user_nccl_overrides_win_over_preset_and_debug() -> None:
    job = spec(**{"resources.gpus": 8, "resources.nodes": 2, "backend": "slurm",
                  "dist.fabric": "ethernet", "dist.debug": True,
                  "dist.nccl.NCCL_SOCKET_NTHREADS": "8", "dist.nccl.NCCL_DEBUG": "WARN"})
    by_name = {s.var.name: s for s in nccl.settings(job)}
    assert by_name["NCCL_SOCKET_NTHREADS"].var.value == "8"
    assert by_name["NCCL_SOCKET_NTHREADS"].source == "--nccl"
    assert by_name["NCCL_DEBUG"].var.value == "WARN"
    assert by_name["NCCL_NSOCKS_PERTHREAD"].source == "--fabric ethernet"


def test_debug_dist_turns_on_logs_desync_reports_and_a_short_timeout() -> None:
    env = env_of(spec(**{"resources.gpus": 2, "dist.debug": True}))
    assert env["NCCL_DEBUG"] == "INFO" and env["NCCL_DEBUG_SUBSYS"]
    assert env["TORCH_DISTRIBUTED_DEBUG"] == "DETAIL"
    assert env["TORCH_NCCL_DESYNC_DEBUG"] == "1" and env["TORCH_NCCL_DUMP_ON_TIMEOUT"] == "1"
    assert int(env["TORCH_NCCL_TRACE_BUFFER_SIZE"]) > 0
    assert env["MGFT_DIST_TIMEOUT"] == "120"
    explicit = env_of(spec(**{"resources.gpus": 2, "dist.debug": True, "dist.timeout": 300}))
    assert explicit["MGFT_DIST_TIMEOUT"] == "300"
    cpu = env_of(spec(**{"resources.gpus": 0, "dist.debug": True}))
    assert cpu["TORCH_DISTRIBUTED_DEBUG"] == "DETAIL" and "NCCL_DEBUG" not in cpu


def test_one_module_gives_every_backend_the_same_environment() -> None:
    common = {"resources.gpus": 4, "resources.nodes": 1, "dist.fabric": "nvlink",
              "dist.debug": True, "dist.nccl.NCCL_MIN_NCHANNELS": "8"}
    want = env_of(spec(**common))
    local = local_command(spec(**common)).env
    sbatch = render_sbatch(spec(**common, backend="slurm"))
    exported = dict(shlex.split(line)[1].split("=", 1) for line in sbatch.splitlines()
                    if line.startswith("export "))
    job = yaml.safe_load(render_pytorchjob(spec(**common, backend="k8s", image=IMAGE)))
    container = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    k8s = {e["name"]: e["value"] for e in container["env"]}
    for rendered in (local, exported, k8s):
        assert {k: rendered[k] for k in want} == want


def test_check_environment_respects_nvls_turned_off_by_the_host() -> None:
    asked = spec(**{"resources.gpus": 4, "dist.nccl.NCCL_NVLS_ENABLE": "1"})
    with pytest.raises(SpecError, match=r"^--nccl NCCL_NVLS_ENABLE 1: this environment sets "
                                        r"NCCL_NVLS_ENABLE=0"):
        nccl.check_environment(asked, {"NCCL_NVLS_ENABLE": "0"})
    via_env = spec(**{"resources.gpus": 4, "env.NCCL_NVLS_ENABLE": "1"})
    with pytest.raises(SpecError):
        nccl.check_environment(via_env, {"NCCL_NVLS_ENABLE": "0"})
    nccl.check_environment(asked, {})  # asked for, and the host does not forbid it
    nccl.check_environment(spec(**{"resources.gpus": 4}), {"NCCL_NVLS_ENABLE": "0"})


@pytest.mark.parametrize("key,expected", [
    ("NCCL_SOCKET_IFACE", "not a known NCCL variable (did you mean NCCL_SOCKET_IFNAME?)"),
    ("NCCL_ASYNC_ERROR_HANDLING", "an old name; use TORCH_NCCL_ASYNC_ERROR_HANDLING"),
    ("NCCL_FROBNICATE", "not a known NCCL variable; passed through as given"),
    ("NCCL_IB_HCA", None),
    ("TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC", None),
    ("FI_EFA_USE_HUGE_PAGE", None),  # libfabric's own, unchecked
    ("NCCL_VERSION", None),  # NVIDIA's container images set it; seen on the H200 machines
])
def test_unknown_keys_warn(key: str, expected: str | None) -> None:
    warning = nccl.unknown_key_warning(key)
    assert (warning is None) if expected is None else (expected in warning)


def test_warnings_cover_nccl_names_set_through_env_too() -> None:
    job = spec(**{"resources.gpus": 2, "dist.nccl.NCCL_IB_HCAS": "mlx5",
                  "env.NCCL_SOCKET_IFACE": "eth0", "env.WANDB_MODE": "offline"})
    found = nccl.warnings(job)
    assert len(found) == 2 and "NCCL_IB_HCA?" in found[0] and "NCCL_SOCKET_IFNAME?" in found[1]


@pytest.mark.parametrize("flags,needle", [
    ({"dist.nccl.WANDB_MODE": "offline"}, "--nccl WANDB_MODE offline: not an NCCL"),
    ({"dist.nccl.NCCL_NVLS_ENABLE": "yes"}, "--nccl NCCL_NVLS_ENABLE yes: not one of 0, 1, 2"),
    ({"dist.nccl.NCCL BAD": "1"}, "not a valid environment variable name"),
    ({"resources.gpus": 0, "dist.fabric": "infiniband"}, "--fabric infiniband: a preset for NCCL"),
])
def test_bad_dist_options_name_the_flag(flags: dict, needle: str) -> None:
    with pytest.raises(SpecError) as err:
        spec(**{"resources.gpus": 2, **flags})
    assert needle in str(err.value)


def test_explain_adds_what_the_job_fills_in_at_start() -> None:
    rows = nccl.explain(spec(**{"resources.gpus": 8, "resources.nodes": 2, "backend": "slurm",
                                "dist.fabric": "roce"}))
    at_start = {r.var.name for r in rows if r.var.value == "at start"}
    assert at_start == {"NCCL_IB_HCA", "NCCL_IB_GID_INDEX", "NCCL_SOCKET_IFNAME"}
    auto = nccl.explain(spec(**{"resources.gpus": 8}))
    assert auto[-1].var.name == "(preset)" and "nvlink" in auto[-1].source
