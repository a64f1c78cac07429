"""Scoring of the NER task, shared by both of its paths and by reports (light: seqeval, no torch).

:func:`score` gives a cell's metrics from IOB2 tag sequences: seqeval's default (non-strict) mode, entity-level
micro precision / recall / F1, the same per entity type, and token accuracy, all with ``zero_division=0``.

:func:`item_statistics` gives their additive per-sentence statistics from saved prediction rows (``id``, the IOB2 tag
lists ``prediction`` and ``reference``), for paired significance tests in reports. Entities are read per sentence
with seqeval's own ``get_entities``: seqeval reads a list of sentences as one sequence with an ``O`` between
sentences, which ends every entity, so its entities are exactly the union of the sentences' entities, and its
true-positive, predicted and gold counts are sums over sentences.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

from ..item_stats import ratio, ratios, row_ids

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.itemstats import ItemStats

_AVERAGES = ("micro avg", "macro avg", "weighted avg")
#: Entity-level metrics per sentence: ``[tp, predicted, gold]`` of all types (micro) or of the type after the dot.
ENTITY_METRICS = ("precision", "recall", "f1")


def score(references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level micro and per-type precision / recall / F1 (seqeval default mode), plus token accuracy."""
    metrics = {
        "precision": float(precision_score(references, predictions, zero_division=0)),
        "recall": float(recall_score(references, predictions, zero_division=0)),
        "f1": float(f1_score(references, predictions, zero_division=0)),
        "token_accuracy": float(accuracy_score(references, predictions)),
    }
    report = classification_report(references, predictions, output_dict=True, zero_division=0)
    for kind, row in sorted(report.items()):
        if kind not in _AVERAGES:
            metrics.update(
                {
                    f"precision.{kind}": float(row["precision"]),
                    f"recall.{kind}": float(row["recall"]),
                    f"f1.{kind}": float(row["f1-score"]),
                    f"support.{kind}": float(row["support"]),
                }
            )
    return metrics


def entity_scores(sums: np.ndarray) -> np.ndarray:
    """Precision, recall and F1 of each row of ``[tp, predicted, gold]`` sums (shape ``(R, 3)`` -> ``(R, 3)``), as
    seqeval computes them: a ratio with a zero denominator is 0 (``zero_division=0``), F1 is ``2 P R / (P + R)``
    (0 when both are 0)."""
    tp, predicted, gold = sums[:, 0], sums[:, 1], sums[:, 2]
    precision = tp / np.where(predicted == 0, 1, predicted)
    recall = tp / np.where(gold == 0, 1, gold)
    denom = precision + recall
    f1 = 2 * precision * recall / np.where(denom == 0, 1, denom)
    return np.column_stack([precision, recall, f1])


def _entity_metric(which: int) -> tuple[Any, Any]:
    """The scalar and vectorised metric taking ``[tp, predicted, gold]`` sums to precision (0), recall (1), F1 (2)."""

    def rows(sums: np.ndarray) -> np.ndarray:
        return entity_scores(np.asarray(sums, dtype=np.float64))[:, which]

    def one(sums: np.ndarray) -> float:
        return float(rows(np.asarray(sums, dtype=np.float64)[None, :])[0])

    return one, rows


def _entity_counts(reference: list[str], prediction: list[str]) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """Per entity type: true positives, predicted and gold entities of one sentence (seqeval's ``get_entities``)."""
    gold, predicted = set(get_entities(reference)), set(get_entities(prediction))
    return (
        Counter(kind for kind, _, _ in gold & predicted),
        Counter(kind for kind, _, _ in predicted),
        Counter(kind for kind, _, _ in gold),
    )


def _tags(value: Any) -> list[str] | None:
    return list(value) if isinstance(value, list) and all(isinstance(t, str) for t in value) else None


def item_statistics(rows: Sequence[Mapping[str, Any]], metric: str, options: Mapping[str, Any]) -> ItemStats | None:
    """Per-sentence statistics of ``precision``, ``recall``, ``f1`` (micro: ``[tp, predicted, gold]`` entities of
    all types), of ``precision.<type>``, ``recall.<type>``, ``f1.<type>`` (the same counts of that type) and of
    ``token_accuracy`` (``[correct tags, tags]``). ``None`` for other metrics (``n``, ``support.<type>``,
    ``truncated_words``, ``unparsed_parts``) and for rows without ``id`` or with tag lists missing or of unequal
    lengths (seqeval refuses those)."""
    from harness.api.itemstats import ItemStats

    name, _, kind = metric.partition(".")
    if not (metric == "token_accuracy" or (name in ENTITY_METRICS and (kind or metric == name))):
        return None
    ids = row_ids(rows)
    if ids is None or not rows:
        return None
    pairs = [(_tags(row.get("reference")), _tags(row.get("prediction"))) for row in rows]
    if any(r is None or p is None or len(r) != len(p) for r, p in pairs):
        return None
    if metric == "token_accuracy":
        correct = [sum(a == b for a, b in zip(r, p, strict=True)) for r, p in pairs]  # type: ignore[arg-type]
        values = np.array([[c, len(r)] for c, (r, _) in zip(correct, pairs, strict=True)], dtype=np.float64)
        return ItemStats(ids=ids, values=values, metric=ratio, vectorized=ratios)
    values = np.zeros((len(rows), 3))
    for i, (reference, prediction) in enumerate(pairs):
        counts = _entity_counts(reference, prediction)  # type: ignore[arg-type]  # checked above
        values[i] = [c[kind] if kind else sum(c.values()) for c in counts]
    one, many = _entity_metric(ENTITY_METRICS.index(name))
    return ItemStats(ids=ids, values=values, metric=one, vectorized=many)
