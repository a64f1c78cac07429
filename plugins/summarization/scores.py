"""Scoring of the summarization task, for its runs and for reports (light: rouge-score, no torch).

ROUGE-Lsum treats each line of a text as a sentence. Both the prediction and every reference are therefore split
into sentences before scoring — at existing newlines and after ``.``, ``!`` or ``?`` followed by whitespace — and the
sentences joined with newlines (:func:`sentence_lines`). (The Hugging Face scripts split with nltk's punkt model,
which needs a download; this rule needs none.) ROUGE-1, ROUGE-2 and ROUGE-L ignore line breaks, so they are computed
on the same texts. :func:`rouge` gives a cell's metrics; :func:`item_statistics` their per-item form from saved
prediction rows (``id``, ``prediction``, ``reference`` and, with several references, ``references``), for paired
significance tests in reports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rouge_score.rouge_scorer import RougeScorer

from ..item_stats import mean_stats, row_ids, row_references

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.itemstats import ItemStats

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


def item_statistics(rows: Sequence[Mapping[str, Any]], metric: str, options: Mapping[str, Any]) -> ItemStats | None:
    """Per-item ``[best F1 over the item's references, 1]`` of a ROUGE type (``rouge1``, ``rouge2``, ``rougeL``,
    ``rougeLsum``), scored as :func:`rouge` scores it; the metric of the sums is their mean. ``None`` for other
    metrics and for rows without ``id``, a string ``prediction`` or references."""
    if metric not in ROUGE_TYPES:
        return None
    ids = row_ids(rows)
    if ids is None or not rows:
        return None
    predictions = [row.get("prediction") for row in rows]
    references = [row_references(row) for row in rows]
    if not all(isinstance(p, str) for p in predictions) or any(r is None for r in references):
        return None
    scorer = RougeScorer([metric], use_stemmer=True)  # each type is scored on its own; one is enough here
    best = [
        scorer.score_multi([sentence_lines(r) for r in refs], sentence_lines(prediction))[metric].fmeasure
        for prediction, refs in zip(predictions, references, strict=True)  # type: ignore[arg-type]
    ]
    return mean_stats(ids, best)
