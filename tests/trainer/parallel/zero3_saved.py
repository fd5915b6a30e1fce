"""Run by torchrun (2 CPU ranks, gloo): one forward and backward pass of a tiny LoRA Llama
under the trainer's real ZeRO-3 (`parallel.apply`), counting what autograd saves. Prints, from
rank 0, one JSON line: the bytes of saved tensors that are not weights, the tokens, the loss
and the adapters' gradient norm. LoRA dropout is on (the default), so a frozen layer's input
is not also the adapter's input.

    torchrun --nproc-per-node 2 zero3_saved.py MODEL_DIR DATASET {ours,deepspeed}

`deepspeed` leaves DeepSpeed's own linear in place (it swaps torch.nn.functional.linear for
its memory-efficient one when it partitions the model): the control."""

from __future__ import annotations

import json
import sys

import torch
from mgft.contract.env import DistEnv
from mgft.spec.job import Strategy, TrainSpec, Tuning
from mgft_train import distributed, model, parallel
from mgft_train.parallel import zero, zero3_linear

TOKENS = (2, 32)


def main(model_dir: str, dataset: str, mode: str) -> None:
    zero.PERSIST_ELEMENTS = 0  # the tiny model's weights are all small: partition them all
    if mode == "deepspeed":
        zero3_linear.reference_weights = lambda m: 0
    ctx = distributed.init(DistEnv.from_env(), torch.device("cpu"))
    spec = TrainSpec(model=model_dir, dataset=dataset, strategy=Strategy.ZERO3,
                     tuning=Tuning.LORA, micro_batch=2)
    engine = parallel.apply(model.load_model(spec, ctx), spec, ctx, total=4)
    saved: dict[int, int] = {}  # storage address -> bytes; saved tensors live to the backward

    def pack(t: torch.Tensor) -> torch.Tensor:
        weight = isinstance(t, torch.nn.Parameter) or isinstance(t._base, torch.nn.Parameter)
        if not weight:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    torch.manual_seed(0)
    ids = torch.randint(3, 100, TOKENS)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = engine.model(input_ids=ids, labels=ids).loss
    engine.model.backward(loss)
    from deepspeed.utils import safe_get_full_grad

    norm = sum(float(safe_get_full_grad(p).norm()) ** 2 for p in
               engine.model.module.parameters() if p.requires_grad) ** 0.5
    report = {"saved_bytes": sum(saved.values()), "tokens": TOKENS[0] * TOKENS[1],
              "loss": float(loss), "grad_norm": norm}
    if ctx.is_main:
        print(json.dumps(report), flush=True)
    distributed.teardown(ctx)


if __name__ == "__main__":
    main(*sys.argv[1:])
