"""A tiny random-init config of every supported family (mgft.spec.families), shaped so that what
sets the family apart is exercised: sliding windows shorter than the samples, attention and
final-logit softcapping small enough to bite, fused projections, q/k norms, grouped heads.

Used by the fidelity tests (tests/trainer/test_families.py) and bench/fidelity.py.
"""

from __future__ import annotations

from typing import Any

VOCAB = 256
WINDOW = 8  # tokens a sliding-window query sees; the test samples are longer
# Two groups of key/value heads, head_dim unlike hidden // heads (Gemma's own habit).
SHAPE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0,
             initializer_range=0.2, attention_dropout=0.0)
ALTERNATING = ["sliding_attention", "full_attention"] * 2

# What each family adds to SHAPE. Softcaps are far below the published 50 and 30 so that
# random weights reach them: a softcap that never bites proves nothing.
EXTRA: dict[str, dict[str, Any]] = {
    "llama": {},
    "mistral": {"sliding_window": WINDOW},
    "qwen2": {"use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 2},
    "qwen3": {"use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 2},
    "gemma": {},
    "gemma2": {"sliding_window": WINDOW, "layer_types": ALTERNATING,
               "attn_logit_softcapping": 1.0, "final_logit_softcapping": 2.0,
               "query_pre_attn_scalar": 16},
    "gemma3_text": {"sliding_window": WINDOW, "layer_types": ALTERNATING,
                    "query_pre_attn_scalar": 16},
    "phi3": {"sliding_window": WINDOW, "pad_token_id": 0},
}


def config(model_type: str, **overrides: Any) -> Any:
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **(SHAPE | EXTRA[model_type] | overrides))


def samples(lengths: tuple[int, ...], vocab: int = VOCAB, seed: int = 0) -> list[Any]:
    """Random-token samples of these lengths. The first token is no target (as encode's BOS):
    the model's shifted loss would otherwise score a packed sample's last token against the
    next sample's first."""
    import random

    from mgft_train.data.encode import IGNORE, Example

    rng = random.Random(seed)
    out = []
    for n in lengths:
        ids = [rng.randrange(3, vocab) for _ in range(n)]
        out.append(Example(input_ids=ids, labels=[IGNORE, *ids[1:]]))
    return out
