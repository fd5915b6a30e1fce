"""--compile blocks computes what transformers computes, for every supported family.

The reference and mgft's packed path are test_families.py's: transformers' eager attention
on each sample alone against the packed micro-batch through `mgft_varlen`. Here mgft's side
runs with every block compiled by Inductor (the real compiler, C++ kernels on the CPU), so a
feature the compiled graph lost (a softcap, a window, a norm's offset) or an ordering that
changed a block's arithmetic would show as it does there. fp32 throughout.
"""

from __future__ import annotations

import pytest
import torch
from mgft.spec.families import FAMILIES
from mgft.spec.job import Compile, TrainSpec
from mgft_train import attention, compiled

from tests.trainer.test_families import assert_same, build, packed_run, reference_run


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()  # each family's graphs compiled from scratch, none reused
    yield
    torch._dynamo.reset()


def compiled_model(model_type: str, *, checkpointing: bool = False) -> torch.nn.Module:
    from mgft_train.model import blocks, enable_checkpointing

    model = build(model_type, attention.VARLEN)
    if checkpointing:  # as load_model orders them: checkpointing first, compiling last
        enable_checkpointing(model)
    assert compiled.compile_blocks(blocks(model)) == model.config.num_hidden_layers
    return model


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_compiled_blocks_train_as_transformers_computes(model_type):
    from torch._dynamo.utils import counters

    reference = reference_run(build(model_type, "eager"))
    ours = packed_run(compiled_model(model_type))
    assert counters["stats"]["unique_graphs"] >= 1  # the blocks really ran compiled
    assert_same(ours, reference)


def test_compiled_blocks_under_activation_checkpointing():
    """The recomputation in the backward pass runs the compiled block again: same numbers
    (the QLoRA-in-12-GiB path: checkpointing, then compiled blocks to win speed back)."""
    reference = reference_run(build("llama", "eager"))
    model = compiled_model("llama", checkpointing=True)
    assert any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())
    assert_same(packed_run(model), reference)


def test_training_and_eval_shapes_stay_within_the_recompile_limit(caplog):
    """Packed micro-batches change their token count every step, and held-out evaluation
    runs the blocks without gradients: each a new guard. Past Dynamo's recompile limit a
    frame silently runs eager from then on, so the compile must stay within it for the
    family with the most variants (Gemma-2: sliding and full layers alternate)."""
    from mgft_train.data.batches import model_inputs
    from mgft_train.data.packing import collate_packed
    from mgft_train.tiny_families import samples

    model = compiled_model("gemma2")
    for lengths in [(5, 13, 21, 30), (7, 9, 40), (12, 12, 12, 12, 3), (30, 31)]:
        inputs = model_inputs(collate_packed([tuple(samples(lengths))], pad_id=0, flat=True))
        model.train()
        model(**inputs).logits.sum().backward()
        model.eval()
        with torch.no_grad():
            model(**inputs)
    assert not [r for r in caplog.records if "recompile_limit" in r.getMessage()]


def test_the_trainer_compiles_only_when_asked(tiny):
    """The record metrics.json keeps, and Liger's block kernels left to Inductor."""
    from mgft_train import model
    from mgft_train.distributed import Dist

    cpu = Dist(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="none")
    for choice in Compile:
        net = model.load_model(TrainSpec(model=str(tiny.model_dir), dataset="d",
                                         compile=choice), cpu)
        records = [k for k in model.describe(net)["kernels"] if k.startswith(compiled.NAME)]
        layers = net.config.num_hidden_layers
        assert records == ([f"compile:blocks:{layers}-blocks"] if choice is Compile.BLOCKS
                           else [])
