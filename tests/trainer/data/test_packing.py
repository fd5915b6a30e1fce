from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mgft_train.attention import VARLEN, register
from mgft_train.data import IGNORE, collate, encode, load_rows, model_inputs, real_tokens
from mgft_train.data.encode import Example
from mgft_train.data.packing import collate_packed, fill, flat_rows, pack
from mgft_train.loop import loss_sum


def ex(n: int, tag: int = 7) -> Example:
    return Example(input_ids=[tag] * n, labels=[IGNORE] + [tag] * (n - 1))


def test_every_example_lands_in_exactly_one_pack_within_capacity():
    examples = [ex(n, tag=i) for i, n in enumerate([60, 5, 33, 64, 17, 30, 2, 31, 12, 40, 1])]
    packs = pack(examples, capacity=64, seed=0)
    assert all(sum(len(e.input_ids) for e in p) <= 64 for p in packs)
    placed = sorted(e.input_ids[0] for p in packs for e in p)
    assert placed == list(range(len(examples)))
    # 295 tokens need at least 5 packs of 64; best-fit decreasing reaches that bound here.
    assert len(packs) == 5
    assert fill(packs, 64) == pytest.approx(295 / 320)


def test_packing_is_seeded_and_refuses_an_example_that_cannot_fit():
    examples = [ex(n, tag=i) for i, n in enumerate([10] * 12)]
    order = [[e.input_ids[0] for e in p] for p in pack(examples, 30, seed=1)]
    assert order == [[e.input_ids[0] for e in p] for p in pack(examples, 30, seed=1)]
    assert order != [[e.input_ids[0] for e in p] for p in pack(examples, 30, seed=2)]
    with pytest.raises(ValueError, match="exceeds"):
        pack([ex(31)], 30, seed=0)


def test_packed_rows_restart_positions_per_sample_and_pad_as_a_sample_of_their_own():
    a, b, c = ex(3, tag=5), ex(2, tag=6), ex(4, tag=8)
    batch = collate_packed([(a, b), (c,)], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 5, 5, 6, 6], [8, 8, 8, 8, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 5, 5, IGNORE, 6], [IGNORE, 8, 8, 8, IGNORE]]
    assert batch["token_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert real_tokens(batch) == 9
    flat = collate_packed([(a, b), (c,)], pad_id=0, flat=True)
    assert flat["input_ids"].tolist() == [[5, 5, 5, 6, 6, 8, 8, 8, 8]]
    assert flat["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    assert flat["cu_seq_lens"].tolist() == [0, 3, 5, 9]  # sample bounds, for varlen kernels
    assert "cu_seq_lens" not in batch
    inputs = model_inputs(flat)
    assert inputs["max_length_q"] == inputs["max_length_k"] == 4
    assert inputs["cu_seq_lens_q"] is inputs["cu_seq_lens_k"] is flat["cu_seq_lens"]
    # The model never gets the token mask: as an attention_mask it would merge the samples.
    assert set(model_inputs(batch)) == {"input_ids", "position_ids", "use_cache"}


def test_flash_attention_and_unknown_kernels_get_one_flat_row():
    def model(impl):
        return SimpleNamespace(config=SimpleNamespace(_attn_implementation=impl))

    assert not flat_rows(model("sdpa")) and not flat_rows(model("eager"))
    assert flat_rows(model("flash_attention_2")) and flat_rows(model("my-kernel"))
    assert flat_rows(object())


def test_the_trainers_lora_model_keeps_per_row_packing(tiny):
    """main asks flat_rows of the peft-wrapped model: its config must show through."""
    from mgft.spec.job import TrainSpec
    from mgft_train.distributed import Dist
    from mgft_train.model import load_model

    ctx = Dist(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="none")
    net = load_model(TrainSpec(model=str(tiny.model_dir), dataset="d"), ctx)
    assert type(net).__name__ == "PeftModelForCausalLM"
    assert net.config._attn_implementation == "sdpa"
    assert not flat_rows(net)


def per_token_losses(model, batch) -> torch.Tensor:
    """Loss of every predicted position (0 where ignored): (rows, width - 1)."""
    with torch.no_grad():
        logits = model(**model_inputs(batch)).logits
    return F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), batch["labels"][:, 1:],
                           ignore_index=IGNORE, reduction="none")


