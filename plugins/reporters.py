"""Built-in reporters of ``harness report``: ``table`` (terminal), ``markdown``, ``csv`` (tidy) and ``json``.

Light at import: tabulate is imported when a table is rendered.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from harness.components import Reporter
from harness.hookspecs import hookimpl
from harness.report import (
    COST_HEADERS,
    MEMORY_LEGEND,
    Footnotes,
    ModelView,
    by_model,
    comparison_table,
    cost_table,
    pending_note,
)

Rows = Sequence[Mapping[str, Any]]

#: Terminal width the ``table`` reporter fits in.
WIDTH = 100
# Width a column of the comparison table is planned at when strategies are split over several tables; the
# values "0.8123 ± 0.0123" take 15 characters. Wider text wraps.
_TASK_COLUMN = 16
_STRATEGY_COLUMN = 16
_NARROWEST = 8  # columns are never wrapped narrower than this
_HEADER_PADDING = 2  # tabulate pads headers with 2 spaces (its MIN_PADDING)

_METRIC_CAPTION = "primary metric, mean ± sample std over ok seeds (n = seeds averaged)"


def _text_width(text: str) -> int:
    return max((len(line) for line in text.split("\n")), default=0)


def _wrap(text: str, width: int) -> str:
    return "\n".join(
        "\n".join(textwrap.wrap(line, width, break_on_hyphens=True) or [""]) for line in text.split("\n")
    )


def _grid(headers: list[str], body: list[list[str]], width: int = WIDTH) -> str:
    """A box table no wider than ``width``: the widest columns are wrapped first."""
    from tabulate import tabulate

    widths = _column_widths(headers, body)
    while sum(widths) + 3 * len(widths) + 1 > width and max(widths) > _NARROWEST:
        widths[widths.index(max(widths))] -= 1
    wrapped_headers = [_wrap(h, w - _HEADER_PADDING) for h, w in zip(headers, widths, strict=True)]
    wrapped_body = [[_wrap(c, w) for c, w in zip(row, widths, strict=True)] for row in body]
    multiline = any("\n" in cell for row in wrapped_body for cell in row)
    # Row rules only where a row spans several lines; otherwise a lighter outline.
    fmt = "simple_grid" if multiline else "simple_outline"
    return tabulate(wrapped_body, wrapped_headers, tablefmt=fmt, disable_numparse=True)


def _column_widths(headers: list[str], body: list[list[str]]) -> list[int]:
    return [
        max(_text_width(header) + _HEADER_PADDING, *(_text_width(row[i]) for row in body))
        for i, header in enumerate(headers)
    ]


def _strategy_chunks(headers: list[str], body: list[list[str]]) -> list[list[int]]:
    """Split the strategy columns into groups whose tables fit :data:`WIDTH` (each repeats the task column)."""
    widths = _column_widths(headers, body)
    room = WIDTH - 1 - (min(widths[0], _TASK_COLUMN) + 3)
    chunks: list[list[int]] = [[]]
    used = 0
    for index in range(1, len(headers)):
        need = min(widths[index], _STRATEGY_COLUMN) + 3
        if chunks[-1] and used + need > room:
            chunks.append([])
            used = 0
        chunks[-1].append(index)
        used += need
    return chunks


def _footer(notes: Footnotes, rows: Rows, bullet: str = "") -> list[str]:
    lines = [f"{bullet}{line}" for line in notes.lines()]
    pending = pending_note(rows)
    if pending:
        lines.append(f"{bullet}{pending}")
    return lines


class TableReporter(Reporter):
    name = "table"
    description = "Terminal tables, 100 columns wide: primary metric per task × strategy, then time and memory"

    def render(self, rows: Rows) -> str:
        notes = Footnotes()
        out: list[str] = []
        for view in by_model(rows):
            out += [f"model {view.model}: {_METRIC_CAPTION}", *self._comparison(view, notes), ""]
            cost = cost_table(view)
            for i in range(len(cost) - 1, 0, -1):  # name each task once, on its first row
                if cost[i][0] == cost[i - 1][0]:
                    cost[i][0] = ""
            out += [f"model {view.model}: cost, means over ok seeds", _grid(COST_HEADERS, cost), ""]
        out.append(textwrap.fill(MEMORY_LEGEND, WIDTH))
        out += [textwrap.fill(line, WIDTH, subsequent_indent="    ") for line in _footer(notes, rows)]
        return "\n".join(out)

    @staticmethod
    def _comparison(view: ModelView, notes: Footnotes) -> list[str]:
        headers, body = comparison_table(view, notes, joiner="\n")
        tables = []
        for chunk in _strategy_chunks(headers, body):
            columns = [0, *chunk]
            tables.append(_grid([headers[i] for i in columns], [[row[i] for i in columns] for row in body]))
        return tables


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _pipe_table(headers: list[str], body: list[list[str]]) -> str:
    from tabulate import tabulate

    return tabulate(
        [[_md(c) for c in row] for row in body], [_md(h) for h in headers], tablefmt="github", disable_numparse=True
    )


class MarkdownReporter(Reporter):
    name = "markdown"
    description = "GitHub-flavoured Markdown: a heading per model, the metric pivot and the cost table"

    def render(self, rows: Rows) -> str:
        notes = Footnotes()
        out = ["# Results", ""]
        for view in by_model(rows):
            headers, body = comparison_table(view, notes, joiner=" ")
            out += [f"## {_md(view.model)}", "", f"Quality: {_METRIC_CAPTION}.", "", _pipe_table(headers, body), ""]
            out += ["Cost: means over ok seeds.", "", _pipe_table(COST_HEADERS, cost_table(view)), ""]
        out += [MEMORY_LEGEND, ""]
        out += [_md(line) for line in _footer(notes, rows, bullet="- ")]
        return "\n".join(out).rstrip() + "\n"


#: Record sections whose numeric fields the CSV reporter writes as ``section.field`` metrics.
CSV_SECTIONS = ("params", "timing", "memory")
CSV_COLUMNS = ("model", "task", "strategy", "seed", "status", "metric", "value")


def _figures(row: Mapping[str, Any]) -> list[tuple[str, float]]:
    def numeric(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    figures = [(name, value) for name, value in (row.get("metrics") or {}).items() if numeric(value)]
    for section in CSV_SECTIONS:
        for field, value in (row.get(section) or {}).items():
            if numeric(value):
                figures.append((f"{section}.{field}", value))
    return figures


class CsvReporter(Reporter):
    name = "csv"
    description = (
        "Tidy CSV: one line per cell × figure (metrics, then params.*, timing.*, memory.*); "
        "a cell without figures gets one line with empty metric and value"
    )

    def render(self, rows: Rows) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            head = [row["model"], row["task"], row["strategy"], row["seed"], row["status"]]
            figures = _figures(row)
            for metric, value in figures:
                writer.writerow([*head, metric, value])
            if not figures:
                writer.writerow([*head, "", ""])
        return buffer.getvalue()


class JsonReporter(Reporter):
    name = "json"
    description = "JSON list, one record per cell (the stable contract for scripts; see harness.records)"

    def render(self, rows: Rows) -> str:
        return json.dumps([dict(row) for row in rows], indent=2)


REPORTERS: tuple[Callable[[], Reporter], ...] = (TableReporter, MarkdownReporter, CsvReporter, JsonReporter)


@hookimpl
def harness_register_reporters(register: Callable[[Reporter], None]) -> None:
    for reporter in REPORTERS:
        register(reporter())
