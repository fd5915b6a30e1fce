"""One communication variable, and where it came from: shared by the NCCL layers and the
fabric presets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EnvVar:
    name: str
    value: str
    why: str


@dataclass(frozen=True, slots=True)
class Setting:
    """One resolved variable and the layer it comes from (for `mgft nccl explain`)."""

    var: EnvVar
    source: str
