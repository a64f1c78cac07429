"""The summarization task inside a cell's worker: text-to-text generation scored with rouge-score (heavy).

Scoring (:func:`~harness_plugins.summarization.scores.rouge`, with its sentence rule for ROUGE-Lsum) lives in
:mod:`harness_plugins.summarization.scores`, imported here.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from harness.tasklib.prompts import SUMMARIZATION
from harness.tasklib.text2text import GenerationSettings, TextToTextRun
from harness.tasklib.textpairs import PairSplits

from .scores import ROUGE_TYPES, rouge, sentence_lines

__all__ = ["ROUGE_TYPES", "SummarizationRun", "rouge", "sentence_lines"]


class SummarizationRun(TextToTextRun):
    """Summarization for one cell: ROUGE-1/2/L/Lsum F1, max over references, averaged (0..1)."""

    def __init__(
        self,
        splits: PairSplits,
        options: Mapping[str, Any],
        *,
        family: str,
        max_length: int,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        super().__init__(
            splits,
            family=family,
            template=SUMMARIZATION.choose(family, options.get("prompt")),
            input_field=SUMMARIZATION.input_field,
            max_length=max_length,
            max_target_length=options["max_target_length"],
            generation=GenerationSettings.from_options(options),
            primary_metric=options["primary_metric"],
            metadata={
                "metric_library": f"rouge-score {importlib.metadata.version('rouge-score')}",
                "stemmer": "porter",
                "rouge_scale": "F1 as a fraction (0..1), best reference per example, mean over examples",
                "rougeLsum_sentences": "split at newlines and after . ! ? followed by whitespace",
            },
            progress=progress,
        )

    def score(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
        return rouge(predictions, references)
