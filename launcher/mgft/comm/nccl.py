"""The communication environment of every trainer process, with the reason for each variable.

One module for every backend: `contract.process.job_env` renders `comm_env(spec)` into the job
(PyTorchJob, TrainJob, sbatch, local torchrun), `mgft nccl explain` prints `explain(spec)`.
The layers, later ones winning:

1. failure detection and CPU threads (every job);
2. the fabric preset's fixed variables (`mgft.comm.fabric.PRESETS`; `auto` has none: the job
   detects its fabric at start and fills in only what the environment does not already set);
3. `--debug-dist`;
4. the user's `--nccl KEY=VALUE`.

NCCL_NVLS_ENABLE is in no layer: mgft never turns NVLink SHARP / multicast on unless the user
asks with `--nccl NCCL_NVLS_ENABLE=1`, and an environment that turns it off keeps it off.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from mgft.comm.fabric import PRESETS, at_start_settings
from mgft.comm.variables import EnvVar, Setting
from mgft.contract.env import COMM_PREFIXES, DEFAULT_DIST_TIMEOUT, NCCL_NVLS_ENABLE, CommEnv
from mgft.spec.errors import SpecError
from mgft.spec.job import JobSpec

DEBUG_TIMEOUT_S = 120


def dist_timeout(spec: JobSpec) -> int:
    if spec.dist.timeout is not None:
        return spec.dist.timeout
    return DEBUG_TIMEOUT_S if spec.dist.debug else DEFAULT_DIST_TIMEOUT


def _base(spec: JobSpec) -> list[EnvVar]:
    comm = CommEnv(fabric=spec.dist.fabric.value, timeout_s=dist_timeout(spec),
                   preflight=spec.dist.preflight).to_env()
    whys = {
        "MGFT_FABRIC": "the job resolves this preset at start (auto: detects the interconnect "
                       "there, not on the submitting machine)",
        "MGFT_DIST_TIMEOUT": "seconds a collective waits for a missing rank before the job "
                             "fails, instead of torch's 10-30 minute defaults",
        "MGFT_PREFLIGHT": "every process runs mgft doctor's quick checks before training",
    }
    if spec.on_cpu:
        head = [EnvVar("OMP_NUM_THREADS", "1",
                       "one BLAS thread per rank; more threads than cores slows gloo runs 6x")]
        comm.pop("MGFT_FABRIC")  # gloo has no NCCL preset to resolve
    else:
        head = [
            EnvVar("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3",
                   "a failed or timed-out collective tears the process down instead of hanging"),
            EnvVar("NCCL_DEBUG", "WARN", "NCCL errors carry their reason, without INFO noise"),
            EnvVar("OMP_NUM_THREADS", "4", "bounded CPU threads per rank; data work is light"),
        ]
    return head + [EnvVar(k, v, whys[k]) for k, v in comm.items()]


def _debug(spec: JobSpec) -> list[EnvVar]:
    torch_side = [
        EnvVar("TORCH_DISTRIBUTED_DEBUG", "DETAIL",
               "torch checks that every rank calls the same collectives with matching shapes"),
        EnvVar("TORCH_CPP_LOG_LEVEL", "INFO",
               "c10d's own messages (store waits, desync reports) reach the log"),
        EnvVar("TORCH_SHOW_CPP_STACKTRACES", "1", "C++ stack traces on distributed errors"),
    ]
    if spec.on_cpu:
        return torch_side
    return [
        EnvVar("NCCL_DEBUG", "INFO", "NCCL logs its topology, transports and every error"),
        EnvVar("NCCL_DEBUG_SUBSYS", "INIT,ENV,NET,GRAPH",
               "setup, environment, network and topology-search logs, not per-call noise"),
        *torch_side,
        EnvVar("TORCH_NCCL_DESYNC_DEBUG", "1",
               "on a timeout, report which rank is behind and in which collective"),
        EnvVar("TORCH_NCCL_TRACE_BUFFER_SIZE", "2000",
               "flight recorder: keep each rank's last 2000 collectives"),
        EnvVar("TORCH_NCCL_DUMP_ON_TIMEOUT", "1",
               "on a timeout, dump the flight recorder to /tmp/nccl_trace_rank_<rank> "
               "(read it with torchfrtrace)"),
    ]


def _user(spec: JobSpec) -> list[EnvVar]:
    # Sorted, so the order does not depend on how the options were written (Helm sorts too).
    return [EnvVar(k, v, "set by --nccl") for k, v in sorted(spec.dist.nccl.items())]


def settings(spec: JobSpec) -> list[Setting]:
    """Every variable mgft renders for this job, last layer winning, in first-set order."""
    layers = [("mgft", _base(spec))]
    if not spec.on_cpu:
        layers.append((f"--fabric {spec.dist.fabric.value}",
                       list(PRESETS[spec.dist.fabric].static)))
    if spec.dist.debug:
        layers.append(("--debug-dist", _debug(spec)))
    layers.append(("--nccl", _user(spec)))
    resolved: dict[str, Setting] = {}
    for source, variables in layers:
        for var in variables:
            resolved[var.name] = Setting(var, source)
    return list(resolved.values())


def comm_env(spec: JobSpec) -> list[EnvVar]:
    return [s.var for s in settings(spec)]


def runtime_env(spec: JobSpec) -> list[EnvVar]:
    """Variables every trainer process gets, whatever the hardware."""
    return [
        EnvVar("PYTHONUNBUFFERED", "1", "logs reach the scheduler as they happen"),
        EnvVar("TOKENIZERS_PARALLELISM", "false", "no fork warnings or deadlocks from tokenizers"),
        EnvVar("HF_HUB_OFFLINE", "1", "models and data are local paths; never wait on a hub"),
    ]


# --- Checking what users set ----------------------------------------------------------------

# Documented NCCL variables (NCCL 2.18-2.27 user guide) and ProcessGroupNCCL's own. A name
# outside these is passed through, with a warning: it is most often a typo NCCL ignores.
_KNOWN_NAMES = """
NCCL_SOCKET_IFNAME NCCL_SOCKET_FAMILY NCCL_SOCKET_RETRY_CNT NCCL_SOCKET_RETRY_SLEEP_MSEC
NCCL_SOCKET_NTHREADS NCCL_NSOCKS_PERTHREAD NCCL_SOCKET_POLL_TIMEOUT_MSEC NCCL_CROSS_NIC
NCCL_IB_HCA NCCL_IB_TIMEOUT NCCL_IB_RETRY_CNT NCCL_IB_GID_INDEX NCCL_IB_ADDR_FAMILY
NCCL_IB_ADDR_RANGE NCCL_IB_ROCE_VERSION_NUM NCCL_IB_SL NCCL_IB_TC NCCL_IB_FIFO_TC
NCCL_IB_RETURN_ASYNC_EVENTS NCCL_IB_DISABLE NCCL_IB_AR_THRESHOLD NCCL_IB_QPS_PER_CONNECTION
NCCL_IB_SPLIT_DATA_ON_QPS NCCL_IB_CUDA_SUPPORT NCCL_IB_PCI_RELAXED_ORDERING
NCCL_IB_ADAPTIVE_ROUTING NCCL_IB_ECE_ENABLE NCCL_IB_MERGE_NICS NCCL_IB_MERGE_VFS
NCCL_IB_USE_INLINE NCCL_IB_PKEY NCCL_IB_DATA_DIRECT NCCL_IB_MQP_RETRY_ALL NCCL_IB_MQP_RETRY_CNT
NCCL_IB_MQP_RETRY_SLEEP_MSEC NCCL_OOB_NET_ENABLE NCCL_OOB_NET_IFNAME
NCCL_UID_STAGGER_THRESHOLD NCCL_UID_STAGGER_RATE NCCL_NET NCCL_NET_PLUGIN NCCL_TUNER_PLUGIN
NCCL_PROFILER_PLUGIN NCCL_ENV_PLUGIN NCCL_IGNORE_CPU_AFFINITY NCCL_CONF_FILE NCCL_DEBUG
NCCL_DEBUG_FILE NCCL_DEBUG_SUBSYS NCCL_DEBUG_TIMESTAMP_FORMAT NCCL_DEBUG_TIMESTAMP_LEVELS
NCCL_COLLNET_ENABLE NCCL_COLLNET_NODE_THRESHOLD NCCL_TOPO_FILE NCCL_TOPO_DUMP_FILE
NCCL_TOPO_DUMP_FILE_RANK NCCL_SET_THREAD_NAME NCCL_NET_GDR_LEVEL NCCL_NET_GDR_READ
NCCL_NET_GDR_C2C NCCL_NET_SHARED_BUFFERS NCCL_NET_SHARED_COMMS NCCL_NET_MERGE_LEVEL
NCCL_NET_FORCE_MERGE NCCL_NET_DISABLE_INTRA NCCL_NET_OVERHEAD NCCL_SINGLE_RING_THRESHOLD
NCCL_LL_THRESHOLD NCCL_TREE_THRESHOLD NCCL_ALGO NCCL_PROTO NCCL_NVB_DISABLE NCCL_NVB_PRECONNECT
NCCL_PXN_DISABLE NCCL_P2P_PXN_LEVEL NCCL_RUNTIME_CONNECT NCCL_GRAPH_REGISTER
NCCL_LOCAL_REGISTER NCCL_LEGACY_CUDA_REGISTER NCCL_WIN_ENABLE NCCL_SET_STACK_SIZE
NCCL_GRAPH_MIXING_SUPPORT NCCL_DMABUF_ENABLE NCCL_P2P_NET_CHUNKSIZE NCCL_P2P_LL_THRESHOLD
NCCL_P2P_NVL_CHUNKSIZE NCCL_P2P_PCI_CHUNKSIZE NCCL_P2P_READ_ENABLE NCCL_P2P_USE_CUDA_MEMCPY
NCCL_P2P_DISABLE NCCL_P2P_LEVEL NCCL_P2P_DIRECT_DISABLE NCCL_SHM_DISABLE
NCCL_SHM_USE_CUDA_MEMCPY NCCL_SHM_MEMCPY_MODE NCCL_SHM_LOCALITY NCCL_BUFFSIZE NCCL_NTHREADS
NCCL_MAX_NCHANNELS NCCL_MIN_NCHANNELS NCCL_MAX_NRINGS NCCL_MIN_NRINGS NCCL_MAX_CTAS
NCCL_MIN_CTAS NCCL_CGA_CLUSTER_SIZE NCCL_CHECKS_DISABLE NCCL_CHECK_POINTERS NCCL_LAUNCH_MODE
NCCL_LAUNCH_ORDER_IMPLICIT NCCL_MEM_SYNC_DOMAIN NCCL_CUMEM_ENABLE NCCL_CUMEM_HOST_ENABLE
NCCL_NVLS_ENABLE NCCL_NVLS_CHUNKSIZE NCCL_NVLS_NCHANNELS NCCL_NVLSTREE_MAX_CHUNKSIZE
NCCL_WORK_FIFO_DEPTH NCCL_WORK_FIFO_BYTES NCCL_MNNVL_ENABLE NCCL_MNNVL_UUID
NCCL_MNNVL_CLIQUE_ID NCCL_RAS_ENABLE NCCL_RAS_ADDR NCCL_RAS_TIMEOUT_FACTOR NCCL_CTA_POLICY
NCCL_NETDEVS_POLICY NCCL_COMM_BLOCKING NCCL_NCHANNELS_PER_NET_PEER NCCL_PROXY_PROFILE
NCCL_CREATE_THREAD_CONTEXT NCCL_HOSTID NCCL_GDRCOPY_ENABLE NCCL_GDRCOPY_FLUSH_ENABLE
NCCL_GDRCOPY_SYNC_ENABLE NCCL_GDR_FLUSH_DISABLE NCCL_ALLOC_P2P_NET_LL_BUFFERS
NCCL_PROXY_APPEND_BATCH_SIZE NCCL_COMM_ID NCCL_PAT_ENABLE
TORCH_NCCL_ASYNC_ERROR_HANDLING TORCH_NCCL_HIGH_PRIORITY TORCH_NCCL_BLOCKING_WAIT
TORCH_NCCL_DUMP_ON_TIMEOUT TORCH_NCCL_DESYNC_DEBUG TORCH_NCCL_ENABLE_TIMING
TORCH_NCCL_ENABLE_MONITORING TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC TORCH_NCCL_TRACE_BUFFER_SIZE
TORCH_NCCL_TRACE_CPP_STACK TORCH_NCCL_COORD_CHECK_MILSEC TORCH_NCCL_WAIT_TIMEOUT_DUMP_MILSEC
TORCH_NCCL_DEBUG_INFO_TEMP_FILE TORCH_NCCL_DEBUG_INFO_PIPE_FILE TORCH_NCCL_NAN_CHECK
TORCH_NCCL_ABORT_IN_DESTROY_PG TORCH_NCCL_AVOID_RECORD_STREAMS
TORCH_NCCL_USE_TENSOR_REGISTER_ALLOCATOR_HOOK TORCH_NCCL_CUDA_EVENT_CACHE
TORCH_NCCL_LOG_CPP_STACK_ON_UNCLEAN_SHUTDOWN TORCH_NCCL_PROPAGATE_ERROR
TORCH_NCCL_RETHROW_CUDA_ERRORS TORCH_NCCL_USE_COMM_NONBLOCKING
TORCH_DISTRIBUTED_DEBUG GLOO_SOCKET_IFNAME GLOO_DEVICE_TRANSPORT
"""
KNOWN = frozenset(_KNOWN_NAMES.split())
# Old spellings torch still reads, with a deprecation warning of its own.
RENAMED = {"NCCL_ASYNC_ERROR_HANDLING": "TORCH_NCCL_ASYNC_ERROR_HANDLING",
           "NCCL_BLOCKING_WAIT": "TORCH_NCCL_BLOCKING_WAIT",
           "NCCL_DESYNC_DEBUG": "TORCH_NCCL_DESYNC_DEBUG"}
# libfabric (EFA) has hundreds of FI_* variables; they are passed through unchecked.
UNCHECKED_PREFIXES = ("FI_",)
# Set by NVIDIA's CUDA container images to describe the image; NCCL never reads it.
INFORMATIONAL = frozenset({"NCCL_VERSION"})


def check_keys(keys: Mapping[str, str]) -> None:
    """--nccl takes communication variables only; anything else belongs in --env."""
    for key in keys:
        if not key.startswith(COMM_PREFIXES):
            raise SpecError(f"--nccl {key}", keys[key], "not an NCCL, torch.distributed or "
                            "libfabric variable", f"use --env {key}=... for other variables")
        if key == NCCL_NVLS_ENABLE and keys[key] not in ("0", "1", "2"):
            raise SpecError(f"--nccl {key}", keys[key], "not one of 0, 1, 2",
                            "use 0 to keep NVLink SHARP off, 1 to turn it on")


def unknown_key_warning(key: str) -> str | None:
    if key in KNOWN or key in INFORMATIONAL or key.startswith(UNCHECKED_PREFIXES):
        return None
    if key in RENAMED:
        return f"--nccl {key}: an old name; use {RENAMED[key]}"
    close = difflib.get_close_matches(key, KNOWN, n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"--nccl {key}: not a known NCCL variable{hint}; passed through as given"


def warnings(spec: JobSpec) -> list[str]:
    found = (unknown_key_warning(k) for k in [*spec.dist.nccl, *_comm_keys(spec.env)])
    return [w for w in found if w]


def _comm_keys(env: Mapping[str, str]) -> list[str]:
    return [k for k in env if k.startswith(("NCCL_", "TORCH_NCCL_"))]


def check_environment(spec: JobSpec, environ: Mapping[str, str]) -> None:
    """The submitting environment's NCCL_NVLS_ENABLE=0 is a host's decision (multicast can
    take a shared host's GPUs down): an override that turns it back on is refused."""
    asked = spec.dist.nccl.get(NCCL_NVLS_ENABLE, spec.env.get(NCCL_NVLS_ENABLE))
    if environ.get(NCCL_NVLS_ENABLE) == "0" and asked not in (None, "0"):
        raise SpecError(f"--nccl {NCCL_NVLS_ENABLE}", asked,
                        "this environment sets NCCL_NVLS_ENABLE=0 (NVLink multicast off on "
                        "this host)", "drop the override; unset it in the environment first "
                        "if the host really allows multicast")


def explain(spec: JobSpec) -> list[Setting]:
    """What `mgft nccl explain` prints: the rendered settings plus what the job resolves at
    start (values filled in only where the environment has none)."""
    rendered = settings(spec)
    return rendered + ([] if spec.on_cpu else at_start_settings(spec.dist.fabric))
