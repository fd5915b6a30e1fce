"""Per-strategy arithmetic: hand-computed cases, sharding by the world size, monotonicity."""

from __future__ import annotations

import dataclasses

import pytest
from mgft.plan.activations import eval_bytes, loss_working_set, saved_bytes
from mgft.plan.arch import KNOWN, Arch
from mgft.plan.memory import (
    ALL,
    Assumptions,
    Breakdown,
    Job,
    ParamBytes,
    batch,
    estimate,
    param_bytes,
)
from mgft.plan.pick import candidates
from mgft.spec.job import Kernels, Precision, Strategy, Tuning

SMALL = Arch(name="small", family="llama", vocab=1000, hidden=64, intermediate=128, layers=2,
             heads=4, kv_heads=2, head_dim=16, tied=False)
P = SMALL.params
A = Assumptions()


def job(**kw) -> Job:
    return Job(**{"arch": SMALL, "tuning": Tuning.FULL, "gpus_per_node": 2} | kw)


def terms(j: Job, s: Strategy) -> dict[str, float]:
    x = batch(j, s, A)
    return {"activations": saved_bytes(x), "loss": loss_working_set(x),
            "eval": eval_bytes(j.arch, min(A.eval_rows, j.micro_batch), j.seq_len)}


def test_ddp_full_by_hand() -> None:
    j = job()
    b = estimate(j, Strategy.DDP)
    # --precision mixed: bf16 weights and grads, AdamW's two fp32 states and MasterAdamW's
    # fp32 copy, the reducer's bf16 bucket copy; the step makes fp32 gradients for a chunk
    # of the weights (here all of them: the model is smaller than one chunk)
    assert (b.params, b.grads, b.optimizer, b.buffers) == (2 * P, 2 * P, 12 * P, 2 * P)
    assert b.step_extra == 4 * P
    t = terms(j, Strategy.DDP)
    assert (b.activations, b.loss, b.eval) == (t["activations"], t["loss"], t["eval"])
    assert b.moments == {"forward": 16 * P + t["activations"] + t["loss"], "step": 22 * P,
                         "eval": 16 * P + t["eval"]}
    assert b.peak == max(b.moments.values())
    single = estimate(job(gpus_per_node=1), Strategy.DDP)
    assert single.buffers == 0  # one process is not wrapped in DDP: no buckets


def test_each_precision_by_hand() -> None:
    """Bytes per trained parameter: weights, grads, optimizer states, master (or Kahan's
    compensation); the step's fp32 working memory."""
    cases = {Precision.MIXED: (2, 2, 8, 4), Precision.BF16_KAHAN: (2, 2, 6, 2),
             Precision.BF16: (2, 2, 4, 0)}
    for precision, (w, g, o, m) in cases.items():
        j = job(precision=precision, gpus_per_node=1)
        assert param_bytes(j, Strategy.DDP) == ParamBytes(weights=w, grads=g, optimizer=o,
                                                          master=m)
        b = estimate(j, Strategy.DDP)
        assert (b.params, b.grads, b.optimizer) == (w * P, g * P, (o + m) * P)
    assert estimate(job(precision=Precision.BF16_KAHAN), Strategy.DDP).step_extra == 5 * 4 * P
    assert estimate(job(precision=Precision.BF16), Strategy.DDP).step_extra == 0
    # fp32 weights (a CPU run) are their own master copy, whatever the setting
    for precision in Precision:
        assert param_bytes(job(dtype="fp32", precision=precision), Strategy.DDP).total == 16
    # FSDP's fp32 shards are the master under mixed; bf16 shards and grads otherwise
    f = estimate(job(precision=Precision.BF16, gpus_per_node=4), Strategy.FSDP)
    assert (f.params, f.grads, f.optimizer) == (2 * P / 4, 2 * P / 4, 4 * P / 4)
    # ZeRO keeps fp32 masters in DeepSpeed's optimizer: bf16 weights cannot run there
    with pytest.raises(ValueError, match="does not run under --strategy zero2"):
        estimate(job(precision=Precision.BF16), Strategy.ZERO2)
    assert Strategy.ZERO2 not in candidates(job(precision=Precision.BF16_KAHAN))


