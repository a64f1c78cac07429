"""The ``html`` reporter of ``harness report``: one self-contained HTML5 page.

It shows what the ``table`` and ``markdown`` reporters show (:mod:`harness_plugins.reporters`): per table the
quality pivot — ``mean ± std`` over ok seeds (the best of a row, or column, in ``<strong>``; ``†``, explained in its
``title``, on those not significantly worse than it), ``(n=k)``, Δ to the baseline in ``<small>`` and footnote
marks linked to the footnotes — and the companion cost table (neither for a page whose every cell was planned as
skipped: its "not shown" note instead); then the methods and footnotes, the plots, the
environment summary and the failed cells with their full errors.

Plots: the report's ``.svg`` plots (``harness report --plots DIR``) or, when it has none, the plots drawn for the
page into a temporary folder (:func:`harness.report.figures.write_report_plots`), inlined as ``<svg>`` elements under a
heading per task, their XML prolog, comments and metadata removed and their ids prefixed per plot (so that
several plots on the page share no id).

The page loads nothing: inline style (print-friendly), no script, no external link. Every text is escaped with
:func:`html.escape`.
"""

from __future__ import annotations

import html
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.api.components import Reporter
from harness.report.figures import write_report_plots
from harness.report.plots import plot_stem
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

from .report_latex import best_of, quality_words, table_slugs

if TYPE_CHECKING:  # pragma: no cover
    from harness.report.analysis import Table
    from harness.report.reporting import Report

_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1b1b;
       max-width: 78rem; margin: 1.5rem auto; padding: 0 1rem; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; color: #444; padding-bottom: .3rem; }
