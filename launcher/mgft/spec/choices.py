"""The choices a job spec offers (--backend, --strategy, ...): plain enums, apart from the
validated `mgft.spec.job`, so that what only names them (`mgft --help`, the job commands)
imports no pydantic."""

from __future__ import annotations

from enum import StrEnum


class Backend(StrEnum):
    LOCAL = "local"
    SLURM = "slurm"
    K8S = "k8s"


class Strategy(StrEnum):
    DDP = "ddp"
    FSDP = "fsdp"
    ZERO1 = "zero1"
    ZERO2 = "zero2"
    ZERO3 = "zero3"
    ZERO3_OFFLOAD = "zero3-offload"
    MP = "mp"
    # Not a strategy the trainer runs: build_spec replaces it with the one `mgft plan` picks.
    AUTO = "auto"


class Tuning(StrEnum):
    LORA = "lora"
    QLORA = "qlora"
    FULL = "full"


class DataFormat(StrEnum):
    AUTO = "auto"
    ALPACA = "alpaca"
    SHAREGPT = "sharegpt"
    MESSAGES = "messages"
    TEXT = "text"
    PROMPT_COMPLETION = "prompt_completion"


class Overlong(StrEnum):
    TRUNCATE = "truncate"
    DROP = "drop"


class Kernels(StrEnum):
    AUTO = "auto"
    LIGER = "liger"
    NONE = "none"
    # auto's kernels, and the frozen base Linears of LoRA in FP8 (mgft_train.fp8). Unlike
    # the others it changes what is computed (e4m3 rounding): an explicit choice, recorded.
    FP8 = "fp8"


class Compile(StrEnum):
    """What torch.compile compiles (mgft_train.compiled)."""

    NONE = "none"
    BLOCKS = "blocks"  # each transformer block; one graph per block class, every layer reuses it


class Precision(StrEnum):
    """Where a trained weight's updates accumulate (mgft_train.precision)."""

    MIXED = "mixed"
    BF16_KAHAN = "bf16-kahan"
    BF16 = "bf16"

    def runs_under(self, strategy: Strategy) -> bool:
        """bf16 weights need an optimizer mgft steps itself; DeepSpeed's ZeRO optimizers
        always step fp32 master weights of their own."""
        return self is Precision.MIXED or strategy in (Strategy.DDP, Strategy.FSDP, Strategy.MP)


class Save(StrEnum):
    CHECKPOINTS = "checkpoints"
    FINAL = "final"
    NONE = "none"


class Tracker(StrEnum):
    """Where rank 0 reports each step (mgft_train.tracking)."""

    TENSORBOARD = "tensorboard"
    WANDB = "wandb"
    MLFLOW = "mlflow"
    NONE = "none"


class K8sApi(StrEnum):
    PYTORCHJOB = "pytorchjob"
    TRAINJOB = "trainjob"


class Fabric(StrEnum):
    """How the GPUs talk: picks the NCCL preset (`mgft.comm.fabric`)."""

    AUTO = "auto"
    NVLINK = "nvlink"
    PCIE = "pcie"
    INFINIBAND = "infiniband"
    ROCE = "roce"
    ETHERNET = "ethernet"
    EFA = "efa"


class SlurmContainer(StrEnum):
    NONE = "none"
    PYXIS = "pyxis"  # srun --container-image (NVIDIA pyxis/enroot)
    APPTAINER = "apptainer"  # apptainer exec (formerly Singularity)


class PodSecurity(StrEnum):
    RESTRICTED = "restricted"
    NONE = "none"
