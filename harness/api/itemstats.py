"""Per-test-item additive statistics of a metric (:class:`ItemStats`): what a task returns from
``Task.item_statistics`` so that reports can test differences on its saved predictions
(:mod:`harness.report.stats`). Light: numpy only (imported when a task builds statistics, never by the plugin host).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class ItemStats:
    """Per-test-item additive sufficient statistics of one metric.

    ``values[i]`` is item ``ids[i]``'s row of ``k`` statistics (float64); ``metric(values.sum(0))`` is the
    corpus-level score. ``vectorized``, when given, maps sums of shape ``(R, k)`` to scores of shape ``(R,)`` and
    must agree with ``metric`` row by row; it only makes :func:`paired_randomization` faster.
    Examples: accuracy ``[correct, 1] -> s[0] / s[1]``; entity F1 ``[tp, n_pred, n_gold] -> 2 tp / (pred + gold)``.
    ``columns`` names the statistics when their set depends on the cell (macro-F1's per-label counts: a label only
    one cell predicted has columns only there); :func:`align` then lines two cells' columns up by name, a column a
    cell lacks being zeros, which the metric must treat as that label's absence.
    """

    ids: tuple[str, ...]
    values: np.ndarray
    metric: Callable[[np.ndarray], float]
    vectorized: Callable[[np.ndarray], np.ndarray] | None = None
    columns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        ids = tuple(str(i) for i in self.ids)
        values = np.array(self.values, dtype=np.float64)  # a private copy, made read-only below
        if values.ndim != 2:
            raise ValueError(f"values must be 2-D (n_items, k), got shape {values.shape}")
        if len(ids) != values.shape[0]:
            raise ValueError(f"{len(ids)} ids for {values.shape[0]} rows of values")
        if len(set(ids)) != len(ids):
            repeated = sorted(i for i, count in Counter(ids).items() if count > 1)
            raise ValueError(f"item ids must be unique; repeated: {repeated[:5]}")
        if self.columns is not None and len(self.columns) != values.shape[1]:
            raise ValueError(f"{len(self.columns)} column names for {values.shape[1]} columns")
        values.flags.writeable = False
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "values", values)

    @property
    def k(self) -> int:
        """Number of statistics per item."""
        return int(self.values.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def score(self) -> float:
        """The metric over all items: ``metric(values.sum(0))``."""
        return float(self.metric(self.values.sum(axis=0)))

    def scores(self, sums: np.ndarray) -> np.ndarray:
        """Metric of each row of ``sums`` (shape ``(R, k)``) -> shape ``(R,)`` float64."""
        sums = np.asarray(sums, dtype=np.float64)
        if sums.ndim != 2 or sums.shape[1] != self.k:
            raise ValueError(f"sums must have shape (R, {self.k}), got {sums.shape}")
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.vectorized is not None:
                out = np.asarray(self.vectorized(sums), dtype=np.float64).reshape(-1)
                if out.shape != (sums.shape[0],):
                    raise ValueError(f"vectorized metric returned shape {out.shape} for {sums.shape[0]} rows")
                return out
            return np.fromiter((self.metric(row) for row in sums), dtype=np.float64, count=sums.shape[0])

    def concat(self, others: Sequence[ItemStats]) -> ItemStats:
        """These items followed by ``others``' (ids must stay unique); keeps this object's metric."""
        parts = align([self, *others])
        for p in parts:
            if p.k != parts[0].k:
                raise ValueError(f"cannot concatenate statistics with k={p.k} and k={parts[0].k}")
        ids = tuple(i for p in parts for i in p.ids)
        values = np.concatenate([p.values for p in parts], axis=0)
        return ItemStats(ids, values, self.metric, self.vectorized, parts[0].columns)

    def select(self, ids: Sequence[str]) -> ItemStats:
        """The items ``ids``, in that order (each must exist)."""
        index = {i: n for n, i in enumerate(self.ids)}
        rows = [index[i] for i in ids]
        return ItemStats(tuple(ids), self.values[rows], self.metric, self.vectorized, self.columns)


def align(stats: Sequence[ItemStats]) -> list[ItemStats]:
    """``stats`` with their named columns lined up: every one gets the union of the names (in first-seen order),
    zeros where it lacks one. Unnamed or already equal columns are returned as they are."""
    named = [s.columns for s in stats]
    if any(c is None for c in named) or len(set(named)) <= 1:
        return list(stats)
    union = tuple(dict.fromkeys(name for columns in named for name in columns or ()))
    out = []
    for s in stats:
        position = {name: n for n, name in enumerate(s.columns or ())}
        values = np.zeros((len(s), len(union)))
        for target, name in enumerate(union):
            if name in position:
                values[:, target] = s.values[:, position[name]]
        out.append(ItemStats(s.ids, values, s.metric, s.vectorized, union))
    return out


def pool(stats: Sequence[ItemStats], prefixes: Sequence[object]) -> ItemStats:
    """Concatenate several seeds' items as (seed, item) units, ids ``f"{prefix}:{id}"`` (e.g. ``"0:test-3"``).

    Pool both strategies with the same prefixes (their seeds) so that :func:`paired_randomization` pairs the same
    seed's same item. The first entry's metric is used.
    """
    if len(stats) != len(prefixes):
        raise ValueError(f"{len(stats)} ItemStats but {len(prefixes)} prefixes")
    if not stats:
        raise ValueError("pool needs at least one ItemStats")
    parts = [ItemStats(tuple(f"{p}:{i}" for i in s.ids), s.values, s.metric, s.vectorized, s.columns)
             for s, p in zip(stats, prefixes, strict=True)]
    return parts[0].concat(parts[1:])
