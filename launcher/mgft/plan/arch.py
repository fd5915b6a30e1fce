"""Decoder-only model shapes: read from a config.json, or looked up by a known name.

Kept: the numbers memory depends on, and what sets a family's attention apart (the sliding
window, the softcaps), so that `hf_config` builds a model that computes as the published one
does. Parameter counts are exact for every family mgft trains (mgft.spec.families): a test builds
every known model, and a tiny model of each family, on torch's meta device and compares.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgft.spec.errors import SpecError
from mgft.spec.families import FAMILIES, supported_line


@dataclass(frozen=True, kw_only=True, slots=True)
class Layout:
    """What a family's decoder layer holds beyond its shapes (transformers'
    models/<family>/modeling_<family>.py)."""

    causal_lm: str  # the transformers class
    norms: int = 2  # hidden-wide RMSNorms per layer (Gemma-2 and -3 add two around the MLP)
    qk_norm: bool = False  # an RMSNorm of head_dim on q and on k in every layer
    fused: bool = False  # one qkv_proj and one gate_up_proj (Phi-3)
    gemma: bool = False  # RMSNorm as x·(1 + w) in fp32, GeGLU, a scaled embedding
    qkv_bias: bool = False  # q, k and v always carry a bias (Qwen2)
    attention_bias: bool = True  # the config's attention_bias adds a bias to q, k, v and o
    mlp_bias: bool = False  # the config's mlp_bias adds one to gate, up and down (Llama)
    window: bool = True  # the config has sliding_window
    use_window: bool = False  # ... and it applies only under use_sliding_window (Qwen)
    softcap: bool = False  # the config has the softcaps and query_pre_attn_scalar (Gemma-2, -3)
    # With a sliding window, every `global_every`-th layer attends to everything and the
    # others use the window (transformers' default layer_types); 0: every layer uses it.
    global_every: int = 0
    rope_per_type: bool = False  # cos/sin computed for each layer type (Gemma-3's two thetas)
    eager: bool = False  # transformers' default attention is eager (sdpa cannot softcap)
    act: str = "silu"
    act_key: str = "hidden_act"
    eps: float = 1e-5  # rms_norm_eps, as the published checkpoints set it
    # What transformers' config class fills in for a key the config.json leaves out (older
    # Gemma files have no tie_word_embeddings).
    defaults: dict[str, Any] = field(default_factory=dict)


GEMMA = dict(gemma=True, act="gelu_pytorch_tanh", eps=1e-6)
GEMMA_DEFAULTS = {"tie_word_embeddings": True, "head_dim": 256}
LOCAL = {"sliding_window": 4096, "query_pre_attn_scalar": 256}
# One entry per family in mgft.spec.families.FAMILIES (a test holds them equal).
LAYOUTS: dict[str, Layout] = {
    "llama": Layout(causal_lm="LlamaForCausalLM", mlp_bias=True, window=False),
    "mistral": Layout(causal_lm="MistralForCausalLM", attention_bias=False,
                      defaults={"num_key_value_heads": 8, "sliding_window": 4096}),
    "qwen2": Layout(causal_lm="Qwen2ForCausalLM", qkv_bias=True, attention_bias=False,
                    use_window=True, eps=1e-6, defaults={"num_key_value_heads": 32}),
    "qwen3": Layout(causal_lm="Qwen3ForCausalLM", qk_norm=True, use_window=True, eps=1e-6,
                    defaults={"num_key_value_heads": 32, "head_dim": 128}),
    "gemma": Layout(causal_lm="GemmaForCausalLM", window=False,
                    defaults=GEMMA_DEFAULTS | {"num_key_value_heads": 16}, **GEMMA),
    "gemma2": Layout(causal_lm="Gemma2ForCausalLM", norms=4, softcap=True, global_every=2,
                     eager=True, act_key="hidden_activation", **GEMMA,
                     defaults=GEMMA_DEFAULTS | LOCAL | {
                         "num_key_value_heads": 4, "attn_logit_softcapping": 50.0,
                         "final_logit_softcapping": 30.0}),
    "gemma3_text": Layout(causal_lm="Gemma3ForCausalLM", norms=4, qk_norm=True, softcap=True,
                          global_every=6, rope_per_type=True, act_key="hidden_activation",
                          **GEMMA,
                          defaults=GEMMA_DEFAULTS | LOCAL | {"num_key_value_heads": 4}),
    "phi3": Layout(causal_lm="Phi3ForCausalLM", fused=True, attention_bias=False),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Arch:
    name: str
    family: str  # the transformers model_type: a key of mgft.spec.families.FAMILIES
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool  # lm_head shares the embedding matrix
    attention_bias: bool = False  # the config's attention_bias (Qwen2's q/k/v biases always)
    mlp_bias: bool = False
    max_positions: int = 8192
    # What attention computes beyond causal attention. Memory does not depend on them, but
    # which kernel runs does (mgft_train.attention), and a final softcap adds a tensor the
    # size of the logits.
    sliding_window: int | None = None  # on every layer, or the local ones (Gemma-2 and -3)
    attn_softcap: float | None = None
    final_softcap: float | None = None
    query_scale: int | None = None  # Gemma-2 and -3 scale scores by query_scale^-0.5

    @property
    def layout(self) -> Layout:
        return LAYOUTS[self.family]

    @property
    def local_layers(self) -> int:
        """Layers that attend through the sliding window. Layer 0 is one of them whenever
        there are any. Qwen's max_window_layers is not read: all of its layers are counted."""
        if self.sliding_window is None:
            return 0
        every = self.layout.global_every
        return self.layers - self.layers // every if every else self.layers

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> list[tuple[str, int, int]]:
        """(name, in, out) of each nn.Linear in one decoder layer: what LoRA "all-linear" adapts
        and what 4-bit quantization replaces. Phi-3's fused projections are one Linear each."""
        h, i, q, kv = self.hidden, self.intermediate, self.q_dim, self.kv_dim
        if self.layout.fused:
            return [("qkv_proj", h, q + 2 * kv), ("o_proj", q, h),
                    ("gate_up_proj", h, 2 * i), ("down_proj", i, h)]
        return [("q_proj", h, q), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", q, h),
                ("gate_proj", h, i), ("up_proj", h, i), ("down_proj", i, h)]

    @property
    def layer_linear_params(self) -> int:
        return sum(n_in * n_out for _, n_in, n_out in self.linears())

    @property
    def qkv_bias(self) -> bool:
        layout = self.layout
        return layout.qkv_bias or (layout.attention_bias and self.attention_bias)

    @property
    def layer_bias_params(self) -> int:
        layout = self.layout
        attention = layout.attention_bias and self.attention_bias
        mlp = layout.mlp_bias and self.mlp_bias
        return ((self.q_dim + 2 * self.kv_dim if self.qkv_bias else 0)
                + (self.hidden if attention else 0)  # o_proj
                + (2 * self.intermediate + self.hidden if mlp else 0))

    @property
    def layer_norm_params(self) -> int:
        layout = self.layout
        return layout.norms * self.hidden + (2 * self.head_dim if layout.qk_norm else 0)

    @property
    def layer_params(self) -> int:
        return self.layer_linear_params + self.layer_bias_params + self.layer_norm_params

    @property
    def embed_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def head_params(self) -> int:
        """lm_head plus the final norm (a tied lm_head adds no parameters of its own)."""
        return (0 if self.tied else self.vocab * self.hidden) + self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.embed_params + self.head_params

    @property
    def linear_params(self) -> int:
        """Parameters in the decoder layers' Linear weights (what QLoRA stores in 4 bits)."""
        return self.layers * self.layer_linear_params

    def lora_params(self, r: int) -> int:
        """peft LoRA on "all-linear" (every Linear but lm_head): A is r x in, B is out x r."""
        return self.layers * r * sum(n_in + n_out for _, n_in, n_out in self.linears())

    def hf_config(self) -> dict[str, Any]:
        """A config.json for transformers with these shapes and this attention (for tests and
        benchmarks). Rope and the other keys that change neither memory nor cost are left at
        transformers' defaults."""
        layout = self.layout
        config: dict[str, Any] = {
            "model_type": self.family, "architectures": [layout.causal_lm],
            "vocab_size": self.vocab, "hidden_size": self.hidden,
            "intermediate_size": self.intermediate, "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim, "tie_word_embeddings": self.tied,
            "max_position_embeddings": self.max_positions, layout.act_key: layout.act,
            "rms_norm_eps": layout.eps,
        }
        if layout.attention_bias:
            config["attention_bias"] = self.attention_bias
        if layout.mlp_bias:
            config["mlp_bias"] = self.mlp_bias
        if layout.window:
            config["sliding_window"] = self.sliding_window
        if layout.use_window:
            config["use_sliding_window"] = self.sliding_window is not None
        if layout.softcap:
            config["attn_logit_softcapping"] = self.attn_softcap
            config["final_logit_softcapping"] = self.final_softcap
        if layout.softcap and self.query_scale is not None:
            config["query_pre_attn_scalar"] = self.query_scale
        return config