def test_ddp_lora_and_qlora_by_hand() -> None:
    lora = SMALL.lora_params(16)
    b = estimate(job(tuning=Tuning.LORA), Strategy.DDP)
    # frozen bf16 base; fp32 adapters (peft), their fp32 grads, two fp32 Adam states, bucket
    assert (b.params, b.grads, b.optimizer, b.buffers) == (
        2 * P + 4 * lora, 4 * lora, 8 * lora, 4 * lora)
    assert batch(job(tuning=Tuning.LORA), Strategy.DDP, A).lora_bytes == 2  # bf16 autocast
    q = estimate(job(tuning=Tuning.QLORA), Strategy.DDP)
    nf4 = 0.5 + 1 / 64 + 4 / (64 * 256)
    linear = SMALL.layers * (64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128)
    assert q.params == pytest.approx(nf4 * linear + 2 * (P - linear) + 4 * lora)
    assert q.buffers == 4 * lora + 2 * 64 * 128  # + one Linear dequantized to bf16


def test_zero_stages_by_hand() -> None:
    j = job(gpus_per_node=4)
    z1, z2, z3 = (estimate(j, s) for s in (Strategy.ZERO1, Strategy.ZERO2, Strategy.ZERO3))
    # fp32 master weights + Adam's two fp32 states, sharded over 4 ranks
    assert z1.optimizer == z2.optimizer == z3.optimizer == 12 * P / 4
    assert (z1.params, z1.grads) == (2 * P, 2 * P)
    assert (z2.params, z2.grads) == (2 * P, 2 * P / 4)
    assert (z3.params, z3.grads) == (2 * P / 4, 2 * P / 4)
    assert z1.step_extra == z2.step_extra == z3.step_extra == 4 * P / 4  # fp32 grad partition
    # the reduce bucket is allocated whole (500M bf16 elements) however small the model:
    # from the backward pass on under ZeRO-1/2, from start-up under ZeRO-3
    assert z1.backward_buffers == z2.backward_buffers == 2 * 500_000_000
    assert z1.buffers == z2.buffers == 0 and z3.backward_buffers == 0
    gathered = 2 * (SMALL.vocab * SMALL.hidden + SMALL.params)  # lm_head + prefetch (capped)
    assert z3.buffers == 2 * 500_000_000 + gathered
    assert z3.grads_in_forward and z3.grads_persist and not z2.grads_in_forward
    assert z3.moments["eval"] == z3.static + z3.grads + z3.eval  # the flat gradient buffer
    off = estimate(j, Strategy.ZERO3_OFFLOAD)
    assert (off.params, off.grads, off.optimizer) == (0, 0, 0)
    # bf16 weights + fp32 master and Adam + bf16 gradient partition + fp32 gradients, per rank
    assert off.host == 2 * P / 4 + 12 * P / 4 + 2 * P / 4 + 4 * P / 4


def test_fsdp_and_mp_by_hand() -> None:
    j = job(gpus_per_node=4)
    f = estimate(j, Strategy.FSDP)
    # full fine-tuning under FSDP: fp32 shards (the master weights), fp32 gradients and states
    assert (f.params, f.grads, f.optimizer) == (4 * P / 4, 4 * P / 4, 8 * P / 4)
    root = 2 * (SMALL.embed_params + SMALL.head_params)  # gathered in bf16, whole
    two_layers = 2 * 2 * SMALL.layer_params
    assert f.buffers == root + two_layers
    # a unit's bf16 gradients and their fp32 copy for the reduce-scatter
    assert f.backward_buffers == 6 * SMALL.layer_params
    assert f.step_extra == 6 * (SMALL.embed_params + SMALL.head_params)
    lora = estimate(job(gpus_per_node=4, tuning=Tuning.LORA), Strategy.FSDP)
    adapters = SMALL.lora_params(16)
    assert lora.params == (2 * P + 4 * adapters) / 4 and lora.step_extra == 0
    # mixed precision gathers the fp32 adapters in bf16: peft casts no input
    assert batch(job(tuning=Tuning.LORA), Strategy.FSDP, A).lora_bytes == 2
    m = estimate(j, Strategy.MP)
    assert (m.params, m.grads, m.optimizer, m.buffers) == (2 * P / 4, 2 * P / 4, 12 * P / 4, 0)
    assert m.activations == terms(j, Strategy.MP)["activations"] / 4


