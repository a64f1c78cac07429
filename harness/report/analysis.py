"""What ``harness report`` computes from the rows of a results directory: seeds aggregated, pivots, significance.

Aggregation (:class:`harness.report.groups.Group`): per (model, task, strategy), over the seeds whose cell ended
``ok`` — mean, sample standard deviation, n and a 95 % confidence interval (:data:`harness.report.stats.CI_METHOD`)
of the quality metric and of each cost figure of :data:`harness.report.groups.COST_FIGURES`. Failed and skipped
seeds are kept with their errors and reasons, never averaged in.

Pivots (:class:`Table`): the three dimensions task, strategy and model; ``rows`` and ``cols`` name two of them and
the third pages (one table per value). The default is rows = tasks, columns = strategies, one table per model. The
quality metric of a cell is its task's primary metric unless a metric is chosen (``--metric``).

Significance: groups are compared along the *comparison axis*: the columns, or the rows when the columns are tasks
(metrics of different tasks are never compared). Within each row (or column) the group with the best mean is the
*best*; every other group is tested against it, and against the *baseline* (a value of the comparison axis,
``full`` by default). The test (:func:`compare_groups`) is paired approximate randomisation over the test items
when the task gives per-item statistics (:meth:`harness.api.components.Task.item_statistics`) for both groups, pairing
(seed, item) units of the seeds both ran; otherwise Welch's t-test over the seeds' values. The p-values of one
table's comparisons against the best, and separately against the baseline, are Holm-corrected; a group whose
corrected p-value against the best is at least ``alpha`` is "not significantly worse than the best".
Every metric is taken to be better when higher (all built-in task metrics are).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.api.itemstats import pool
from harness.errors import HarnessError
from harness.report import stats
from harness.report.groups import DIMENSIONS, Group, Key, Row

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.components import Task

# -- per-item statistics -----------------------------------------------------------------------------------------


class ItemSource:
    """Per-item statistics of ok cells, read from their saved predictions through their task plugin (cached).

    :param task_lookup: task type name -> the :class:`~harness.api.components.Task` plugin (``None`` when not installed).
    :param cell_dir: a row -> its cell folder (``None`` when unknown).
    """

    def __init__(self, task_lookup: Callable[[str], Task | None], cell_dir: Callable[[Row], Path | None]):
        self._task_lookup = task_lookup
        self._cell_dir = cell_dir
        self._cache: dict[tuple[str, str, str], stats.ItemStats | None] = {}

    def get(self, row: Row, metric: str) -> stats.ItemStats | None:
        cache_key = (str(self._cell_dir(row)), str(row.get("key")), metric)
        if cache_key not in self._cache:
            self._cache[cache_key] = self._load(row, metric)
        return self._cache[cache_key]

    def _load(self, row: Row, metric: str) -> stats.ItemStats | None:
        directory = self._cell_dir(row)
        task_config = (row.get("config") or {}).get("task") or {}
        if directory is None or row["status"] != "ok" or not row.get("predictions") or not task_config.get("type"):
            return None
        task = self._task_lookup(str(task_config["type"]))
        if task is None:
            return None
        try:
            with open(directory / str(row["predictions"]), encoding="utf-8") as fh:
                predictions = [json.loads(line) for line in fh if line.strip()]
            return task.item_statistics(predictions, metric, task_config.get("options") or {})
        except (OSError, ValueError, KeyError, TypeError):
            return None


def compare_groups(
    a: Group,
    b: Group,
    rows_a: Sequence[Row],
    rows_b: Sequence[Row],
    items_a: ItemSource | None,
    items_b: ItemSource | None,
    *,
    resamples: int,
    seed: int,
) -> stats.TestResult:
    """Test ``a`` against ``b`` (same task and metric; ``rows_a``/``rows_b`` their cells' rows): paired approximate
    randomisation over the (seed, item) units of the seeds both ran when per-item statistics exist for all of
    them, else Welch's t-test over the seeds' values."""
    if items_a is not None and items_b is not None and a.metric:
        common = sorted(set(a.values) & set(b.values))
        by_seed_a = {int(r["seed"]): r for r in rows_a if r["status"] == "ok"}
        by_seed_b = {int(r["seed"]): r for r in rows_b if r["status"] == "ok"}
        pairs = [(items_a.get(by_seed_a[s], a.metric), items_b.get(by_seed_b[s], a.metric)) for s in common]
        note = None
        if pairs and all(x is not None and y is not None for x, y in pairs):
            note = _unreproduced(a, b, common, pairs)
            if note is None:
                prefixes = [str(s) for s in common]
                try:
                    pooled_a = pool([x for x, _ in pairs], prefixes)  # type: ignore[misc]
                    pooled_b = pool([y for _, y in pairs], prefixes)  # type: ignore[misc]
                    return stats.paired_randomization(pooled_a, pooled_b, resamples=resamples, seed=seed)
                except ValueError as exc:  # statistics of different shapes (labels seen by one side only)
                    note = f"per-item statistics not comparable ({exc})"
        if note is not None:
            welch = stats.welch(list(a.values.values()), list(b.values.values()))
            return replace(welch, note="; ".join(filter(None, [note, welch.note])))
    return stats.welch(list(a.values.values()), list(b.values.values()))


def _unreproduced(a: Group, b: Group, seeds: Sequence[int], pairs: Sequence[tuple[Any, Any]]) -> str | None:
    """A note when a cell's saved predictions do not give back its recorded metric (then they are not used)."""
    for seed, (x, y) in zip(seeds, pairs, strict=True):
        for group, item_stats in ((a, x), (b, y)):
            recorded, recomputed = group.values[seed], item_stats.score()
            if not abs(recorded - recomputed) <= 1e-6 * max(1.0, abs(recorded)):
                return (f"{group.strategy} seed {seed}: saved predictions give {group.metric} {recomputed:.6g}, "
                        f"the record says {recorded:.6g}")
    return None


# -- pivot tables ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """A test of the group at ``cell`` against the group at ``against`` (both (row, column) of one table)."""

    cell: tuple[str, str]
    against: tuple[str, str]
    test: stats.TestResult
    delta: float | None  # difference of the seed means, cell minus against
    p_holm: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "cell": list(self.cell), "against": list(self.against), "delta": self.delta,
            "method": self.test.method, "p_value": self.test.p_value, "p_holm": self.p_holm,
            "paired_delta": self.test.delta, "n": self.test.n, "note": self.test.note,
        }