def _arch(name: str, family: str, vocab: int, hidden: int, inter: int, layers: int, heads: int,
          kv: int, tied: bool = False, head_dim: int | None = None, max_pos: int = 8192,
          **attention: Any) -> Arch:
    return Arch(name=name, family=family, vocab=vocab, hidden=hidden, intermediate=inter,
                layers=layers, heads=heads, kv_heads=kv, head_dim=head_dim or hidden // heads,
                tied=tied, max_positions=max_pos, **attention)


GEMMA2 = dict(tied=True, head_dim=256, sliding_window=4096, attn_softcap=50.0,
              final_softcap=30.0, query_scale=256)
GEMMA3 = dict(tied=True, head_dim=256, max_pos=131072, sliding_window=1024, query_scale=256)
# The config.json numbers of the published checkpoints (Hugging Face model cards); each
# checked by its published parameter count (tests/launcher/plan/test_arch.py).
KNOWN: dict[str, Arch] = {a.name: a for a in (
    _arch("llama-2-7b", "llama", 32000, 4096, 11008, 32, 32, 32, max_pos=4096),
    _arch("llama-2-13b", "llama", 32000, 5120, 13824, 40, 40, 40, max_pos=4096),
    _arch("llama-3-8b", "llama", 128256, 4096, 14336, 32, 32, 8),
    _arch("llama-3-70b", "llama", 128256, 8192, 28672, 80, 64, 8),
    _arch("llama-3.1-8b", "llama", 128256, 4096, 14336, 32, 32, 8, max_pos=131072),
    _arch("llama-3.1-70b", "llama", 128256, 8192, 28672, 80, 64, 8, max_pos=131072),
    _arch("llama-3.2-1b", "llama", 128256, 2048, 8192, 16, 32, 8, tied=True, head_dim=64,
          max_pos=131072),
    _arch("llama-3.2-3b", "llama", 128256, 3072, 8192, 28, 24, 8, tied=True, max_pos=131072),
    # mistralai/Mistral-7B-v0.3: no sliding window (v0.1 had 4096)
    _arch("mistral-7b", "mistral", 32768, 4096, 14336, 32, 32, 8, max_pos=32768),
    _arch("qwen2.5-0.5b", "qwen2", 151936, 896, 4864, 24, 14, 2, tied=True, max_pos=32768),
    _arch("qwen2.5-1.5b", "qwen2", 151936, 1536, 8960, 28, 12, 2, tied=True, max_pos=32768),
    _arch("qwen2.5-7b", "qwen2", 152064, 3584, 18944, 28, 28, 4, max_pos=32768),
    _arch("qwen2.5-14b", "qwen2", 152064, 5120, 13824, 48, 40, 8, max_pos=32768),
    _arch("qwen2.5-32b", "qwen2", 152064, 5120, 27648, 64, 40, 8, max_pos=32768),
    _arch("qwen2.5-72b", "qwen2", 152064, 8192, 29568, 80, 64, 8, max_pos=32768),
    # Qwen/Qwen3-*: head_dim 128 at every size; 0.6B to 4B tie the embeddings.
    _arch("qwen3-0.6b", "qwen3", 151936, 1024, 3072, 28, 16, 8, tied=True, head_dim=128,
          max_pos=40960),
    _arch("qwen3-1.7b", "qwen3", 151936, 2048, 6144, 28, 16, 8, tied=True, head_dim=128,
          max_pos=40960),
    _arch("qwen3-4b", "qwen3", 151936, 2560, 9728, 36, 32, 8, tied=True, head_dim=128,
          max_pos=40960),
    _arch("qwen3-8b", "qwen3", 151936, 4096, 12288, 36, 32, 8, head_dim=128, max_pos=40960),
    _arch("qwen3-14b", "qwen3", 151936, 5120, 17408, 40, 40, 8, head_dim=128, max_pos=40960),
    _arch("qwen3-32b", "qwen3", 151936, 5120, 25600, 64, 64, 8, head_dim=128, max_pos=40960),
    # google/gemma-2b, gemma-7b: head_dim 256, whatever hidden / heads is.
    _arch("gemma-2b", "gemma", 256000, 2048, 16384, 18, 8, 1, tied=True, head_dim=256),
    _arch("gemma-7b", "gemma", 256000, 3072, 24576, 28, 16, 16, tied=True, head_dim=256),
    # google/gemma-2-*: softcaps 50 (attention) and 30 (logits), a 4096 window on alternate
    # layers; 27B has head_dim 128 and scales queries by 144 = hidden / heads.
    _arch("gemma-2-2b", "gemma2", 256000, 2304, 9216, 26, 8, 4, **GEMMA2),
    _arch("gemma-2-9b", "gemma2", 256000, 3584, 14336, 42, 16, 8, **GEMMA2),
    _arch("gemma-2-27b", "gemma2", 256000, 4608, 36864, 46, 32, 16,
          **(GEMMA2 | dict(head_dim=128, query_scale=144))),
    # google/gemma-3-1b-pt is a text model (gemma3_text): 512 window on 5 of every 6 layers.
    _arch("gemma-3-1b", "gemma3_text", 262144, 1152, 6912, 26, 4, 1,
          **(GEMMA3 | dict(max_pos=32768, sliding_window=512))),
    # google/gemma-3-{4b,12b,27b}-pt are image-text models: these are their text decoders
    # (text_config), without the 0.42B vision tower, which mgft does not train.
    _arch("gemma-3-4b-text", "gemma3_text", 262208, 2560, 10240, 34, 8, 4, **GEMMA3),
    _arch("gemma-3-12b-text", "gemma3_text", 262208, 3840, 15360, 48, 16, 8, **GEMMA3),
    _arch("gemma-3-27b-text", "gemma3_text", 262208, 5376, 21504, 62, 32, 16,
          **(GEMMA3 | dict(head_dim=128, query_scale=168))),
    # microsoft/Phi-3-mini-4k-instruct, Phi-3-medium-4k-instruct: a 2047-token window.
    _arch("phi-3-mini-4k", "phi3", 32064, 3072, 8192, 32, 32, 32, max_pos=4096,
          sliding_window=2047),
    _arch("phi-3-medium-4k", "phi3", 32064, 5120, 17920, 40, 40, 10, max_pos=4096,
          sliding_window=2047),
)}
ALIASES = {"mistral-7b-v0.3": "mistral-7b", "meta-llama-3-8b": "llama-3-8b",
           "meta-llama-3-70b": "llama-3-70b"}


