from __future__ import annotations

import dataclasses
import typing

import pytest
from mgft.spec.flags import FLAGS, GENERATE_FLAGS, display_name
from mgft.spec.job import JobSpec

ALL = [(flag, path) for table in (FLAGS, GENERATE_FLAGS) for flag, path in table.items()]


@pytest.mark.parametrize(("flag", "path"), ALL, ids=[f"{f}->{p}" for f, p in ALL])
def test_an_error_on_a_field_names_the_flag_that_sets_it(flag: str, path: str) -> None:
    assert display_name(path) == flag


def test_every_flag_sets_a_field_of_the_spec() -> None:
    hints = typing.get_type_hints(JobSpec)
    for _flag, path in ALL:
        section, _, leaf = path.rpartition(".")
        cls = JobSpec
        if section:  # a section, or an optional one (`GenerateSpec | None`)
            cls = next(t for t in (hints[section], *typing.get_args(hints[section]))
                       if dataclasses.is_dataclass(t))
        names = {f.name for f in dataclasses.fields(cls)}
        assert leaf in names, path


def test_a_field_without_a_flag_keeps_its_yaml_path() -> None:
    assert display_name("k8s.tolerations") == "k8s.tolerations"
    assert display_name("env.FOO") == "--env FOO"
