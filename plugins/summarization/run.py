"""The summarization task inside a cell's worker: text-to-text generation scored with rouge-score (heavy).

ROUGE-Lsum treats each line of a text as a sentence. Both the prediction and every reference are therefore split
into sentences before scoring — at existing newlines and after ``.``, ``!`` or ``?`` followed by whitespace — and the
sentences joined with newlines. (The Hugging Face scripts split with nltk's punkt model, which needs a download; this
rule needs none.) ROUGE-1, ROUGE-2 and ROUGE-L ignore line breaks, so they are computed on the same texts.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rouge_score.rouge_scorer import RougeScorer

from harness.prompts import SUMMARIZATION
from harness.text2text import GenerationSettings, TextToTextRun
from harness.textpairs import PairSplits

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentence_lines(text: str) -> str:
    """``text`` with one sentence a line, the form rouge-score's ROUGE-Lsum expects (see the module rule)."""
    return "\n".join(s for line in text.split("\n") for s in _SENTENCE_END.split(line.strip()) if s)


def rouge(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean over examples of the best F1 over each example's references, per ROUGE type (fractions in 0..1)."""
    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, refs in zip(predictions, references, strict=True):
        best = scorer.score_multi([sentence_lines(r) for r in refs], sentence_lines(prediction))
        for kind in ROUGE_TYPES:
            totals[kind] += best[kind].fmeasure
    n = max(len(predictions), 1)
    return {kind: total / n for kind, total in totals.items()}


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