@dataclass(frozen=True)
class Table:
    """One pivot: ``cells[(row value, column value)]`` -> :class:`Group`; the page dimension is fixed to ``page``."""

    page_dim: str
    page: str
    rows_dim: str
    cols_dim: str
    row_values: tuple[str, ...]
    col_values: tuple[str, ...]
    cells: Mapping[tuple[str, str], Group]
    #: ``"cols"``: groups of one row are compared; ``"rows"``: groups of one column (the columns are tasks).
    axis: str
    best: frozenset[tuple[str, str]] = frozenset()
    vs_best: Mapping[tuple[str, str], Comparison] = field(default_factory=dict)
    baseline: str | None = None
    vs_baseline: Mapping[tuple[str, str], Comparison] = field(default_factory=dict)
    alpha: float = 0.05
    #: (dimension, value, reason) of rows and columns (or the page) left out: every cell was planned as skipped.
    omitted: tuple[tuple[str, str, str], ...] = ()

    @property
    def shown(self) -> bool:
        """``False`` when every cell of the page was skipped: no quality or cost table, only the page's note."""
        return bool(self.row_values and self.col_values)

    def not_worse(self, cell: tuple[str, str]) -> bool:
        """Not the best, but not significantly worse than it (Holm-corrected p >= alpha)."""
        comparison = self.vs_best.get(cell)
        return comparison is not None and comparison.p_holm is not None and comparison.p_holm >= self.alpha

    def label(self, dim: str, value: str) -> str:
        """A row or column heading: tasks carry their metric (``ner (f1)``)."""
        if dim != "task":
            return value
        metric = next((g.metric for g in self.cells.values() if g.task == value and g.metric), None)
        return f"{value} ({metric})" if metric else value

    def to_json(self) -> dict[str, Any]:
        return {
            self.page_dim: self.page, "rows": self.rows_dim, "cols": self.cols_dim, "baseline": self.baseline,
            "best": sorted(list(c) for c in self.best),
            "omitted": [{"dimension": d, "value": v, "reason": r} for d, v, r in self.omitted],
            "vs_best": [c.to_json() for c in self.vs_best.values()],
            "vs_baseline": [c.to_json() for c in self.vs_baseline.values()],
        }


def _holm_apply(comparisons: dict[tuple[str, str], Comparison]) -> dict[tuple[str, str], Comparison]:
    adjusted = stats.holm([c.test.p_value for c in comparisons.values()])
    return {
        cell: Comparison(c.cell, c.against, c.test, c.delta, p) for (cell, c), p in zip(comparisons.items(), adjusted, strict=True)
    }


def _only_skipped(group: Group) -> bool:
    return group.quality is None and not group.failed and bool(group.skipped)