def normalize(name: str) -> str:
    """`meta-llama/Meta-Llama-3-8B-Instruct` -> `llama-3-8b`: the shape, not the fine-tune."""
    base = name.strip().rstrip("/").rsplit("/", 1)[-1].lower()
    base = re.sub(r"^meta-", "", base)
    base = re.sub(r"-(instruct|chat|hf|base|it|pt)(?=-|$)", "", base)
    return ALIASES.get(base, base)


def from_config(config: dict[str, Any], name: str) -> Arch:
    """An Arch from a transformers config.json of a family mgft trains. Keys the file leaves
    out take transformers' defaults for that family."""
    family = config.get("model_type", "llama")
    if family not in FAMILIES:
        raise SpecError("--model", name, f"model_type {family!r} is not a family mgft trains",
                        f"pass a config.json of one of: {supported_line()}")
    layout = LAYOUTS[family]
    config = layout.defaults | config
    try:
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        window = config.get("sliding_window") if layout.window else None
        if layout.use_window and not config.get("use_sliding_window", False):
            window = None
        return Arch(
            name=name, family=family, vocab=int(config["vocab_size"]), hidden=hidden,
            intermediate=int(config["intermediate_size"]),
            layers=int(config["num_hidden_layers"]), heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            tied=bool(config.get("tie_word_embeddings", False)),
            attention_bias=bool(config.get("attention_bias", False)),
            mlp_bias=bool(config.get("mlp_bias", False)),
            max_positions=int(config.get("max_position_embeddings", 8192)),
            sliding_window=_optional(True, window, int),
            attn_softcap=_optional(layout.softcap, config.get("attn_logit_softcapping"), float),
            final_softcap=_optional(layout.softcap, config.get("final_logit_softcapping"),
                                    float),
            query_scale=_optional(layout.softcap, config.get("query_pre_attn_scalar"), int))
    except KeyError as err:
        raise SpecError("--model", name, f"config.json has no {err.args[0]!r}",
                        "pass a transformers config.json of a decoder-only model") from None
    except (TypeError, ValueError) as err:
        raise SpecError("--model", name, f"config.json holds a non-numeric shape ({err})",
                        "pass a transformers config.json of a decoder-only model") from None


def _optional(known: bool, value: Any, kind: type) -> Any:
    """`value` as `kind` where the family has the key and the config sets it, else None."""
    return kind(value) if known and value is not None else None


def config_path(model: str) -> Path | None:
    """The config.json that `model` points at on this machine, if any."""
    path = Path(model)
    if path.is_dir() and (path / "config.json").is_file():
        return path / "config.json"
    if path.is_file():
        return path
    return None


def resolve(model: str) -> Arch:
    """A known architecture name, a model directory, or a config.json file."""
    path = config_path(model)
    if path is not None:
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise SpecError("--model", model, f"cannot read {path} as JSON ({err})",
                            "pass a transformers config.json or a known name") from None
        if not isinstance(config, dict):
            raise SpecError("--model", model, f"{path} is not a JSON object",
                            "pass a transformers config.json or a known name")
        return from_config(config, str(model))
    known = KNOWN.get(normalize(model))
    if known is None:
        raise SpecError("--model", model, "neither a config.json here nor a known architecture",
                        f"pass a model directory or one of: {', '.join(KNOWN)}")
    return known
