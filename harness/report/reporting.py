"""The :class:`Report` every reporter renders: rows, aggregated groups, pivot tables with tests, environment."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.report import search as searching
from harness.report import stats
from harness.report.analysis import ItemSource, Table, build_tables, rows_by_group
from harness.report.groups import DIMENSIONS, Group, Row, group_rows, number

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.components import Task
    from harness.report.rows import Rows

#: Environment fields summarised in reports, in this order.
ENV_FIELDS = ("harness", "harness_git_commit", "python", "torch", "torch_cuda", "transformers", "peft", "accelerate",
              "adapters", "device_name", "driver", "cpu", "cpu_count", "hostname")


def environment_summary(rows: Sequence[Row]) -> list[tuple[str, str]]:
    """(field, "value (k cells)"; ...) for each :data:`ENV_FIELDS` entry seen in the ok cells' environments."""
    out = []
    ok = [r for r in rows if r["status"] == "ok"]
    for name in ENV_FIELDS:
        counts: dict[str, int] = {}
        for row in ok:
            value = (row.get("env") or {}).get(name)
            if value is not None:
                counts[str(value)] = counts.get(str(value), 0) + 1
        if counts:
            text = "; ".join(v if len(counts) == 1 else f"{v} ({n} cell{'s' if n != 1 else ''})" for v, n in counts.items())
            out.append((name, text))
    return out


@dataclass(frozen=True)
class ReportOptions:
    rows: str = "task"
    cols: str = "strategy"
    metric: str | None = None
    #: The reference of the Δ column values; ``None``: ``full`` when the comparison axis is strategies and has it.
    baseline: str | None = None
    alpha: float = 0.05
    resamples: int = 10_000
    seed: int = 0


@dataclass(frozen=True)
class Report:
    """Everything a reporter renders. ``rows`` are the record JSON dicts (``--format json`` prints them)."""

    results_dir: Path | None
    rows: Rows
    options: ReportOptions
    groups: tuple[Group, ...]
    tables: tuple[Table, ...]
    environment: tuple[tuple[str, str], ...]
    pending: int = 0
    plots: tuple[Path, ...] = ()
    cell_dirs: Mapping[str, Path] = field(default_factory=dict)
    #: The suite as ``plan.json`` describes it: ``name``, ``description``, ``profile`` (empty without a plan).
    suite: Mapping[str, Any] = field(default_factory=dict)
    #: The rows the tables aggregate: ``rows`` less the trials of each search that were not selected.
    table_rows: tuple[Row, ...] = ()
    #: The hyperparameter searches (:mod:`harness.report.search`); the tables show each one's selected setting.
    searches: tuple[searching.Search, ...] = ()

    def cell_dir(self, row: Row) -> Path | None:
        """The folder of ``row``'s cell (its log, predictions and steps.json), ``None`` when unknown."""
        return self.cell_dirs.get(str(row.get("key")))

    @property
    def header(self) -> list[str]:
        """Lines every reporter puts first: for a suite with a ``profile`` (``quick``), that the numbers come from a
        reduced run, with the suite's description."""
        profile = self.suite.get("profile")
        if not profile:
            return []
        description = self.suite.get("description") or ""
        return [f"Profile {profile!r} of suite {self.suite.get('name')}: a reduced run (fewer examples, steps and "
                f"seeds than the study it stands for); check the setup with it, do not cite its numbers"
                + (f" ({description})." if description else ".")]  # fmt: skip

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if r["status"] == "failed"]

    @property
    def methods(self) -> list[str]:
        """The sentences that say how the numbers were computed (for footers and captions)."""
        searched = [
            "Searched strategies show the test results of the setting selected on validation data "
            f"({searching.TIE_RULE}); their cost counts the training time of every trial."
        ] if self.searches else []
        return [
            f"Mean ± sample standard deviation over the ok seeds (n); confidence intervals: {stats.CI_METHOD}.",
            "† not significantly worse than the best of its "
            f"{'row' if not self.tables or self.tables[0].axis == 'cols' else 'column'} (Holm-corrected p ≥ "
            f"{self.options.alpha:g}): {stats.RANDOMIZATION_METHOD.format(resamples=self.options.resamples)} over "
            "(seed, test item) pairs where per-item scores exist, else Welch's t-test over seeds; Holm correction "
            "across the comparisons of a table.",
            *searched,
        ]


def build_report(
    rows: Rows,
    options: ReportOptions = ReportOptions(),
    *,
    results_dir: Path | None = None,
    task_lookup: Callable[[str], Task | None] | None = None,
    plots: Sequence[Path] = (),
) -> Report:
    """Aggregate ``rows`` (:func:`harness.report.rows.load_rows`) into a :class:`Report`."""
    cell_dirs: Mapping[str, Path] = getattr(rows, "dirs", {})
    for flag, value in (("--rows", options.rows), ("--cols", options.cols)):
        if value not in DIMENSIONS:
            raise HarnessError(f"{flag} {value}: expected one of {', '.join(DIMENSIONS)}")
    if options.rows == options.cols:
        raise HarnessError(f"--rows and --cols are both {options.rows}: choose two different dimensions")
    if options.metric is not None:
        known = sorted({m for r in rows for m, v in (r.get("metrics") or {}).items() if number(v) is not None})
        if options.metric not in known:
            raise HarnessError(f"--metric {options.metric}: no record has it; metrics in these records: "
                               f"{', '.join(known) or 'none'}")
    shown, searches = searching.select(rows)
    groups = searching.annotate(group_rows(shown, options.metric), searches)
    axis_dim = options.rows if options.cols == "task" else options.cols
    baseline = options.baseline
    if baseline is not None and not any(g.value(axis_dim) == baseline for g in groups):
        values = ", ".join(dict.fromkeys(g.value(axis_dim) for g in groups))
        raise HarnessError(f"--baseline {baseline}: not a {axis_dim} of these results ({values})")
    if baseline is None and axis_dim == "strategy" and any(g.strategy == "full" for g in groups):
        baseline = "full"
    items = None
    if task_lookup is not None:
        items = ItemSource(task_lookup, lambda row: cell_dirs.get(str(row.get("key"))))
    tables = build_tables(
        groups, rows_by_group(shown), rows_dim=options.rows, cols_dim=options.cols, baseline=baseline, items=items,
        alpha=options.alpha, resamples=options.resamples, seed=options.seed,
    )
    return Report(
        results_dir=results_dir, rows=rows, options=options, groups=tuple(groups), tables=tuple(tables),
        environment=tuple(environment_summary(rows)), pending=int(getattr(rows, "pending", 0)), plots=tuple(plots),
        cell_dirs=dict(cell_dirs), searches=tuple(searches), table_rows=tuple(shown),
        suite=dict(getattr(rows, "suite", {}) or {}),
    )
