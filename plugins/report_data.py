"""Machine-readable reporters of ``harness report``: ``csv`` (tidy) and ``json``.

CSV, one line per cell × figure × statistic, columns :data:`CSV_COLUMNS` (the cells the tables aggregate: of a
hyperparameter search, the selected setting's cells; every trial is in the JSON):

- per seed (``seed`` set, ``statistic`` = ``value``): every numeric metric, then ``params.*``, ``timing.*`` and
  ``memory.*``; a cell without figures (failed, skipped) gets one line with empty ``metric`` and ``value``;
- per (model, task, strategy) over its ok seeds (``seed`` empty, ``status`` = ``aggregate``): the quality metric and
  each ``cost.*`` figure of :data:`harness.report.groups.COST_FIGURES` with ``statistic`` ``mean``, ``std``, ``n``,
  ``ci_low``, ``ci_high``; and for the quality metric the tests of its table: ``delta_vs_best``, ``p_vs_best``,
  ``p_vs_best_holm``, ``delta_vs_baseline``, ``p_vs_baseline``, ``p_vs_baseline_holm`` (missing p-values are left
  out: see the JSON's ``note``).

JSON: one object, ``{"schema_version", "options", "suite", "header", "methods", "environment", "pending", "records",
"groups", "tables", "searches"}`` (``suite``: name, description and profile from ``plan.json``; ``header``: the
lines reports put first, e.g. that a quick profile's numbers are not to be cited; ``pending``: planned cells without
a record yet; ``searches``: each hyperparameter search's
settings, validation scores, selected setting and cost, :meth:`harness.report.search.Search.to_json`):
``records`` are the cells' records (:mod:`harness.results.records`), ``groups`` the aggregates
(:meth:`harness.report.groups.Group.to_json`), ``tables`` the pivots with every comparison's method, p-value and
Holm-corrected p-value (:meth:`harness.report.analysis.Table.to_json`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from harness.api.components import Reporter

if TYPE_CHECKING:  # pragma: no cover
    from harness.report.analysis import Comparison
    from harness.report.reporting import Report

#: Record sections whose numeric fields the CSV reporter writes as ``section.field`` figures.
CSV_SECTIONS = ("params", "timing", "memory")
CSV_COLUMNS = ("model", "task", "strategy", "seed", "status", "metric", "statistic", "value")
#: Version of the JSON report object (its ``records`` follow the record schema's own version).
REPORT_SCHEMA_VERSION = 1


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _figures(row: Mapping[str, Any]) -> list[tuple[str, float]]:
    figures = [(name, value) for name, value in (row.get("metrics") or {}).items() if _numeric(value)]
    for section in CSV_SECTIONS:
        for field, value in (row.get(section) or {}).items():
            if _numeric(value):
                figures.append((f"{section}.{field}", value))
    return figures


def _test_lines(kind: str, comparison: Comparison | None) -> Iterator[tuple[str, float]]:
    if comparison is None:
        return
    for statistic, value in (
        (f"delta_vs_{kind}", comparison.delta),
        (f"p_vs_{kind}", comparison.test.p_value),
        (f"p_vs_{kind}_holm", comparison.p_holm),
    ):
        if value is not None:
            yield statistic, value


class CsvReporter(Reporter):
    name = "csv"
    description = (
        "Tidy CSV: one line per cell × figure × statistic (per-seed values; means, std, n, 95% CI, deltas and "
        "p-values per group)"
    )

    def render(self, report: Report) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in report.table_rows:  # the cells the aggregates cover (a search's selected setting, not its trials)
            head = [row["model"], row["task"], row["strategy"], row["seed"], row["status"]]
            figures = _figures(row)
            for metric, value in figures:
                writer.writerow([*head, metric, "value", value])
            if not figures:
                writer.writerow([*head, "", "", ""])
        for table in report.tables:
            for cell, group in table.cells.items():
                head = [group.model, group.task, group.strategy, "", "aggregate"]
                if group.quality is not None and group.metric:
                    for statistic, value in group.quality.to_json().items():
                        if value is not None:
                            writer.writerow([*head, group.metric, statistic, value])
                    tests = [*_test_lines("best", table.vs_best.get(cell)),
                             *_test_lines("baseline", table.vs_baseline.get(cell))]
                    for statistic, value in tests:
                        writer.writerow([*head, group.metric, statistic, value])
                for name, described in group.cost.items():
                    for statistic, value in described.to_json().items():
                        if value is not None:
                            writer.writerow([*head, f"cost.{name}", statistic, value])
        return buffer.getvalue()


class JsonReporter(Reporter):
    name = "json"
    description = (
        "JSON object: records (one per cell, the stable contract; see harness.results.records), groups (aggregates), "
        "tables (comparisons with methods and p-values), environment, methods"
    )

    def render(self, report: Report) -> str:
        data = {
            "schema_version": REPORT_SCHEMA_VERSION,
            "options": asdict(report.options),
            "suite": dict(report.suite),
            "header": report.header,
            "methods": report.methods,
            "environment": dict(report.environment),
            "pending": report.pending,
            "records": [dict(row) for row in report.rows],
            "groups": [group.to_json() for group in report.groups],
            "tables": [table.to_json() for table in report.tables],
            "searches": [search.to_json() for search in report.searches],
        }
        return json.dumps(data, indent=2, default=str)
