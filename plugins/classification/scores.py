"""Scoring of the classification task, shared by both of its paths and by reports (light: scikit-learn, no torch).

:func:`classification_metrics` is the metric function of the text-to-text path; the encoder path's scikit-learn
calls (:meth:`~harness_plugins.classification.run.ClassificationRun.evaluate`) compute the same numbers, its
predictions never being unparsed. :func:`item_statistics` gives the additive per-item statistics of ``accuracy`` and
``macro_f1`` from saved prediction rows (``id``, ``prediction``: a label name or ``null`` when unparsed,
``reference``: a label name), for paired significance tests in reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from ..item_stats import ratio, ratios, row_ids

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.itemstats import ItemStats


def classification_metrics(
    predictions: Sequence[str | None], references: Sequence[str], labels: Sequence[str]
) -> dict[str, float]:
    """Accuracy, macro-F1 and the count of unparsed (``None``) predictions; an unparsed prediction is a miss for its
    reference's label and adds no class of its own."""
    if not references:
        return {"accuracy": 0.0, "macro_f1": 0.0, "unparsed": 0.0}
    index = {label: i for i, label in enumerate(labels)}
    occurring = set(references) | {p for p in predictions if p is not None}
    refs = [index[r] for r in references]
    preds = [index[p] if p is not None else -1 for p in predictions]
    present = [index[label] for label in labels if label in occurring]
    return {
        "accuracy": float(accuracy_score(refs, preds)),
        "macro_f1": float(f1_score(refs, preds, labels=present, average="macro", zero_division=0)),
        "unparsed": float(sum(p is None for p in predictions)),
    }


def macro_f1(sums: np.ndarray) -> float:
    """Macro-F1 from per-label ``[tp, fp, fn]`` column sums (labels one after another): the mean of
    ``2 tp / (2 tp + fp + fn)`` over the labels with any of the three (those occurring in the references or the
    predictions, as scikit-learn's ``f1_score(average="macro", zero_division=0)`` takes them); 0 without one."""
    return float(macro_f1_rows(np.asarray(sums, dtype=np.float64)[None, :])[0])


def macro_f1_rows(sums: np.ndarray) -> np.ndarray:
    """:func:`macro_f1` of each row of ``sums`` (shape ``(R, 3 * labels)``), vectorised."""
    counts = sums.reshape(len(sums), -1, 3)
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    present = (denom > 0).sum(axis=1)
    return np.divide(f1.sum(axis=1), present, out=np.zeros(len(sums)), where=present > 0)


def item_statistics(rows: Sequence[Mapping[str, Any]], metric: str, options: Mapping[str, Any]) -> ItemStats | None:
    """Per-item statistics of ``accuracy`` (``[correct, 1]``) or ``macro_f1`` (``[tp, fp, fn]`` of each label, an
    unparsed prediction adding only a miss of its reference's label); ``None`` for other metrics and for rows without
    ``id``, a string ``reference`` or a string-or-null ``prediction``.

    The labels of ``macro_f1``'s columns, sorted by name: those of the rows (references and predictions), of the
    ``labels`` and ``verbalizer`` options and of the loglik rows' ``scores``, so that cells of one task share columns
    as far as the records tell the label set (a label that no row of a cell shows has zero columns, and no effect)."""
    from harness.api.itemstats import ItemStats

    if metric not in ("accuracy", "macro_f1"):
        return None
    ids = row_ids(rows)
    if ids is None or not rows:
        return None
    references = [row.get("reference") for row in rows]
    predictions = [row.get("prediction") for row in rows]
    if not all(isinstance(r, str) for r in references) or not all(p is None or isinstance(p, str) for p in predictions):
        return None
    if metric == "accuracy":
        correct = np.array([p == r for p, r in zip(predictions, references, strict=True)], dtype=np.float64)
        values = np.column_stack([correct, np.ones(len(rows))])
        return ItemStats(ids=ids, values=values, metric=ratio, vectorized=ratios)
    known = set(references) | {p for p in predictions if p is not None}
    known |= set(options.get("labels") or ()) | set(options.get("verbalizer") or {})
    for row in rows:
        if isinstance(row.get("scores"), Mapping):
            known |= set(row["scores"])
    labels = sorted(known)
    column = {label: 3 * i for i, label in enumerate(labels)}
    values = np.zeros((len(rows), 3 * len(column)))
    for i, (p, r) in enumerate(zip(predictions, references, strict=True)):
        if p == r:
            values[i, column[r]] += 1  # tp
        else:
            values[i, column[r] + 2] += 1  # fn of the reference's label
            if p is not None:
                values[i, column[p] + 1] += 1  # fp of the predicted label
    names = tuple(f"{label}:{count}" for label in labels for count in ("tp", "fp", "fn"))
    return ItemStats(ids=ids, values=values, metric=macro_f1, vectorized=macro_f1_rows, columns=names)
