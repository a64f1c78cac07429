"""What a model's files say without loading it: the family and size from ``config.json``, the parameter count from
the safetensors headers (no weight is read), the vocabulary of a tokenizer folder.

Light (json and struct only): the model sources (:mod:`harness_plugins.sources`) use it to validate and plan cells.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.api.components import ModelSize, dtype_bytes
from harness.errors import HarnessError

#: ``model_type`` values of decoder-only models whose architectures do not end in ForCausalLM / LMHeadModel.
DECODER_TYPES = frozenset(
    {
        "gpt2",
        "gpt_neo",
        "gpt_neox",
        "gptj",
        "llama",
        "mistral",
        "mixtral",
        "qwen2",
        "qwen3",
        "phi",
        "phi3",
        "gemma",
        "gemma2",
        "gemma3",
        "gemma3_text",
        "falcon",
        "opt",
        "bloom",
        "olmo",
        "olmo2",
        "starcoder2",
        "codegen",
        "smollm3",
    }
)
#: ``model_type`` values of encoder-decoder models (used when a config omits ``is_encoder_decoder``).
ENCODER_DECODER_TYPES = frozenset(
    {"t5", "mt5", "umt5", "bart", "mbart", "marian", "pegasus", "led", "longt5", "m2m_100", "nllb_moe", "fsmt"}
)


def family_from_config(config: Mapping[str, Any]) -> str:
    """The model family a ``config.json`` describes."""
    model_type = str(config.get("model_type", ""))
    if config.get("is_encoder_decoder") or model_type in ENCODER_DECODER_TYPES:
        return "encoder-decoder"
    architectures = config.get("architectures") or []
    if model_type in DECODER_TYPES or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return "decoder"
    return "encoder"


#: ``model_type`` values whose feed-forward block is gated (gate, up and down matrices) and has no biases.
GATED_TYPES = frozenset(
    {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3",
     "gemma3_text", "phi3", "olmo", "olmo2", "smollm3", "granite", "cohere", "internlm2", "deepseek_v2"}
)
#: ``model_type`` values without biases in their linear layers besides the gated ones.
NO_BIAS_TYPES = frozenset({"t5", "mt5", "umt5", "longt5"})
#: Learned absolute position embeddings: ``model_type`` -> positions when the config does not say.
ABSOLUTE_POSITIONS = {
    "bert": 512, "roberta": 514, "xlm-roberta": 514, "distilbert": 512, "electra": 512, "gpt2": 1024, "gpt_neo": 2048,
    "opt": 2050, "bart": 1026, "mbart": 1026, "marian": 512,
}
_MAX_HEADER_BYTES = 100 * 2**20


def _count(config: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = config.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def size_from_config(config: Mapping[str, Any], bytes_per_parameter: int | None = None) -> ModelSize | None:
    """A model's size from its ``config.json``, counting the weights of each block (attention with grouped key/value
    heads, gated or plain feed-forward, experts, biases and norms), the embeddings and an untied language model head;
    ``None`` when the config names no hidden size or layer count. Within a few percent for the usual architectures."""
    text = config.get("text_config")
    if isinstance(text, Mapping) and not _count(config, "hidden_size", "d_model", "n_embd"):
        config = {"model_type": config.get("model_type"), **text}
    hidden = _count(config, "hidden_size", "d_model", "n_embd", "dim")
    layers = _count(config, "num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers")
    if not hidden or not layers:
        return None
    model_type, family = str(config.get("model_type", "")), family_from_config(config)
    decoder = (_count(config, "num_decoder_layers", "decoder_layers") or layers) if family == "encoder-decoder" else 0
    heads = _count(config, "num_attention_heads", "num_heads", "n_head", "n_heads", "encoder_attention_heads")
    heads = heads or max(1, hidden // 64)
    head_dim = _count(config, "head_dim", "d_kv") or hidden // heads
    kv_heads = _count(config, "num_key_value_heads", "num_kv_heads") or heads
    inner = _count(config, "intermediate_size", "d_ff", "n_inner", "ffn_dim", "encoder_ffn_dim") or 4 * hidden
    vocab = _count(config, "vocab_size") or 0
    experts = _count(config, "num_local_experts", "num_experts") or 1
    gated = model_type in GATED_TYPES or str(config.get("feed_forward_proj", "")).startswith("gated")
    biased = model_type not in GATED_TYPES and model_type not in NO_BIAS_TYPES
    norm = 2 * hidden if biased else hidden
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + (4 * hidden if biased else 0)
    mlp = experts * ((3 if gated else 2) * hidden * inner + (inner + hidden if biased else 0))
    block = attention + mlp + 2 * norm
    total = layers * block + decoder * (block + attention + norm) + norm
    positions = 0
    if model_type in ABSOLUTE_POSITIONS or config.get("position_embedding_type") == "absolute":
        positions = _count(config, "max_position_embeddings", "n_positions") or ABSOLUTE_POSITIONS.get(model_type, 0)
        positions *= 2 if decoder else 1  # a table per stack
    total += (vocab + positions + (_count(config, "type_vocab_size") or 0)) * hidden
    if model_type in ("bert", "roberta", "xlm-roberta"):
        total += hidden * hidden + hidden + norm  # pooler, embedding norm
    if family != "encoder" and config.get("tie_word_embeddings") is False:
        total += vocab * hidden
    return ModelSize(total, layers + decoder, hidden, heads, vocab or None, bytes_per_parameter)


def safetensors_parameters(folder: Path) -> int | None:
    """Parameters stored in a folder's ``model.safetensors`` (or the shards its index names), counted from the files'
    JSON headers without reading any weight; ``None`` without such files."""
    index = folder / "model.safetensors.index.json"
    try:
        if index.is_file():
            files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        else:
            files = ["model.safetensors"] if (folder / "model.safetensors").is_file() else []
        total = 0
        for name in files:
            with open(folder / name, "rb") as fh:
                (length,) = struct.unpack("<Q", fh.read(8))
                if length > _MAX_HEADER_BYTES:
                    return None
                header = json.loads(fh.read(length))
            total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error):
        return None
    return total or None


def folder_size(folder: Path, dtype: str) -> ModelSize | None:
    """Size of a model folder: shape from ``config.json``, parameters from its safetensors headers when present;
    ``dtype`` (``auto``: the config's ``torch_dtype``) gives the bytes per weight."""
    try:
        config = read_config(folder / "config.json")
    except HarnessError:
        return None
    width = dtype_bytes(dtype) or dtype_bytes(config.get("torch_dtype") or config.get("dtype"))
    size = size_from_config(config, width)
    counted = safetensors_parameters(folder)
    if counted:
        return replace(size, parameters=counted) if size else ModelSize(counted, bytes_per_parameter=width)
    return size


def tokenizer_vocab(folder: Path) -> int | None:
    """Vocabulary size of a tokenizer folder (``tokenizer.json``'s vocabulary and added tokens, else ``vocab.txt``)."""
    try:
        data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        vocab = len(data["model"]["vocab"])
        return vocab + sum(1 for t in data.get("added_tokens", []) if t.get("id", 0) >= vocab)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    try:
        with open(folder / "vocab.txt", encoding="utf-8") as fh:
            return sum(1 for _ in fh) or None
    except OSError:
        return None


def read_config(path: Path) -> dict[str, Any]:
    """A ``config.json`` as a dict; raises :class:`HarnessError` when it is missing, unreadable or not a JSON object."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        raise HarnessError(f"{path}: not found; a model folder needs its config.json") from None
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise HarnessError(f"{path}: expected a JSON object")
    return config
