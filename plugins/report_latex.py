"""The ``latex`` reporter of ``harness report``: booktabs table floats for a paper.

It shows what the ``table`` and ``markdown`` reporters show (:mod:`harness_plugins.reporters`): per table the
quality pivot — ``mean ± std`` over ok seeds (math mode), Δ to the baseline in ``\\scriptsize`` parentheses, the
best of a row (or column) in ``\\mathbf``, ``^{\\dagger}`` on those not significantly worse than it — then the
companion cost table, each a ``table`` float with its caption above and ``\\label{tab:harness-<page>}`` (the cost
table: ``tab:harness-<page>-cost``). The caption carries the methods sentences up to their first ``;`` or ``:``;
the full sentences are comment lines at the top. The seed count ``n`` is shown only where it differs from the
table's usual count (its most common one), which the caption names. Failed and skipped cells carry footnote marks,
numbered per table and explained in small print under its tabular. A page whose every cell was planned as skipped
gets no floats, only its "not shown" note (and the reason) as comment lines.

The output is a fragment that needs only ``booktabs`` and ``amsmath`` (its second line says so); wrap it with
:func:`standalone_document` to compile it alone. Every text is escaped with :func:`latex_escape`. The helpers
shared with the ``html`` reporter (:func:`table_slugs`, :func:`best_of`, :func:`quality_words`) live here.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import TYPE_CHECKING

from harness.api.components import Reporter
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

if TYPE_CHECKING:  # pragma: no cover
    from harness.report.analysis import Table
    from harness.report.reporting import Report

#: The LaTeX packages a fragment of :class:`LatexReporter` needs.
LATEX_PACKAGES = ("booktabs", "amsmath", "graphicx")
#: Tables with more columns than this are scaled to the text width (``\\resizebox``, graphicx).
WIDEST_UNSCALED = 5


# -- shared with the html reporter -----------------------------------------------------------------------------


def table_slugs(tables: tuple[Table, ...]) -> list[str]:
    """A distinct slug (``[a-z0-9-]``) per table, from its page value; ``-2``, ``-3``... appended on collisions."""
    out: list[str] = []
    for table in tables:
        slug = base = re.sub(r"[^A-Za-z0-9]+", "-", table.page).strip("-").lower() or "table"
        k = 1
        while slug in out:
            k += 1
            slug = f"{base}-{k}"
        out.append(slug)
    return out


def best_of(table: Table) -> str:
    """What a best cell is the best of: its ``row``, or its ``column`` when the columns are tasks."""
    return "row" if table.axis == "cols" else "column"


def quality_words(report: Report) -> str:
    """The quality figure of the tables: the chosen ``--metric``, else each task's primary metric."""
    return f"quality ({report.options.metric})" if report.options.metric else "quality (each task's primary metric)"


def usual_n(rows: list[tuple[str, list[CellText]]]) -> int | None:
    """The most common seed count of the cells with a value (the largest on a tie); ``None`` without values."""
    counts = Counter(cell.n for _, cells in rows for cell in cells if cell.value is not None)
    return max(counts, key=lambda n: (counts[n], n)) if counts else None


def _short(sentence: str) -> str:
    """A methods sentence up to its first ``;`` or ``:`` (the rest says how, for the full methods)."""
    cut = min((i for i in (sentence.find("; "), sentence.find(": ")) if i > 0), default=len(sentence))
    return sentence[:cut].rstrip(".")


# -- escaping --------------------------------------------------------------------------------------------------

_LATEX_TEXT = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
    "|": r"\textbar{}", "[": "{[}", "]": "{]}",  # braced: a row starting with [ is no optional argument of \\
    "±": r"$\pm$", "−": "$-$", "Δ": r"$\Delta$", "†": r"$^{\dagger}$", "×": r"$\times$", "·": r"$\cdot$",
    "≥": r"$\geq$", "≤": r"$\leq$", "√": r"$\surd$", "…": r"\ldots{}", "–": "--", "—": "---",
    "“": "``", "”": "''", "‘": "`", "’": "'",
}
_NUMBER = re.compile(r"[+-]?(\d[\d,]*)?(\.\d+)?")


def latex_escape(text: str) -> str:
    """``text`` for LaTeX's text mode: the special characters ``\\ & % $ # _ { } ~ ^ < > | [ ]`` escaped, ``±``,
    ``−``, ``Δ``, ``†`` and a few more symbols set in math, whitespace runs as one space, ``--`` kept as two
    hyphens, control characters dropped. Other non-ASCII characters are transliterated to ASCII (accents dropped;
    ``?`` when nothing is left), so that the text compiles with pdflatex's default fonts."""
    out = []
    text = " ".join(text.split())
    for i, char in enumerate(text):
        if char in _LATEX_TEXT:
            out.append(_LATEX_TEXT[char])
        elif char == "-":
            out.append("-{}" if text[i + 1: i + 2] == "-" else "-")
        elif char.isascii():
            out.append(char if char.isprintable() else "")
        else:
            ascii_text = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
            out.append(latex_escape(ascii_text) if ascii_text.strip() else "?")
    return "".join(out)


def _math_number(text: str) -> str:
    """A number for math mode (``−`` as ``-``, ``,`` braced); anything else in ``\\text{}``."""
    text = text.strip().replace("−", "-")
    if text and _NUMBER.fullmatch(text):
        return text.replace(",", "{,}")
    return rf"\text{{{latex_escape(text)}}}"