@pytest.mark.parametrize("strategy", ALL)
def test_kernels_decide_the_loss_and_the_attention(strategy: Strategy) -> None:
    """auto is Liger on GPUs (the image installs it), with the fused loss except under
    ZeRO-3, where the trainer keeps the logits; packing then runs flash varlen attention."""
    fused = strategy not in (Strategy.ZERO3, Strategy.ZERO3_OFFLOAD)
    for kernels in (Kernels.AUTO, Kernels.LIGER):
        x = batch(job(kernels=kernels), strategy, A)
        assert x.liger and x.fused_loss is fused and x.varlen and not x.has_mask
    none = batch(job(kernels=Kernels.NONE), strategy, A)
    assert not (none.liger or none.fused_loss or none.varlen) and none.has_mask
    bare = batch(job(), strategy, dataclasses.replace(A, liger_installed=False))
    assert not bare.liger and bare.varlen  # varlen needs only torch, not liger-kernel
    padded = batch(job(packing=False), strategy, A)
    assert not padded.varlen and not padded.packed and padded.padded


@pytest.mark.parametrize("micro_batch", [2, 8, 32])
def test_the_evaluation_pass_goes_a_micro_batch_at_a_time(micro_batch) -> None:
    """Llama-3.2-1B: the evaluation pass holds the logits of min(16, micro-batch) rows of
    1024 tokens, not all 16 at once (the trainer before it chunked: 21 GB)."""
    j = Job(arch=KNOWN["llama-3.2-1b"], gpus_per_node=4, micro_batch=micro_batch,
            seq_len=1024)
    b = estimate(j, Strategy.DDP)
    rows = min(micro_batch, A.eval_rows)
    assert b.eval == pytest.approx(10 * rows * 1024 * 128256, rel=0.01)


@pytest.mark.parametrize("strategy,fields", [
    (Strategy.ZERO3, ("params", "grads", "optimizer")),
    (Strategy.FSDP, ("params", "grads", "optimizer")),
    (Strategy.ZERO2, ("grads", "optimizer")),
    (Strategy.ZERO1, ("optimizer",)),
])
@pytest.mark.parametrize("tuning", list(Tuning))
def test_sharded_terms_divide_by_the_world_size(strategy, fields, tuning) -> None:
    one = estimate(Job(arch=KNOWN["llama-3-8b"], tuning=tuning), strategy)
    for gpus, nodes in ((2, 1), (8, 1), (8, 8)):
        many = estimate(Job(arch=KNOWN["llama-3-8b"], tuning=tuning, gpus_per_node=gpus,
                            nodes=nodes), strategy)
        for name in fields:
            assert getattr(many, name) * gpus * nodes == pytest.approx(getattr(one, name))
        assert many.activations == one.activations  # data parallel: same micro-batch


@pytest.mark.parametrize("strategy", ALL)
@pytest.mark.parametrize("tuning", list(Tuning))
def test_peak_grows_with_the_batch_and_not_with_more_gpus(strategy, tuning) -> None:
    """Non-decreasing rather than growing: when the end of the backward pass or the
    evaluation pass is the peak, a bigger batch only raises another moment."""
    base = Job(arch=KNOWN["llama-3-8b"], tuning=tuning, gpus_per_node=2, micro_batch=2,
               seq_len=512)
    b = estimate(base, strategy)
    for bigger in (dict(micro_batch=3), dict(seq_len=1024)):
        grown = estimate(dataclasses.replace(base, **bigger), strategy)
        assert grown.activations > b.activations and grown.peak >= b.peak
    if tuning is not Tuning.FULL:
        wider = estimate(dataclasses.replace(base, lora_r=64), strategy)
        # (offload holds no adapter on the GPU, and its peak is the evaluation pass)
        assert wider.activations > b.activations and wider.peak >= b.peak
    if strategy is not Strategy.DDP:  # DDP replicates; everything else holds less on more GPUs
        assert estimate(dataclasses.replace(base, gpus_per_node=8), strategy).peak <= b.peak
    ckpt = estimate(dataclasses.replace(base, checkpointing=True), strategy)
    assert ckpt.activations < b.activations and ckpt.peak <= b.peak


