"""Decoder-only model shapes: read from a config.json, or looked up by a known name.

Only the numbers that memory depends on are kept. Parameter counts are exact for the Llama,
Mistral and Qwen2 families (a test builds each known model on torch's meta device and compares).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgft.errors import SpecError

# model_type values whose decoder layer is exactly the Llama one (RMSNorm, GQA attention with
# rotary embeddings, SwiGLU MLP); qwen2 adds a bias to q, k and v.
LLAMA_LIKE = ("llama", "mistral", "qwen2")


@dataclass(frozen=True, kw_only=True, slots=True)
class Arch:
    name: str
    family: str  # the transformers model_type
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool  # lm_head shares the embedding matrix
    qkv_bias: bool = False
    max_positions: int = 8192

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> list[tuple[str, int, int]]:
        """(name, in, out) of each nn.Linear in one decoder layer: what LoRA "all-linear" adapts
        and what 4-bit quantization replaces."""
        h, i, q, kv = self.hidden, self.intermediate, self.q_dim, self.kv_dim
        return [("q_proj", h, q), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", q, h),
                ("gate_proj", h, i), ("up_proj", h, i), ("down_proj", i, h)]

    @property
    def layer_linear_params(self) -> int:
        return sum(n_in * n_out for _, n_in, n_out in self.linears())

    @property
    def layer_params(self) -> int:
        bias = self.q_dim + 2 * self.kv_dim if self.qkv_bias else 0
        return self.layer_linear_params + bias + 2 * self.hidden  # + two RMSNorm weights

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
        """A config.json for transformers with these shapes (for tests and benchmarks)."""
        arch_class = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                      "qwen2": "Qwen2ForCausalLM"}[self.family]
        config: dict[str, Any] = {
            "model_type": self.family, "architectures": [arch_class], "vocab_size": self.vocab,
            "hidden_size": self.hidden, "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers, "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads, "head_dim": self.head_dim,
            "tie_word_embeddings": self.tied, "max_position_embeddings": self.max_positions,
            "hidden_act": "silu", "rms_norm_eps": 1e-5,
        }
        if self.family == "llama":
            config["attention_bias"] = self.qkv_bias
        return config


def _arch(name: str, family: str, vocab: int, hidden: int, inter: int, layers: int, heads: int,
          kv: int, tied: bool = False, head_dim: int | None = None, max_pos: int = 8192) -> Arch:
    return Arch(name=name, family=family, vocab=vocab, hidden=hidden, intermediate=inter,
                layers=layers, heads=heads, kv_heads=kv, head_dim=head_dim or hidden // heads,
                tied=tied, qkv_bias=family == "qwen2", max_positions=max_pos)


# The config.json numbers of the published checkpoints (Hugging Face model cards).
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
    _arch("mistral-7b", "mistral", 32768, 4096, 14336, 32, 32, 8, max_pos=32768),  # v0.3
    _arch("qwen2.5-0.5b", "qwen2", 151936, 896, 4864, 24, 14, 2, tied=True, max_pos=32768),
    _arch("qwen2.5-1.5b", "qwen2", 151936, 1536, 8960, 28, 12, 2, tied=True, max_pos=32768),
    _arch("qwen2.5-7b", "qwen2", 152064, 3584, 18944, 28, 28, 4, max_pos=32768),
    _arch("qwen2.5-14b", "qwen2", 152064, 5120, 13824, 48, 40, 8, max_pos=32768),
    _arch("qwen2.5-32b", "qwen2", 152064, 5120, 27648, 64, 40, 8, max_pos=32768),
    _arch("qwen2.5-72b", "qwen2", 152064, 8192, 29568, 80, 64, 8, max_pos=32768),
)}
ALIASES = {"mistral-7b-v0.3": "mistral-7b", "meta-llama-3-8b": "llama-3-8b",
           "meta-llama-3-70b": "llama-3-70b"}


def normalize(name: str) -> str:
    """`meta-llama/Meta-Llama-3-8B-Instruct` -> `llama-3-8b`: the shape, not the fine-tune."""
    base = name.strip().rstrip("/").rsplit("/", 1)[-1].lower()
    base = re.sub(r"^meta-", "", base)
    base = re.sub(r"-(instruct|chat|hf|base)(?=-|$)", "", base)
    return ALIASES.get(base, base)


def from_config(config: dict[str, Any], name: str) -> Arch:
    """An Arch from a transformers config.json (Llama-style decoders)."""
    family = config.get("model_type", "llama")
    if family not in LLAMA_LIKE:
        raise SpecError("--model", name, f"model_type {family!r} is not one mgft can size "
                        f"(it knows {', '.join(LLAMA_LIKE)})",
                        "pass the closest known architecture by name, e.g. --model llama-3-8b")
    try:
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        return Arch(
            name=name, family=family, vocab=int(config["vocab_size"]), hidden=hidden,
            intermediate=int(config["intermediate_size"]),
            layers=int(config["num_hidden_layers"]), heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            tied=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=family == "qwen2" or bool(config.get("attention_bias", False)),
            max_positions=int(config.get("max_position_embeddings", 8192)))
    except KeyError as err:
        raise SpecError("--model", name, f"config.json has no {err.args[0]!r}",
                        "pass a transformers config.json of a decoder-only model") from None
    except (TypeError, ValueError) as err:
        raise SpecError("--model", name, f"config.json holds a non-numeric shape ({err})",
                        "pass a transformers config.json of a decoder-only model") from None


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
