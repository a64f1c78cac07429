"""Built-in text reporters of ``harness report``: ``table`` (terminal), ``markdown``, ``csv`` (tidy) and ``json``.

Each renders a :class:`harness.report.reporting.Report`: per table (one per model by default) the quality pivot — cells
``mean ± std`` over ok seeds, ``(n=k)``, Δ against the baseline, ``*`` on the best of a row (bold in markdown), ``†``
on those not significantly worse than it — then the cost table, the methods and the footnotes. A page whose every
cell was planned as skipped gets no tables, only its "not shown" note. Light at import: tabulate is imported when a
table is rendered.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import TYPE_CHECKING

from harness.api.components import Reporter
from harness.api.hookspecs import hookimpl
from harness.report.rows import pending_note
from harness.report.tables import (
    MEMORY_LEGEND,
    CellText,
    Footnotes,
    cost_table,
    omitted_notes,
    table_cells,
    table_title,
)

from .report_data import CsvReporter, JsonReporter
from .report_html import HtmlReporter
from .report_latex import LatexReporter

if TYPE_CHECKING:  # pragma: no cover
    from harness.report.analysis import Table
    from harness.report.reporting import Report

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
        max([_text_width(header) + _HEADER_PADDING, *(_text_width(row[i]) for row in body)])
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


def _footer(report: Report, notes: Footnotes, bullet: str = "") -> list[str]:
    lines = [f"{bullet}{line}" for line in (*report.methods, MEMORY_LEGEND, *notes.lines())]
    pending = pending_note(report.rows)
    if pending:
        lines.append(f"{bullet}{pending}")
    return lines


def _baseline_line(table: Table) -> str | None:
    if table.baseline is None:
        return None
    return f"Δ: difference of the means to {table.baseline}."


def terminal_cell(cell: CellText) -> str:
    """A comparison cell for the terminal: value with ``*`` (best) or ``†``, then ``(n=k)``, Δ and notes, a line each."""
    if cell.value is None:
        return cell.empty
    marker = " *" if cell.best else " †" if cell.not_worse else ""
    lines = [cell.value + marker, f"(n={cell.n})"]
    if cell.delta is not None:
        lines.append(f"Δ {cell.delta}")
    return "\n".join([*lines, *cell.notes])


def markdown_cell(cell: CellText) -> str:
    if cell.value is None:
        return cell.empty
    value = f"**{cell.value}**" if cell.best else cell.value + (" †" if cell.not_worse else "")
    parts = [value, f"(n={cell.n})"]
    if cell.delta is not None:
        parts.append(f"Δ {cell.delta}")
    return " ".join([*parts, *cell.notes])


class TableReporter(Reporter):
    name = "table"
    description = (
        "Terminal tables, 100 columns wide: the quality pivot (mean ± std, n, Δ to the baseline, * best, "
        "† not significantly worse), then the cost table"
    )

    def render(self, report: Report) -> str:
        notes = Footnotes()
        out: list[str] = [*(textwrap.fill(line, WIDTH) for line in report.header), *([""] if report.header else [])]
        for table in report.tables:
            if not table.shown:  # every cell of the page skipped: the note alone
                out += [*(textwrap.fill(line, WIDTH) for line in omitted_notes(table, notes)), ""]
                continue
            headers, rows = table_cells(table, notes)
            body = [[label, *(terminal_cell(c) for c in cells)] for label, cells in rows]
            out.append(f"{table_title(table)}: {_METRIC_CAPTION}")
            out += self._chunks(headers, body)
            if (line := _baseline_line(table)) is not None:
                out.append(line)
            out += [textwrap.fill(line, WIDTH) for line in omitted_notes(table, notes)]
            out.append("")
            cost_headers, cost = cost_table(table)
            for i in range(len(cost) - 1, 0, -1):  # name each row value once, on its first line
                if cost[i][0] == cost[i - 1][0]:
                    cost[i][0] = ""
            out += [f"{table_title(table)}: cost, means over ok seeds", _grid(cost_headers, cost), ""]
        out += [textwrap.fill(line, WIDTH, subsequent_indent="    ") for line in _footer(report, notes)]
        return "\n".join(out)

    @staticmethod
    def _chunks(headers: list[str], body: list[list[str]]) -> list[str]:
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
    description = "GitHub-flavoured Markdown: a heading per table, the quality pivot (best in bold) and the cost table"

    def render(self, report: Report) -> str:
        notes = Footnotes()
        out = ["# Results", "", *(f"> {_md(line)}\n" for line in report.header)]
        for table in report.tables:
            if not table.shown:  # every cell of the page skipped: the note alone
                out += [f"## {_md(table_title(table))}", "", *(_md(line) for line in omitted_notes(table, notes)), ""]
                continue
            headers, rows = table_cells(table, notes)
            body = [[label, *(markdown_cell(c) for c in cells)] for label, cells in rows]
            out += [f"## {_md(table_title(table))}", "", f"Quality: {_METRIC_CAPTION}.", "", _pipe_table(headers, body)]
            if (line := _baseline_line(table)) is not None:
                out += ["", line]
            out += [f"- {_md(line)}" for line in omitted_notes(table, notes)]
            cost_headers, cost = cost_table(table)
            out += ["", "Cost: means over ok seeds.", "", _pipe_table(cost_headers, cost), ""]
        if report.environment:
            out += ["## Environment", "", *(f"- {name}: {_md(value)}" for name, value in report.environment), ""]
        out += [_md(line) for line in _footer(report, notes, bullet="- ")]
        return "\n".join(out).rstrip() + "\n"


REPORTERS: tuple[Callable[[], Reporter], ...] = (
    TableReporter, MarkdownReporter, LatexReporter, HtmlReporter, CsvReporter, JsonReporter,
)


@hookimpl
def harness_register_reporters(register: Callable[[Reporter], None]) -> None:
    for reporter in REPORTERS:
        register(reporter())
