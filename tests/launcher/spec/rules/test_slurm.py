"""Slurm options that land unquoted on #SBATCH lines and srun arguments: checked values only."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mgft.render.sbatch import render_sbatch
from mgft.spec.errors import SpecError
from mgft.spec.rules.slurm import time_minutes

from tests.launcher.render import cases
from tests.launcher.render.test_quoting import FRAGMENTS, hostile

SLURM = {"backend": "slurm"}


@pytest.mark.parametrize("field,value,needle", [
    ("slurm.account", "proj one", "--account 'proj one': not a Slurm account name"),
    ("slurm.qos", "high;rm", "--qos 'high;rm': not a Slurm qos name"),
    ("slurm.reservation", "-x", "--reservation -x: not a Slurm reservation name"),
    ("slurm.mem", "64GB", "--mem 64GB: not a Slurm memory size"),
    ("slurm.constraint", "a100 ib", "not a Slurm constraint expression"),
    ("slurm.sbatch_extra", ["--mail-type END"], "not one sbatch long option"),
    ("slurm.sbatch_extra", ["#SBATCH --mail-type=END"], "not one sbatch long option"),
    ("slurm.sbatch_extra", ["--nodes=3"], "mgft sets this option itself; use --nodes instead"),
    ("slurm.sbatch_extra", ["--output=x.log"], "mgft sets this option itself; remove it"),
    ("slurm.sbatch_extra", ["--signal=B:USR1@60"], "use slurm.signal_before_s instead"),
    ("slurm.signal_before_s", 600, "USR2 would come before the job starts"),
    ("env.CUDA_VISIBLE_DEVICES", "0,1", "Slurm sets it from the GPUs it allocates"),
    ("image", "ghcr.io/acme/mgft:cuda", "add --container pyxis or apptainer"),
    ("slurm.container", "pyxis", "--container pyxis: needs the image"),
])
def test_bad_values_name_the_option_and_the_fix(field: str, value: object, needle: str) -> None:
    extra = {"slurm.time": "5"} if field == "slurm.signal_before_s" else {}
    with pytest.raises(SpecError) as err:
        cases.spec(**SLURM, **extra, **{field: value})
    assert needle in str(err.value)


def test_containers_need_absolute_paths_and_clean_mounts() -> None:
    base = SLURM | {"image": "/images/mgft.sif", "slurm.container": "apptainer",
                    "train.output": "/runs/a"}
    with pytest.raises(SpecError, match="--dataset data.jsonl: a relative path"):
        cases.spec(**base | {"train.dataset": "data.jsonl"})
    with pytest.raises(SpecError, match="--data-cache cache: a relative path"):
        cases.spec(**base | {"train.data_cache": "cache"})
    assert cases.spec(**base | {"train.data_cache": "none"})
    with pytest.raises(SpecError, match="not a bind mount"):
        cases.spec(**base | {"slurm.container_mounts": ["/a,/b"]})
    assert cases.spec(**base | {"slurm.container_mounts": ["/scratch:/scratch:ro"]})


@pytest.mark.parametrize("flags,needle", [
    ({"image": "images/mgft.sif"}, "--image images/mgft.sif: a relative image path"),
    ({"slurm.container_mounts": ["scratch:/scratch"]}, "scratch:/scratch: a relative path"),
    ({"slurm.container_mounts": ["/scratch:scratch:ro"]}, "/scratch:scratch:ro: a relative"),
])
def test_relative_image_and_mounts_are_refused(flags: dict, needle: str) -> None:
    base = SLURM | {"image": "/images/mgft.sif", "slurm.container": "apptainer",
                    "train.output": "/runs/a"}
    with pytest.raises(SpecError, match=needle):
        cases.spec(**base | flags)
    assert cases.spec(**base | {"image": "docker://ghcr.io/acme/mgft:cuda",
                                "slurm.container_mounts": ["/scratch", "/a:/b:ro"]})


@pytest.mark.parametrize("limit,minutes", [
    ("30", 30), ("5:30", 6), ("04:00:00", 240), ("00:00:01", 1), ("1-00", 1440),
    ("2-03:04", 2 * 1440 + 184), ("1-00:00:30", 1441),
])
def test_time_limit_in_minutes(limit: str, minutes: int) -> None:
    assert time_minutes(limit) == minutes


_SBATCH_SAFE = re.compile(r"^[A-Za-z0-9_.:/@+,%=&|\[\]()*!-]*$")
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


@pytest.mark.parametrize("field", ["slurm.account", "slurm.qos", "slurm.reservation",
                                   "slurm.mem", "slurm.constraint", "slurm.sbatch_extra"])
@SETTINGS
@given(value=st.one_of(hostile, st.sampled_from(FRAGMENTS).map(lambda f: f"a{f}b")))
def test_hostile_values_are_refused_or_inert(field: str, value: str) -> None:
    given_value = [f"--comment={value}"] if field == "slurm.sbatch_extra" else value
    try:
        spec = cases.spec(**SLURM, **{field: given_value})
    except SpecError as err:
        assert err.value in (value, f"--comment={value}")
        return
    assert _SBATCH_SAFE.match(value), f"{value!r} reached an #SBATCH line"
    benign = render_sbatch(cases.spec(**SLURM))
    assert render_sbatch(spec).count("\n") == benign.count("\n") + 1
