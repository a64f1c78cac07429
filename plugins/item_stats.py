"""Shared pieces of the built-in tasks' per-item statistics (``Task.item_statistics``; light: numpy only, no torch).

A task turns a cell's saved prediction rows into :class:`harness.report.stats.ItemStats`: one row of additive statistics per
test item, whose column sums give back the metric the task recorded. The helpers here read the fields every task's
rows share (``id``, the references) and build the common shape "a mean of per-item values" (``[value, 1]`` per item).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.itemstats import ItemStats


def row_ids(rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...] | None:
    """The rows' ``id`` values as strings; ``None`` when a row has none (a row of a failed or partial cell) or two
    rows share one (items could not be paired)."""
    ids = []
    for row in rows:
        if not isinstance(row, Mapping) or row.get("id") is None:
            return None
        ids.append(str(row["id"]))
    return tuple(ids) if len(set(ids)) == len(ids) else None


def row_references(row: Mapping[str, Any]) -> list[str] | None:
    """All references of a text-to-text row: ``references`` (written when there are several), else ``reference``
    (a string, or a list of strings); ``None`` when they are missing or not strings."""
    refs = row.get("references", row.get("reference"))
    if isinstance(refs, str):
        refs = [refs]
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        return None
    return refs


def ratio(sums: np.ndarray) -> float:
    """``sums[0] / sums[1]`` (a share or a mean from ``[value, count]`` columns); 0 when the count is 0."""
    return float(sums[0] / sums[1]) if sums[1] else 0.0


def ratios(sums: np.ndarray) -> np.ndarray:
    """:func:`ratio` of each row of ``sums`` (shape ``(R, 2)``), vectorised."""
    num, den = sums[:, 0], sums[:, 1]
    return np.divide(num, den, out=np.zeros(len(sums)), where=den != 0)


def mean_stats(ids: tuple[str, ...], values: Sequence[float]) -> ItemStats:
    """Per-item statistics of a metric that is the mean over items of ``values`` (one number per item):
    columns ``[value, 1]``, metric ``sum(value) / count``."""
    from harness.api.itemstats import ItemStats

    columns = np.column_stack([np.asarray(values, dtype=np.float64), np.ones(len(values))])
    return ItemStats(ids=ids, values=columns, metric=ratio, vectorized=ratios)