th, td { border-top: 1px solid #ddd; padding: .3rem .6rem; vertical-align: top; text-align: left; }
thead th { border-top: 2px solid #333; border-bottom: 1px solid #333; }
tbody tr:last-child > * { border-bottom: 2px solid #333; }
table.quality td { text-align: center; } table.cost td.num { text-align: right; }
.n, small, .note { color: #555; } .nw { cursor: help; } .pending { color: #8a4b00; }
a { color: #0b57a4; }
pre { white-space: pre-wrap; word-break: break-word; background: #f6f6f6; padding: .4rem; margin: 0;
      max-height: 20rem; overflow: auto; }
figure { display: inline-block; margin: .5rem 1rem 1rem 0; max-width: 100%; vertical-align: top; }
figure svg { max-width: 100%; height: auto; } figcaption { color: #444; font-size: 90%; }
dl.env { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; } dl.env dd { margin: 0; }
@media print {
  body { max-width: none; margin: 0; font-size: 11pt; } nav { display: none; }
  a { color: inherit; text-decoration: none; } pre { max-height: none; overflow: visible; }
  table, figure { break-inside: avoid; } h2, h3 { break-after: avoid; }
}
"""
#: The order of a (task, model)'s plots on the page (see :mod:`harness.report.plots`); other names follow.
PLOT_ORDER = ("quality-vs-trainable", "quality-vs-memory", "quality-vs-train-time", "quality-vs-k", "step-times")
_MARK = re.compile(r"\[(\d+)\]")
_PROLOG = re.compile(r"<\?xml.*?\?>|<!DOCTYPE[^>]*>|<!--.*?-->|<metadata>.*?</metadata>", re.S | re.I)


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _linked(text: str) -> str:
    """``text`` escaped, its footnote marks ``[k]`` linked to the footnotes."""
    return _MARK.sub(r'<a href="#fn-\1">[\1]</a>', _esc(text))


def html_cell(cell: CellText, dagger_title: str) -> str:
    """One comparison cell: the value (``<strong>`` when best, ``†`` with ``dagger_title``), n, Δ and notes."""
    if cell.value is None:
        return f'<span class="empty">{_linked(cell.empty)}</span>'
    value = f"<strong>{_esc(cell.value)}</strong>" if cell.best else _esc(cell.value)
    if cell.not_worse:
        value += f' <span class="nw" title="{_esc(dagger_title)}">†</span>'
    parts = [value, f'<span class="n">(n={cell.n})</span>']
    if cell.delta is not None:
        parts.append(f'<small class="delta">Δ {_esc(cell.delta)}</small>')
    parts += [f'<small class="note">{_linked(note)}</small>' for note in cell.notes]
    return "<br>".join(parts)


def _table(css: str, caption: str, headers: list[str], body: list[tuple[str, list[str]]]) -> list[str]:
    """A ``<table>``: ``caption`` (markup), headers (text) and rows of (heading text, marked-up ``<td>`` cells)."""
    out = [f'<table class="{css}">', f"<caption>{caption}</caption>", "<thead><tr>"]
    out += [f'<th scope="col">{_esc(h)}</th>' for h in headers]
    out += ["</tr></thead>", "<tbody>"]
    out += [f'<tr><th scope="row">{_esc(label)}</th>{"".join(cells)}</tr>' for label, cells in body]
    return [*out, "</tbody>", "</table>"]


def _table_section(report: Report, table: Table, slug: str, notes: Footnotes) -> list[str]:
    """The quality pivot and the cost table of ``table``; only its note when every cell of its page was skipped."""
    if not table.shown:
        return [f'<section id="table-{slug}">', f"<h2>{_esc(table_title(table))}</h2>",
                *(f'<p class="note">{_linked(line)}</p>' for line in omitted_notes(table, notes)), "</section>"]
    headers, rows = table_cells(table, notes)
    dagger = f"not significantly worse than the best of its {best_of(table)} (Holm-corrected p ≥ {table.alpha:g})"
    caption = (f"{_esc(quality_words(report).capitalize())}: mean ± sample std over ok seeds (n); "
               f"<strong>bold</strong>: best of its {best_of(table)}; †: {_esc(dagger)}.")
    if table.baseline is not None:
        caption += f" Δ: difference of the means to {_esc(table.baseline)}."
    body = [(label, [f"<td>{html_cell(c, dagger)}</td>" for c in cells]) for label, cells in rows]
    out = [f'<section id="table-{slug}">', f"<h2>{_esc(table_title(table))}</h2>"]
    out += _table("quality", caption, headers, body)
    out += [f'<p class="note">{_linked(line)}</p>' for line in omitted_notes(table, notes)]
    cost_headers, cost = cost_table(table)
    cost_body = [
        (row[0], [f"<td>{_esc(row[1])}</td>", *(f'<td class="num">{_esc(c)}</td>' for c in row[2:])]) for row in cost
    ]
    out += _table("cost", "Cost: means over ok seeds (train time: mean ± std).", cost_headers, cost_body)
    return [*out, "</section>"]


def _notes_section(report: Report, notes: Footnotes) -> list[str]:
    out = ['<section id="notes">', "<h2>Methods and notes</h2>", "<ul>"]
    out += [f"<li>{_esc(line)}</li>" for line in (*report.methods, MEMORY_LEGEND)]
    out.append("</ul>")
    marks = [m for m in (_MARK.match(line) for line in notes.lines()) if m]
    if marks:
        out.append('<ol class="footnotes">')
        out += [f'<li id="fn-{m[1]}" value="{m[1]}">{_esc(m.string[m.end():].strip())}</li>' for m in marks]
        out.append("</ol>")
    return [*out, "</section>"]


def _scoped_svg(svg: str, prefix: str) -> str:
    """An SVG file's markup for inlining: prolog, doctype, comments and metadata removed, its ids (and the
    references to them) prefixed with ``prefix``."""
    svg = _PROLOG.sub("", svg).strip()
    svg = re.sub(r'(?<=\s)id="([^"]*)"', lambda m: f'id="{prefix}{m[1]}"', svg)
    svg = re.sub(r'(?<=\s)((?:xlink:)?href)="#([^"]*)"', lambda m: f'{m[1]}="#{prefix}{m[2]}"', svg)
    return re.sub(r"url\(#([^)]*)\)", lambda m: f"url(#{prefix}{m[1]})", svg)


def report_svgs(report: Report) -> list[tuple[str, str]]:
    """(file stem, SVG markup) of the report's ``.svg`` plots; when it has none, of the plots drawn for it into a
    temporary folder (:func:`harness.report.figures.write_report_plots`)."""
    paths = [Path(p) for p in report.plots if Path(p).suffix.lower() == ".svg"]
    if paths:
        return [(p.stem, p.read_text("utf-8")) for p in paths]
    with tempfile.TemporaryDirectory(prefix="harness-plots-") as tmp:
        return [(p.stem, p.read_text("utf-8")) for p in write_report_plots(report, Path(tmp), formats=("svg",))]


def _plots_section(report: Report) -> list[str]:
    """The plots inlined, a heading per task in the order of the report's groups, per model in :data:`PLOT_ORDER`;
    plots whose file names match no (task, model) of the report come last, under "Other plots"."""
    pairs = list(dict.fromkeys((g.task, g.model) for g in report.groups))
    prefixes = sorted(((plot_stem(t, m, ""), t, m) for t, m in pairs), key=lambda p: -len(p[0]))
    by_task: dict[str | None, list[tuple[tuple[int, int, str], str]]] = {t: [] for t, _ in pairs}
    for k, (stem, svg) in enumerate(report_svgs(report)):
        task, caption, order = None, stem, (len(pairs), 0, stem)
        match = next((p for p in prefixes if stem.startswith(p[0])), None)
        if match is not None:
            plot = stem[len(match[0]):]
            task, caption = match[1], f"{match[2]}: {plot.replace('-', ' ')}"
            rank = PLOT_ORDER.index(plot) if plot in PLOT_ORDER else len(PLOT_ORDER)
            order = (pairs.index((match[1], match[2])), rank, stem)
        figure = f"<figure>{_scoped_svg(svg, f'plot{k}-')}<figcaption>{_esc(caption)}</figcaption></figure>"
        by_task.setdefault(task, []).append((order, figure))
    if not any(by_task.values()):
        return []
    out = ['<section id="plots">', "<h2>Plots</h2>"]
    for task, figures in sorted(by_task.items(), key=lambda item: item[0] is None):
        if figures:
            out += [f"<h3>{_esc(task if task is not None else 'Other plots')}</h3>", *(f for _, f in sorted(figures))]
    return [*out, "</section>"]


def _failures_section(failures: list[Mapping[str, Any]]) -> list[str]:
    body = [
        (str(r["task"]), [f"<td>{_esc(r['strategy'])}</td>", f"<td>{_esc(r['model'])}</td>",
                          f"<td>{_esc(r['seed'])}</td>",
                          f"<td><pre>{_esc(r.get('error') or 'no error recorded')}</pre></td>"])
        for r in failures
    ]
    caption = "Cells that ended with an error (the full error as recorded)."
    return ['<section id="failures">', f"<h2>Failed cells ({len(failures)})</h2>",
            *_table("failures", caption, ["task", "strategy", "model", "seed", "error"], body), "</section>"]


class HtmlReporter(Reporter):
    name = "html"
    description = (
        "One self-contained HTML page: the quality and cost tables, methods and footnotes, the plots inlined as "
        "SVG, the environment and the failed cells with their errors"
    )

    def render(self, report: Report) -> str:
        notes = Footnotes()
        title = "harness report" + (f": {report.results_dir.name}" if report.results_dir else "")
        slugs = table_slugs(report.tables)
        sections: list[tuple[str, str, list[str]]] = [
            (f"table-{slug}", table_title(table), _table_section(report, table, slug, notes))
            for table, slug in zip(report.tables, slugs, strict=True)
        ]
        sections.append(("notes", "Methods and notes", _notes_section(report, notes)))
        sections.append(("plots", "Plots", _plots_section(report)))
        if report.environment:
            env = [f"<dt>{_esc(name)}</dt><dd>{_esc(value)}</dd>" for name, value in report.environment]
            sections.append(("environment", "Environment", ['<section id="environment">', "<h2>Environment</h2>",
                                                            '<dl class="env">', *env, "</dl>", "</section>"]))
        if report.failures:
            sections.append(("failures", "Failed cells", _failures_section(report.failures)))
        pending = pending_note(report.rows)
        return "\n".join([
            "<!doctype html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{_esc(title)}</title>",
            f"<style>{_STYLE}</style>", "</head>", "<body>", "<header>", f"<h1>{_esc(title)}</h1>",
            *(f'<p class="profile">{_esc(line)}</p>' for line in report.header),
            *([f'<p class="pending">{_esc(pending)}</p>'] if pending else []), "</header>",
            "<nav>", "<ul>", *(f'<li><a href="#{a}">{_esc(text)}</a></li>' for a, text, lines in sections if lines),
            "</ul>", "</nav>", "<main>", *(line for _, _, lines in sections for line in lines), "</main>",
            "</body>", "</html>", "",
        ])
