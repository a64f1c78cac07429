"""Scoring of the ``regression`` task (light: numpy and scipy, never torch), shared by the worker and by reports.

Metrics (:func:`regression_metrics`):

``pearson``
    Pearson's correlation between predictions and references (``scipy.stats.pearsonr``), the primary metric of
    STS-B. Undefined when either side is constant (a model predicting one value for everything): recorded as 0.
``spearman``
    Spearman's rank correlation (``scipy.stats.spearmanr``; ties get their average rank); constant sides give 0.
``mse``
    Mean squared error, in the score's units squared (lower is better).
``n``
    Scored examples.

Per-item statistics for paired significance tests (:func:`item_statistics`): ``mse`` is a mean, so each item's row is
``[squared error, 1]``. ``pearson`` is not a mean of per-item scores, but it is a function of five additive sums, so
each item's row is ``[x, y, x², y², xy, 1]`` (x the prediction, y the reference) and :func:`pearson_from_sums` gives
back the correlation exactly, to floating-point rounding. ``spearman`` has no such form (ranks depend on every item):
``None``, and reports fall back to tests over seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.itemstats import ItemStats

METRICS = ("pearson", "spearman", "mse")
#: A variance below this share of the sum of squares counts as zero (a constant side: correlation 0).
_CONSTANT = 1e-12


def regression_metrics(predictions: Sequence[float], references: Sequence[float]) -> dict[str, float]:
    """``pearson``, ``spearman``, ``mse`` and ``n`` of the predictions against the references."""
    from scipy.stats import pearsonr, spearmanr

    x = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(references, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"{len(x)} predictions for {len(y)} references")
    if len(x) == 0:
        return {"pearson": 0.0, "spearman": 0.0, "mse": 0.0, "n": 0.0}
    constant = len(x) < 2 or _is_constant(x) or _is_constant(y)
    return {
        "pearson": 0.0 if constant else float(pearsonr(x, y).statistic),
        "spearman": 0.0 if constant else float(spearmanr(x, y).statistic),
        "mse": float(np.mean((x - y) ** 2)),
        "n": float(len(x)),
    }


def _is_constant(values: np.ndarray) -> bool:
    return bool(np.all(values == values[0]))


def pearson_rows(sums: np.ndarray) -> np.ndarray:
    """Pearson's r from rows of sums ``[Σx, Σy, Σx², Σy², Σxy, n]`` (shape ``(R, 6)``); 0 where a side is constant:
    ``r = (n Σxy − Σx Σy) / √((n Σx² − (Σx)²) (n Σy² − (Σy)²))``."""
    sums = np.asarray(sums, dtype=np.float64)
    sx, sy, sxx, syy, sxy, n = (sums[:, i] for i in range(6))
    var_x = n * sxx - sx * sx
    var_y = n * syy - sy * sy
    defined = (var_x > _CONSTANT * n * sxx) & (var_y > _CONSTANT * n * syy) & (n >= 2)
    denominator = np.sqrt(np.where(defined, var_x * var_y, 1.0))
    return np.where(defined, (n * sxy - sx * sy) / denominator, 0.0)


def pearson_from_sums(sums: np.ndarray) -> float:
    """:func:`pearson_rows` of one row of sums."""
    return float(pearson_rows(np.asarray(sums, dtype=np.float64)[None, :])[0])


def mse_rows(sums: np.ndarray) -> np.ndarray:
    """Mean squared error from rows of sums ``[Σ squared error, n]``."""
    sums = np.asarray(sums, dtype=np.float64)
    return np.divide(sums[:, 0], sums[:, 1], out=np.zeros(len(sums)), where=sums[:, 1] > 0)


def mse_from_sums(sums: np.ndarray) -> float:
    """:func:`mse_rows` of one row of sums."""
    return float(mse_rows(np.asarray(sums, dtype=np.float64)[None, :])[0])


def _numbers(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray | None:
    values = [row.get(key) for row in rows]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    return np.asarray(values, dtype=np.float64)


def item_statistics(rows: Sequence[Mapping[str, Any]], metric: str) -> ItemStats | None:
    """Additive per-item statistics of ``pearson`` or ``mse`` over saved prediction rows (``id``, numeric
    ``prediction`` and ``reference``); ``None`` for ``spearman``, ``n``, unknown metrics and unreadable rows."""
    from harness.api.itemstats import ItemStats

    if metric not in ("pearson", "mse") or not rows:
        return None
    ids = [row.get("id") for row in rows]
    if not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
        return None
    x, y = _numbers(rows, "prediction"), _numbers(rows, "reference")
    if x is None or y is None:
        return None
    if metric == "mse":
        values = np.column_stack([(x - y) ** 2, np.ones(len(x))])
        return ItemStats(ids=tuple(ids), values=values, metric=mse_from_sums, vectorized=mse_rows)
    values = np.column_stack([x, y, x * x, y * y, x * y, np.ones(len(x))])
    return ItemStats(ids=tuple(ids), values=values, metric=pearson_from_sums, vectorized=pearson_rows)
