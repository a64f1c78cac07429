"""Deterministic generation settings shared by the text-to-text tasks (greedy or beam search, stop strings).

Decoding is never sampled: greedy, or beam search with ``num_beams``. A sequence stops at the end token, after
``max_new_tokens`` or at a ``stop`` string once its answer has begun (leading whitespace is not an answer); answers
are stripped of leading whitespace, cut before the first stop string and stripped.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GenerationSettings:
    """How answers are generated (task options ``max_new_tokens``, ``num_beams``, ``generation_batch_size``,
    ``stop``); ``batch_size`` ``None`` means the evaluation batch size."""

    max_new_tokens: int = 128
    num_beams: int = 1
    batch_size: int | None = None
    stop: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> GenerationSettings:
        return cls(
            max_new_tokens=options["max_new_tokens"],
            num_beams=options["num_beams"],
            batch_size=options.get("generation_batch_size"),
            stop=tuple(options.get("stop") or ()),
        )

    def describe(self) -> str:
        decoding = "greedy" if self.num_beams == 1 else f"beam search, {self.num_beams} beams"
        stop = f", stop at {list(self.stop)!r}" if self.stop else ""
        return f"{decoding}, max_new_tokens {self.max_new_tokens}{stop}"


def generation_config(model: Any, settings: GenerationSettings, eos_id: int | None, pad_id: int) -> Any:
    """The model's own generation config with the harness's deterministic settings: ``eos_id`` (the tokenizer's end
    token) added to the model's end tokens, ``pad_id`` for padding, sampling switched off."""
    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None)
    config = copy.deepcopy(base) if base is not None else GenerationConfig()
    model_eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    eos = list(dict.fromkeys(e for e in [eos_id, *model_eos] if e is not None))
    config.update(
        max_new_tokens=settings.max_new_tokens,
        num_beams=settings.num_beams,
        num_return_sequences=1,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=pad_id,
        eos_token_id=eos or None,
    )
    return config


def producible_stops(tokenizer: Any, stops: Sequence[str]) -> list[str]:
    """The stop strings ``tokenizer`` can produce (transformers refuses the others; they would never occur)."""
    from transformers.generation.stopping_criteria import StopStringCriteria

    usable = []
    for stop in stops:
        try:
            StopStringCriteria(tokenizer=tokenizer, stop_strings=[stop])
        except ValueError:
            continue
        usable.append(stop)
    return usable


def answer_stop(tokenizer: Any, stops: Sequence[str]) -> Any:
    """A stopping criterion that ends each sequence at the first of ``stops`` *after its answer has begun*: the
    whitespace a model emits first (an instruction-tuned decoder often starts its answer on a new line) is not the
    end of an answer. It reads the tokens generated so far (those after the width it first sees, less the one token
    just added), so it serves decoders, encoder-decoders and inputs widened by virtual tokens alike. One per call of
    ``generate``."""
    import torch
    from transformers import StoppingCriteria

    class AnswerStop(StoppingCriteria):
        start: int | None = None

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            if self.start is None:
                self.start = input_ids.shape[1] - 1
            texts = tokenizer.batch_decode(input_ids[:, self.start :], skip_special_tokens=True)
            done = [any(stop in text.lstrip() for stop in stops) for text in texts]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return AnswerStop()


def clean_answer(text: str, stops: Sequence[str]) -> str:
    """``text`` without leading whitespace, cut before the first of ``stops``, stripped of surrounding whitespace."""
    text = text.lstrip()
    for stop in stops:
        text = text.split(stop, 1)[0]
    return text.strip()
