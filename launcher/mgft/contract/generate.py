"""What a generation process is given: `GenerateArgs`, built from the job spec, written as
argv by the one codec (`mgft.contract.argv`) and parsed back by `python -m mgft_train.generate`.

Each field takes its type and bounds from the spec field it comes from, so a value the spec
accepts is never refused by the process, and the reverse.
"""

import typing
from collections.abc import Sequence
from dataclasses import dataclass

from mgft.contract import argv as codec
from mgft.spec.job import GenerateSpec, JobSpec, Strategy, TrainSpec

GENERATE_MODULE = "mgft_train.generate"
# Prompts per process per forward pass unless told. Up to about 128, a 1B model's decoding on
# an H200 is bound by host time (kernel launches), which processes on one host share; at 256
# the GPU's time per step is well above the host's, so N processes scale by N
# (bench/PERF-NOTES.md, generate). A batch that runs out of memory is halved.
BATCH_SIZE = 256

_TRAIN = typing.get_type_hints(TrainSpec, include_extras=True)
_GEN = typing.get_type_hints(GenerateSpec, include_extras=True)
_Model = _TRAIN["model"]
_Prompts = _TRAIN["dataset"]
_Output = _TRAIN["output"]
_Adapter = _GEN["adapter"]
_BatchSize = _TRAIN["micro_batch"]
_MaxNewTokens = _GEN["max_new_tokens"]
_MinNewTokens = _GEN["min_new_tokens"]
_Temperature = _GEN["temperature"]
_TopP = _GEN["top_p"]
_Seed = _TRAIN["seed"]


@dataclass(frozen=True, kw_only=True, slots=True)
class GenerateArgs:
    model: _Model
    prompts: _Prompts
    output: _Output
    adapter: _Adapter = None
    batch_size: _BatchSize = BATCH_SIZE
    max_new_tokens: _MaxNewTokens = 256
    min_new_tokens: _MinNewTokens = 0
    temperature: _Temperature = 0.0
    top_p: _TopP = 1.0
    seed: _Seed = 0
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


def generate_argv(spec: JobSpec) -> list[str]:
    """What torchrun runs in every process of a generation job."""
    return ["-m", GENERATE_MODULE, *codec.to_argv(from_spec(spec))]


def parse(argv: Sequence[str], prog: str) -> GenerateArgs:
    return codec.from_argv(GenerateArgs, argv, prog, "mgft batch generation")
