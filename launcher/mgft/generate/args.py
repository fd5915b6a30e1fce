"""The argv contract between the launcher and `python -m mgft_train.generate`.

Like `mgft.train_args` for training: the launcher renders `GenerateArgs` as `--flag=value`
words, every field always written; the generate module parses them back. Both sides derive
the flags from the dataclass fields.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from mgft.spec import JobSpec, Strategy

GENERATE_MODULE = "mgft_train.generate"
# Prompts per process per forward pass unless told. Up to about 128, a 1B model's decoding on
# an H200 is bound by host time (kernel launches), which processes on one host share; at 256
# the GPU's time per step is well above the host's, so N processes scale by N
# (bench/PERF-NOTES.md, generate). A batch that runs out of memory is halved.
BATCH_SIZE = 256


@dataclass(frozen=True, kw_only=True, slots=True)
class GenerateArgs:
    model: Annotated[str, Field(min_length=1)]
    prompts: Annotated[str, Field(min_length=1)]
    output: Annotated[str, Field(min_length=1)]
    adapter: str | None = None
    batch_size: Annotated[int, Field(ge=1)] = BATCH_SIZE
    max_new_tokens: Annotated[int, Field(ge=1)] = 256
    min_new_tokens: Annotated[int, Field(ge=0)] = 0
    temperature: Annotated[float, Field(ge=0)] = 0.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    seed: Annotated[int, Field(ge=0)] = 0
    chat_template: bool = False
    # One process per node sees all its GPUs and spreads the layers over them (--strategy mp).
    split_model: bool = False


def from_spec(spec: JobSpec) -> GenerateArgs:
    gen = spec.generate
    assert gen is not None, "only generation jobs have generate args"
    t = spec.train
    return GenerateArgs(model=t.model, prompts=t.dataset, output=t.output, adapter=gen.adapter,
                        batch_size=t.micro_batch, max_new_tokens=gen.max_new_tokens,
                        min_new_tokens=gen.min_new_tokens, temperature=gen.temperature,
                        top_p=gen.top_p, seed=t.seed, chat_template=gen.chat_template,
                        split_model=t.strategy is Strategy.MP)


def flag_for(name: str) -> str:
    return "--" + name.replace("_", "-")


def to_argv(args: GenerateArgs) -> list[str]:
    words = []
    for f in dataclasses.fields(args):
        value = getattr(args, f.name)
        if value is None:
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value)
        words.append(f"{flag_for(f.name)}={text}")  # one word: a value may start with "-"
    return words


def generate_argv(spec: JobSpec) -> list[str]:
    """What torchrun runs in every process of a generation job."""
    return ["-m", GENERATE_MODULE, *to_argv(from_spec(spec))]


def from_argv(argv: Sequence[str], prog: str) -> GenerateArgs:
    """Parse the generate module's argv; bad values exit with code 2 and name the flag."""
    from pydantic import TypeAdapter, ValidationError

    parser = argparse.ArgumentParser(prog=prog, description="mgft batch generation")
    for f in dataclasses.fields(GenerateArgs):
        required = f.default is dataclasses.MISSING
        parser.add_argument(flag_for(f.name), dest=f.name, required=required, default=None)
    given = {k: v for k, v in vars(parser.parse_args(list(argv))).items() if v is not None}
    try:
        return TypeAdapter(GenerateArgs).validate_python(given)
    except ValidationError as err:
        first = err.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "?"
        parser.error(f"{flag_for(name)} {given.get(name)!r}: {first['msg']}")
        raise AssertionError("unreachable") from None  # parser.error exits
