"""Loaded models of the built-in sources (heavy: imports torch and transformers; only the worker imports it)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer

from harness.api.components import LoadedModel

_DTYPES: dict[str, Any] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "auto": "auto",
}


class PretrainedModel(LoadedModel):
    """A pretrained model from a hub id or a folder, loaded with ``from_pretrained``.

    A task head whose shape differs from the checkpoint's (another number of labels) is re-initialised
    (``ignore_mismatched_sizes``); new heads are initialised from the cell seed. Remote code runs only when the
    suite sets ``trust_remote_code``. ``attn_implementation`` (``None``: transformers' choice) is passed through, and
    so are the strategy's ``load_options`` (``ctx.load_options``), which win over the source's own arguments.
    """

    def __init__(
        self,
        name_or_path: str,
        *,
        family: str,
        seed: int,
        revision: str | None = None,
        dtype: str = "float32",
        use_safetensors: bool = True,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        attn_implementation: str | None = None,
        load_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.name_or_path = name_or_path
        self.family = family
        self.seed = seed
        self.revision = revision
        self.dtype = dtype
        self.use_safetensors = use_safetensors
        self.local_files_only = local_files_only
        self.trust_remote_code = trust_remote_code
        self.attn_implementation = attn_implementation
        self.load_options = dict(load_options or {})
        self._tokenizer: Any = None

    def _common(self) -> dict[str, Any]:
        common: dict[str, Any] = {
            "local_files_only": self.local_files_only,
            "trust_remote_code": self.trust_remote_code,
        }
        if self.revision is not None:
            common["revision"] = self.revision
        return common

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, **self._common())
        return self._tokenizer

    def model(self, auto_class: Any, **kwargs: Any) -> Any:
        torch.manual_seed(self.seed)
        arguments: dict[str, Any] = {
            "dtype": _DTYPES[self.dtype],
            # True: safetensors only; None: transformers' default (safetensors when present, else .bin).
            "use_safetensors": True if self.use_safetensors else None,
            "ignore_mismatched_sizes": True,
            **self._common(),
            **attention_kwargs(self.attn_implementation),
            **self.load_options,
            **kwargs,
        }
        return auto_class.from_pretrained(self.name_or_path, **arguments)


def attention_kwargs(attn_implementation: str | None) -> dict[str, Any]:
    """``{"attn_implementation": ...}`` for ``from_pretrained`` / ``from_config``; empty for transformers' choice."""
    return {} if attn_implementation is None else {"attn_implementation": attn_implementation}


class TinyModel(LoadedModel):
    """A small randomly initialised BERT, GPT-2 or T5 built from a config; weights seeded by ``seed``, attention
    ``attn_implementation`` (``None``: transformers' choice). With ``load_options`` (a strategy's, e.g.
    ``quantization_config``) the random model is saved to a temporary folder and reloaded through ``from_pretrained``
    with them, the same weights loaded as a pretrained model would be."""

    FAMILIES = {"bert": "encoder", "gpt2": "decoder", "t5": "encoder-decoder"}

    def __init__(
        self,
        *,
        architecture: str,
        layers: int,
        hidden: int,
        heads: int,
        intermediate: int,
        tokenizer_path: str,
        seed: int,
        attn_implementation: str | None = None,
        load_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.architecture = architecture
        self.family = self.FAMILIES[architecture]
        self.layers, self.hidden, self.heads, self.intermediate = layers, hidden, heads, intermediate
        self.tokenizer_path = tokenizer_path
        self.seed = seed
        self.attn_implementation = attn_implementation
        self.load_options = dict(load_options or {})
        self._tokenizer: Any = None

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path, local_files_only=True)
        return self._tokenizer

    def config(self, **kwargs: Any) -> Any:
        """The model config: sizes from the options, vocabulary and special tokens from the tokenizer."""
        tok = self.tokenizer()
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.cls_token_id
        eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        specific: dict[str, Any] = {
            "bert": {"intermediate_size": self.intermediate},
            "gpt2": {"n_inner": self.intermediate, "bos_token_id": bos, "eos_token_id": eos},
            "t5": {
                "d_ff": self.intermediate,
                "d_kv": self.hidden // self.heads,
                "num_decoder_layers": self.layers,
                "eos_token_id": eos,
                "decoder_start_token_id": tok.pad_token_id,
            },
        }[self.architecture]
        return AutoConfig.for_model(
            self.architecture,
            vocab_size=len(tok),
            hidden_size=self.hidden,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            pad_token_id=tok.pad_token_id,
            **specific,
            **kwargs,
        )

    def model(self, auto_class: Any, **kwargs: Any) -> Any:
        config = self.config(**kwargs)
        torch.manual_seed(self.seed)
        model = auto_class.from_config(config, **attention_kwargs(self.attn_implementation))
        if not self.load_options:
            return model
        with tempfile.TemporaryDirectory(prefix="harness-tiny-") as folder:
            model.save_pretrained(folder)
            arguments = {"dtype": torch.float32, **attention_kwargs(self.attn_implementation), **self.load_options}
            return auto_class.from_pretrained(folder, local_files_only=True, **arguments)
