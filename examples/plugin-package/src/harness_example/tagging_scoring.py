"""Scoring of the ``tagging`` task (light: plain Python and numpy, never torch), shared by the worker and by reports.

Metrics (:func:`tagging_metrics`), over the words of a split, each word's predicted tag against its reference tag:

``accuracy``
    Correct words / all words (micro average over every word of every sentence), the primary metric: what
    part-of-speech tagging papers report. A word the model never saw (no sub-token left after truncation to the
    budget's ``max_length``, or none at all) has the prediction ``None`` and counts as wrong.
``sentence_accuracy``
    Sentences with every word right / sentences.
``unaligned_words``
    Words predicted ``None`` (see ``accuracy``): a sign that ``max_length`` is too short for the data.
``n``, ``words``
    Scored sentences and words.

Per-item statistics (:func:`item_statistics`), an item being a sentence: ``accuracy`` is a ratio of two sums, so each
sentence's row is ``[correct words, words]`` and the metric of the column sums is ``Σcorrect / Σwords``, exactly the
micro accuracy; ``sentence_accuracy`` is a mean, ``[all correct, 1]``. The counts have none (``None``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.itemstats import ItemStats

METRICS = ("accuracy", "sentence_accuracy")


def _counts(prediction: Sequence[str | None], reference: Sequence[str]) -> tuple[int, int]:
    if len(prediction) != len(reference):
        raise ValueError(f"{len(prediction)} predicted tags for {len(reference)} words")
    return sum(p == r for p, r in zip(prediction, reference, strict=True)), len(reference)


def tagging_metrics(
    predictions: Sequence[Sequence[str | None]], references: Sequence[Sequence[str]]
) -> dict[str, float]:
    """``accuracy``, ``sentence_accuracy``, ``unaligned_words``, ``n`` and ``words`` of predicted tag lists (one
    per sentence, ``None`` for a word without a prediction) against the reference tag lists."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} sentences")
    correct = words = whole = unaligned = 0
    for prediction, reference in zip(predictions, references, strict=True):
        right, total = _counts(prediction, reference)
        correct, words, whole = correct + right, words + total, whole + (right == total)
        unaligned += sum(p is None for p in prediction)
    n = len(references)
    return {
        "accuracy": correct / words if words else 0.0,
        "sentence_accuracy": whole / n if n else 0.0,
        "unaligned_words": float(unaligned),
        "n": float(n),
        "words": float(words),
    }


def ratio_rows(sums: np.ndarray) -> np.ndarray:
    """``sums[:, 0] / sums[:, 1]`` for rows of sums (shape ``(R, 2)``); 0 where the count is 0."""
    sums = np.asarray(sums, dtype=np.float64)
    return np.divide(sums[:, 0], sums[:, 1], out=np.zeros(len(sums)), where=sums[:, 1] > 0)


def ratio(sums: np.ndarray) -> float:
    """:func:`ratio_rows` of one row of sums."""
    return float(ratio_rows(np.asarray(sums, dtype=np.float64)[None, :])[0])


def _tags(value: Any, allow_none: bool) -> list[str | None] | None:
    if not isinstance(value, list) or not all(isinstance(t, str) or (allow_none and t is None) for t in value):
        return None
    return value


def item_statistics(rows: Sequence[Mapping[str, Any]], metric: str) -> ItemStats | None:
    """Additive per-sentence statistics of ``accuracy`` or ``sentence_accuracy`` over saved prediction rows (``id``,
    tag lists ``prediction`` and ``reference`` of equal length); ``None`` for other metrics and unreadable rows."""
    from harness.api.itemstats import ItemStats

    if metric not in METRICS or not rows:
        return None
    ids = [row.get("id") if isinstance(row, Mapping) else None for row in rows]
    if not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
        return None
    values = []
    for row in rows:
        prediction, reference = _tags(row.get("prediction"), True), _tags(row.get("reference"), False)
        if prediction is None or reference is None or len(prediction) != len(reference):
            return None
        right, total = _counts(prediction, reference)
        values.append([right, total] if metric == "accuracy" else [float(right == total), 1.0])
    return ItemStats(ids=tuple(ids), values=np.asarray(values, dtype=np.float64), metric=ratio, vectorized=ratio_rows)