def alone(model, e: Example) -> float:
    return per_token_losses(model, collate([e], pad_id=0)).sum().item()


def packed_losses(model, packs, batch, flat: bool = False) -> list[list[float]]:
    """Each sample's summed loss, cut out of the packed batch's per-token losses, per row."""
    losses = per_token_losses(model, batch)
    rows = [[e for p in packs for e in p]] if flat else [list(p) for p in packs]
    out = []
    for r, row in enumerate(rows):
        at, sums = 0, []
        for e in row:
            n = len(e.input_ids)
            sums.append(losses[r, at:at + n - 1].sum().item())  # positions predicting e's tokens
            at += n
        out.append(sums)
    return out


@pytest.fixture(scope="module")
def packs(tiny, tokenizer):
    examples = encode(load_rows(tiny.data)[:24], tokenizer, seq_len=128)
    packs = pack(examples, capacity=128, seed=0)[:3]
    assert all(len(p) >= 3 for p in packs)  # several samples share each sequence
    return packs


@pytest.fixture(scope="module", params=["sdpa", "eager", VARLEN])
def model(request, tiny):
    """mgft_varlen runs its per-sample CPU path here; on GPUs it calls flash varlen."""
    from transformers import AutoModelForCausalLM

    register()
    model = AutoModelForCausalLM.from_pretrained(tiny.model_dir, local_files_only=True,
                                                 attn_implementation=request.param)
    assert model.config._attn_implementation == request.param
    return model.eval()


@pytest.mark.parametrize("flat", [False, True], ids=["rows", "flat"])
def test_a_packed_sample_scores_exactly_as_it_does_alone(model, packs, flat):
    batch = collate_packed(packs, pad_id=0, flat=flat)
    got = [loss for row in packed_losses(model, packs, batch, flat) for loss in row]
    want = [alone(model, e) for p in packs for e in p]
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)
    # And the loop's own loss over the packed batch is the sum of the samples' own losses.
    with torch.no_grad():
        assert loss_sum(model, batch).item() == pytest.approx(sum(want), rel=1e-5)


def test_without_the_boundaries_later_samples_would_score_differently(model, packs):
    """The control: the same packed tokens with the boundary information removed, as a
    padding-style attention mask or as one running position count, change every sample
    but the first of each row. So the equality above is evidence, not a tautology."""
    batch = collate_packed(packs, pad_id=0)
    want = [[alone(model, e) for e in p] for p in packs]
    masked = dict(batch, attention_mask=batch["token_mask"])
    running = dict(batch, position_ids=torch.arange(batch["input_ids"].shape[1]).expand_as(
        batch["input_ids"]).contiguous())
    for leaky in (masked, running):
        got = packed_losses(model, packs, leaky)
        for row_got, row_want in zip(got, want, strict=True):
            if leaky is masked:  # the first sample has nothing before it to see
                assert row_got[0] == pytest.approx(row_want[0], rel=1e-5)
            assert all(abs(g - w) > 1e-3 for g, w in zip(row_got[1:], row_want[1:],
                                                           strict=True))


def test_a_kv_cache_would_switch_the_boundaries_off(model, packs):
    """Why model_inputs always says use_cache=False: with a cache, transformers skips its
    packed-sequence check, whatever the position_ids say."""
    batch = collate_packed(packs, pad_id=0)
    with torch.no_grad():
        cached = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       use_cache=True).logits
        uncached = model(**model_inputs(batch)).logits
    assert (cached - uncached).abs().max().item() > 1e-3