def test_peak_is_the_larger_moment_of_a_step() -> None:
    b = Breakdown(strategy=Strategy.DDP, params=10, grads=5, optimizer=20, activations=30,
                  buffers=1)
    assert b.peak == 61 and b.peak_moment == "forward"  # activations, no gradients yet
    assert dataclasses.replace(b, grads_in_forward=True).peak == 66
    assert dataclasses.replace(b, step_extra=100).peak == 136  # the optimizer step
    assert dataclasses.replace(b, loss=7, recompute=4).peak == 68  # never both at once
    assert dataclasses.replace(b, backward_buffers=2).moments == {
        "forward": 63, "step": 38, "eval": 31}
    ev = dataclasses.replace(b, eval=50, grads_persist=True)
    assert ev.peak == 86 and ev.peak_moment == "eval"  # ZeRO-3's gradients stay


def test_gradient_accumulation_keeps_gradients_through_the_forward_pass() -> None:
    one, two = (estimate(job(grad_accum=k), Strategy.DDP) for k in (1, 2))
    assert not one.grads_in_forward and two.grads_in_forward and not two.grads_persist
    assert two.moments["forward"] == one.moments["forward"] + one.grads
    assert two.moments["eval"] == one.moments["eval"]  # zero_grad freed them by then


def test_assumptions_change_what_they_should() -> None:
    j = Job(arch=KNOWN["llama-3-8b"], tuning=Tuning.FULL, gpus_per_node=8)
    small = dataclasses.replace(A, zero_bucket=50_000_000)
    assert estimate(j, Strategy.ZERO2, small).backward_buffers == 2 * 50_000_000
    assert estimate(j, Strategy.ZERO2).backward_buffers == 2 * 500_000_000
    padded = dataclasses.replace(j, packing=False, kernels=Kernels.NONE)
    unpadded = dataclasses.replace(A, padded=False)
    assert estimate(padded, Strategy.DDP, unpadded).activations < estimate(
        padded, Strategy.DDP).activations
    no_gqa = dataclasses.replace(A, varlen_gqa=False)
    assert estimate(j, Strategy.DDP, no_gqa).activations > estimate(j, Strategy.DDP).activations


def test_assumptions_follow_the_trainer() -> None:
    """The reload check's rows, the strategies without the fused loss and ZeRO-3's
    prefetch are the trainer's own constants, read here so that a change there fails here."""
    from mgft.plan.memory import NO_FUSED_LOSS
    from mgft_train import kernels
    from mgft_train.evaluate import RELOAD_CHECK_ROWS
    from mgft_train.parallel.zero import PREFETCH_ELEMENTS

    assert A.eval_rows == RELOAD_CHECK_ROWS
    assert set(NO_FUSED_LOSS) == set(kernels.NO_FUSED_LOSS)
    assert A.zero3_prefetch == PREFETCH_ELEMENTS


@pytest.mark.parametrize("recompute", [True, False], ids=["recompute", "default"])
@pytest.mark.parametrize("strategy", list(Strategy))
def test_lora_dropout_costs_activations_only_where_the_trainer_stores_it(strategy,
                                                                        recompute) -> None:
    """With --lora-dropout-recompute, mgft_train.lora_dropout recomputes the dropout under
    ddp, zero1, zero2 and mp, so there a dropout of 0.05 costs what no dropout costs; by
    default, and always under FSDP and ZeRO-3, peft stores
    a dropout output and mask per adapter: 117 KB per token and block at Llama-3-8B
    (q, k, v, o, gate, up: 4,096 wide; down: 14,336; 2 bytes and a 1-byte mask), less the
    inputs that no dropout shares (q/k/v's, gate/up's: 2 x 4,096 x 2 bytes) and down's own
    input, which the no-dropout adapter keeps (14,336 x 2 bytes)."""
    if strategy is Strategy.AUTO:
        return
    kept, none = (estimate(Job(arch=KNOWN["llama-3-8b"], micro_batch=1, seq_len=1024,
                               lora_dropout=p, lora_dropout_recompute=recompute), strategy)
                  for p in (0.05, 0.0))
    stored = ((6 * 4096 + 14336) * 3 - 2 * 4096 * 2 - 14336 * 2) * 32 * 1024
    if recompute and strategy in (Strategy.DDP, Strategy.ZERO1, Strategy.ZERO2, Strategy.MP):
        assert kept.activations == none.activations
    else:
        assert kept.activations - none.activations == pytest.approx(stored, rel=0.02)
