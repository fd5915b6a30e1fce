"""mgft_train/lora_dropout.py: LoRA dropout recomputed in the backward pass, on a tiny Llama
built through transformers and peft as training builds it. The reference is peft's own
modules on a copy of the same model, under the same random state."""

from __future__ import annotations

import copy

import pytest
import torch
from mgft.spec.job import Strategy, TrainSpec
from mgft_train import lora_dropout, tiny_families
from mgft_train.model import add_lora

P = 0.3  # large, so that a mask that is not the reference's shows in the loss


def peft_model(p: float = P):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_families.config("llama"))
    model = add_lora(model, TrainSpec(model="m", dataset="d", lora_dropout=p))
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: make the adapters (and their dropout) count
            torch.nn.init.normal_(param, std=0.05)
    return model.train()


def batch():
    ids = torch.randint(3, 256, (2, 24), generator=torch.Generator().manual_seed(6))
    return {"input_ids": ids, "labels": ids}


def loss_and_grads(model, seed: int):
    torch.manual_seed(seed)
    loss = model(**batch()).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    # what the random generator gives next: the backward pass leaves it where peft's does
    grads["next random draw"] = torch.rand(4)
    return loss.detach(), grads


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "in-checkpointed-blocks"])
def test_the_masks_losses_and_gradients_are_peft_s_own(checkpointing):
    reference = peft_model()
    if checkpointing:  # --activation-checkpointing: a checkpoint inside each block's
        from mgft_train.model import enable_checkpointing

        enable_checkpointing(reference)
    folded = copy.deepcopy(reference)
    assert lora_dropout.fold(folded, Strategy.DDP) == 4 * 7  # 4 blocks x 7 projections
    assert lora_dropout.applied(folded) == ["lora-dropout:recomputed:28-adapters"]
    assert lora_dropout.applied(reference) == ["lora-dropout:stored:28-adapters"]
    assert set(folded.state_dict()) == set(reference.state_dict())  # adapters save as before
    for seed in (10, 11):
        ref_loss, ref_grads = loss_and_grads(reference, seed)
        loss, grads = loss_and_grads(folded, seed)
        assert torch.equal(loss, ref_loss)
        for name, grad in ref_grads.items():
            torch.testing.assert_close(grads[name], grad, rtol=1e-6, atol=1e-9, msg=name)
    # The dropout did act: another random state gives another loss, and so does eval mode.
    assert not torch.equal(loss_and_grads(folded, 12)[0], loss)
    with torch.no_grad():
        assert not torch.equal(folded.eval()(**batch()).loss, loss)
        assert torch.equal(folded(**batch()).loss, reference.eval()(**batch()).loss)


def saved_bytes(model) -> int:
    """Bytes autograd keeps for the backward pass (each storage once)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.manual_seed(10)
        model(**batch())
    return sum(storages.values())


def test_it_keeps_no_dropout_output_in_memory():
    reference = peft_model()
    folded = copy.deepcopy(reference)
    lora_dropout.fold(folded, Strategy.DDP)
    config = reference.config
    tokens, hidden, blocks = 2 * 24, config.hidden_size, config.num_hidden_layers
    # peft keeps a dropout output per adapter (q, k, v, o, gate, up: hidden wide; down:
    # intermediate wide), fp32 here; the fold keeps at most each distinct input once
    # (q/k/v's, o's, gate/up's and down's), so it saves at least the difference.
    kept_by_peft = (6 * hidden + config.intermediate_size) * tokens * 4 * blocks
    kept_by_fold = (3 * hidden + config.intermediate_size) * tokens * 4 * blocks
    assert saved_bytes(reference) - saved_bytes(folded) >= kept_by_peft - kept_by_fold


def test_strategies_that_gather_weights_per_module_keep_peft_s_dropout():
    for strategy in (Strategy.ZERO3, Strategy.ZERO3_OFFLOAD, Strategy.FSDP):
        model = peft_model()
        assert lora_dropout.fold(model, strategy) == 0
        assert lora_dropout.applied(model) == ["lora-dropout:stored:28-adapters"]


def test_without_dropout_there_is_nothing_to_fold():
    model = peft_model(0.0)
    assert lora_dropout.fold(model, Strategy.DDP) == 0
    assert lora_dropout.applied(model) == []



@pytest.mark.parametrize("recompute", [False, True])
def test_the_trainer_folds_only_when_asked(tiny, recompute):
    """--lora-dropout-recompute is the user's choice (it costs tokens/s on a GPU host); by
    default the trainer keeps peft's modules, and metrics.json's record says which ran."""
    from mgft_train import model
    from mgft_train.distributed import Dist

    cpu = Dist(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="none")
    spec = TrainSpec(model=str(tiny.model_dir), dataset="d", lora_dropout=0.1,
                     lora_dropout_recompute=recompute)
    net = model.load_model(spec, cpu)
    config = net.config
    adapters = config.num_hidden_layers * 7  # every projection of every block
    kept = "recomputed" if recompute else "stored"
    assert f"lora-dropout:{kept}:{adapters}-adapters" in model.describe(net)["kernels"]