def _shown(
    members: Sequence[Group], dim: str, other: str | None = None, other_shown: Sequence[str] = ()
) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    """The values of ``dim`` to show, and (value, reason) of those left out because every group of theirs was only
    planned as skipped (an encoder model under zero-shot, say). The reason is taken from a group whose value of the
    ``other`` dimension is shown, when there is one (the skip reason of a visible cell)."""
    shown, omitted = [], []
    for value in dict.fromkeys(g.value(dim) for g in members):
        groups = [g for g in members if g.value(dim) == value]
        if all(_only_skipped(g) for g in groups):
            visible = [g for g in groups if other is not None and g.value(other) in other_shown] or groups
            omitted.append((value, next(iter(visible[0].skipped.values()))))
        else:
            shown.append(value)
    return tuple(shown), omitted


def build_tables(
    groups: Sequence[Group],
    rows_of: Mapping[Key, Sequence[Row]],
    *,
    rows_dim: str = "task",
    cols_dim: str = "strategy",
    baseline: str | None = None,
    items: ItemSource | None = None,
    alpha: float = 0.05,
    resamples: int = 10_000,
    seed: int = 0,
) -> list[Table]:
    """The pivot tables of ``groups`` (one per value of the remaining dimension), with best cells and tests."""
    if rows_dim not in DIMENSIONS or cols_dim not in DIMENSIONS or rows_dim == cols_dim:
        raise HarnessError(f"rows and cols must be two different dimensions of {', '.join(DIMENSIONS)}")
    page_dim = next(d for d in DIMENSIONS if d not in (rows_dim, cols_dim))
    axis = "rows" if cols_dim == "task" else "cols"
    tables = []
    for page in dict.fromkeys(g.value(page_dim) for g in groups):
        members = [g for g in groups if g.value(page_dim) == page]
        cells = {(g.value(rows_dim), g.value(cols_dim)): g for g in members}
        row_values, omitted_rows = _shown(members, rows_dim)
        if not row_values:  # every cell of the page was planned as skipped: the note alone, no table
            tables.append(Table(page_dim, page, rows_dim, cols_dim, (), (), cells, axis, alpha=alpha,
                                omitted=((page_dim, page, omitted_rows[0][1]),)))
            continue
        col_values, omitted_cols = _shown(members, cols_dim, rows_dim, row_values)
        lines: list[list[tuple[str, str]]] = (
            [[(r, c) for c in col_values] for r in row_values]
            if axis == "cols" else [[(r, c) for r in row_values] for c in col_values]
        )
        best: set[tuple[str, str]] = set()
        vs_best: dict[tuple[str, str], Comparison] = {}
        vs_baseline: dict[tuple[str, str], Comparison] = {}

        def compare(cell: tuple[str, str], other: tuple[str, str], cells: Mapping = cells) -> Comparison:
            a, b = cells[cell], cells[other]
            test = compare_groups(
                a, b, rows_of.get(a.key, ()), rows_of.get(b.key, ()), items, items, resamples=resamples, seed=seed
            )
            return Comparison(cell, other, test, a.quality.mean - b.quality.mean)

        for line in lines:
            scored = [c for c in line if c in cells and cells[c].quality is not None]
            if not scored:
                continue
            top = max(cells[c].quality.mean for c in scored)  # type: ignore[union-attr]
            leaders = [c for c in scored if cells[c].quality.mean == top]  # type: ignore[union-attr]
            best.update(leaders)
            for cell in scored:
                if cell not in leaders:
                    vs_best[cell] = compare(cell, leaders[0])
            if baseline is not None:
                reference = next((c for c in scored if c[1 if axis == "cols" else 0] == baseline), None)
                for cell in scored:
                    if reference is not None and cell != reference:
                        vs_baseline[cell] = compare(cell, reference)
        tables.append(
            Table(
                page_dim=page_dim, page=page, rows_dim=rows_dim, cols_dim=cols_dim, row_values=row_values,
                col_values=col_values, cells=cells, axis=axis, best=frozenset(best), vs_best=_holm_apply(vs_best),
                baseline=baseline, vs_baseline=_holm_apply(vs_baseline), alpha=alpha,
                omitted=(*((rows_dim, v, r) for v, r in omitted_rows), *((cols_dim, v, r) for v, r in omitted_cols)),
            )
        )
    return tables


def rows_by_group(rows: Iterable[Row]) -> dict[Key, list[Row]]:
    out: dict[Key, list[Row]] = {}
    for row in rows:
        out.setdefault((str(row["model"]), str(row["task"]), str(row["strategy"])), []).append(row)
    return out
