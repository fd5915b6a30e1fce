"""The argv contract between the launcher and the generate module."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mgft.contract.argv import to_argv
from mgft.contract.generate import GenerateArgs, from_spec, parse
from mgft.generate.launch import build_generate_spec
from mgft.spec.job import Backend


def spec(**flags):
    return build_generate_spec(config_file=None, overrides=(), env_items=(), note=print,
                               **({"backend": "slurm", "model": "/m", "prompts": "/p.jsonl"}
                                  | flags))


@settings(max_examples=50, deadline=None, derandomize=True)
@given(text=st.text(min_size=1).filter(lambda s: "\x00" not in s),
       numbers=st.tuples(st.integers(1, 512), st.integers(1, 4096), st.integers(0, 99),
                         st.floats(0, 5), st.floats(0.01, 1), st.integers(0, 2**31)),
       flags=st.tuples(st.booleans(), st.booleans()))
def test_argv_round_trips(text: str, numbers, flags) -> None:
    batch, new, least, temperature, top_p, seed = numbers
    args = GenerateArgs(model=text, prompts=text, output=text, adapter=text, batch_size=batch,
                        max_new_tokens=new, min_new_tokens=least, temperature=temperature,
                        top_p=top_p, seed=seed, chat_template=flags[0], split_model=flags[1])
    assert parse(to_argv(args), prog="t") == args


def test_every_field_is_written_so_image_defaults_never_decide() -> None:
    args = GenerateArgs(model="m", prompts="p", output="o")
    assert len(to_argv(args)) == len(dataclasses.fields(args)) - 1  # adapter None: omitted


def test_from_spec_maps_the_shared_fields() -> None:
    s = spec(output="/o", adapter="/a", batch_size="8", seed="3", temperature="0.7",
             strategy="mp", gpus="4", chat_template=True)
    assert s.backend is Backend.SLURM
    assert from_spec(s) == GenerateArgs(model="/m", prompts="/p.jsonl", output="/o",
                                        adapter="/a", batch_size=8, temperature=0.7, seed=3,
                                        chat_template=True, split_model=True)


def test_bad_values_exit_2_naming_the_flag(capsys) -> None:
    with pytest.raises(SystemExit) as err:
        parse(["--model=m", "--prompts=p", "--output=o", "--top-p=0"], prog="t")
    assert err.value.code == 2 and "--top-p '0'" in capsys.readouterr().err