def latex_cell(cell: CellText, usual: int | None) -> str:
    """One comparison cell: ``$m \\pm s$`` (``\\mathbf`` when best, ``^{\\dagger}`` when not significantly worse),
    then in ``\\scriptsize`` ``n`` (where it differs from ``usual``), Δ in parentheses and the notes."""
    if cell.value is None:
        return latex_escape(cell.empty)
    math = r" \pm ".join(_math_number(part) for part in cell.value.split("±"))
    if cell.best:
        math = rf"\mathbf{{{math}}}"
    elif cell.not_worse:
        math += r"^{\dagger}"
    parts = [f"${math}$"]
    if usual is not None and cell.n != usual:
        parts.append(rf"{{\scriptsize $n{{=}}{cell.n}$}}")
    if cell.delta is not None:
        parts.append(rf"{{\scriptsize (${_math_number(cell.delta)}$)}}")
    parts += [rf"{{\scriptsize {latex_escape(note)}}}" for note in cell.notes]
    return " ".join(parts)


# -- layout ----------------------------------------------------------------------------------------------------


def _tabular(spec: str, headers: list[str], body: list[list[str]]) -> list[str]:
    """A booktabs tabular of already escaped cells."""
    return [
        rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(headers) + r" \\", r"\midrule",
        *(" & ".join(row) + r" \\" for row in body), r"\bottomrule", r"\end{tabular}",
    ]


def _float(caption: str, label: str, tabular: list[str], notes: list[str]) -> list[str]:
    """A ``table`` float: caption and label above the tabular, ``notes`` (escaped) in footnote size below it."""
    out = [r"\begin{table}[htbp]", r"\centering", rf"\caption{{{caption}}}", rf"\label{{{label}}}", r"\small"]
    columns = len(tabular[0].removeprefix(r"\begin{tabular}{").removesuffix("}"))
    if columns > WIDEST_UNSCALED:  # fit the text width (a paper's page) rather than run off it
        tabular = [r"\resizebox{\linewidth}{!}{" + tabular[0], *tabular[1:-1], tabular[-1] + "}"]
    out += tabular
    if notes:
        out.append(r"\par\smallskip\footnotesize\raggedright")
        out += [rf"{note}\par" for note in notes]
    return [*out, r"\end{table}", ""]


def _caption(report: Report, table: Table, usual: int | None) -> str:
    short = [_short(sentence) for sentence in report.methods]
    caption = [*report.header, f"{table_title(table)}: {quality_words(report)}."]
    if short:
        caption.append(short[0] + (f"; n = {usual} unless given." if usual is not None else "."))
    caption.append(f"Bold: best of its {best_of(table)}.")
    caption += [f"{sentence}." for sentence in short[1:]]
    if table.baseline is not None:
        caption.append(f"In parentheses: difference of the means to {table.baseline}.")
    return latex_escape(" ".join(caption))


class LatexReporter(Reporter):
    name = "latex"
    description = (
        "LaTeX table floats (booktabs, amsmath): per table the quality pivot (mean ± std, Δ to the baseline, best "
        "in bold, † not significantly worse) with caption, label and footnotes, then the cost table"
    )

    def render(self, report: Report) -> str:
        out = [
            "% harness report: LaTeX tables (a quality and a cost table float per comparison table).",
            f"% requires: {', '.join(LATEX_PACKAGES)}",
            "% methods (for the text):",
            *(f"%   {sentence}" for sentence in (*report.methods, MEMORY_LEGEND)),
            "",
        ]
        pending = pending_note(report.rows)
        for index, (table, slug) in enumerate(zip(report.tables, table_slugs(report.tables), strict=True)):
            notes = Footnotes()
            if not table.shown:  # every cell of the page skipped: no float, the note as comment lines
                out += [f"% {' '.join(line.split())}" for line in (*omitted_notes(table, notes), *notes.lines())]
                out.append("")
                continue
            headers, rows = table_cells(table, notes)
            usual = usual_n(rows)
            body = [[latex_escape(label), *(latex_cell(cell, usual) for cell in cells)] for label, cells in rows]
            below = [*omitted_notes(table, notes), *notes.lines(), *([pending] if pending and index == 0 else [])]
            out += _float(
                _caption(report, table, usual), f"tab:harness-{slug}",
                _tabular("l" + "c" * (len(headers) - 1), [latex_escape(h) for h in headers], body),
                [latex_escape(line) for line in below],
            )
            cost_headers, cost = cost_table(table)
            for i in range(len(cost) - 1, 0, -1):  # each row value once, on its first line
                if cost[i][0] == cost[i - 1][0]:
                    cost[i][0] = ""
            out += _float(
                latex_escape(f"{table_title(table)}: cost, means over ok seeds (train time: mean ± std). "
                             f"{MEMORY_LEGEND}"),
                f"tab:harness-{slug}-cost",
                _tabular("ll" + "r" * (len(cost_headers) - 2), [latex_escape(h) for h in cost_headers],
                         [[latex_escape(c) for c in row] for row in cost]),
                [],
            )
        if not report.tables:
            out.append("% no tables: the results hold no cells")
        return "\n".join(out)


def standalone_document(fragment: str) -> str:
    """``fragment`` (:class:`LatexReporter` output) as a complete ``article`` document with the packages it needs."""
    packages = "".join(f"\\usepackage{{{p}}}\n" for p in LATEX_PACKAGES)
    return f"\\documentclass{{article}}\n{packages}\\begin{{document}}\n{fragment}\n\\end{{document}}\n"
