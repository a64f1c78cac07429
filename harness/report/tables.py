"""The text of the comparison tables every reporter shares: cell texts (:func:`table_cells`, :func:`cost_table`)
that each format marks up in its own way.

Numbers in tables: a metric's mean is shown with 4 significant digits and its standard deviation to the same
decimal place (``0.8123 ± 0.0123``); metrics are shown as the task reports them (fractions stay fractions). Times
are seconds with 4 significant digits; memory is MiB (2**20 bytes), labelled ``GPU`` (torch's peak allocated
memory) or ``RSS`` (the cell process's peak resident set size, used when a cell had no GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.api.cells import format_value as format_setting

if TYPE_CHECKING:  # pragma: no cover
    from harness.report.analysis import Table
    from harness.report.groups import Group

#: Footer explaining the memory labels of the cost tables.
MEMORY_LEGEND = (
    "Peak memory in MiB: GPU = torch max_memory_allocated in the cell; RSS = peak resident set size of the cell "
    "process (cells that ran without a GPU)."
)


# -- formatting --------------------------------------------------------------------------------------------------


def format_mean_std(mean: float, std: float) -> str:
    """``mean ± std``: the mean with 4 significant digits, the std to the same decimal place."""
    if not (math.isfinite(mean) and math.isfinite(std)):
        return f"{mean} ± {std}"
    decimals = _decimals(mean)
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def _decimals(value: float) -> int:
    return 4 if value == 0 else max(0, 3 - math.floor(math.log10(abs(value))))


def format_value(value: float) -> str:
    """A single value (one seed: no standard deviation) with 4 significant digits."""
    return f"{value:.{_decimals(value)}f}" if math.isfinite(value) else str(value)


def format_delta(delta: float, like: float) -> str:
    """A signed difference at the decimal place of ``like`` (the value it is a difference of): ``+0.0123``."""
    if not math.isfinite(delta):
        return str(delta)
    text = f"{delta:+.{_decimals(like)}f}"
    return text.replace("-", "−")


def format_number(value: float | None) -> str:
    """4 significant digits without exponent notation; ``-`` for a missing value."""
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def format_bytes(value: float | None) -> str:
    """Bytes in binary units with 3 significant digits (``1.73 MiB``); ``-`` for a missing value."""
    if value is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"


class Footnotes:
    """Numbered footnotes, each distinct text once: ``mark(text)`` returns ``[k]``."""

    #: Longer texts (errors with log lines) are cut; the full error is in the record and the JSON report.
    LONGEST = 400

    def __init__(self) -> None:
        self._texts: dict[str, int] = {}

    def mark(self, text: str) -> str:
        text = " ".join(text.split())
        if len(text) > self.LONGEST:
            text = text[: self.LONGEST - 1] + "…"
        number = self._texts.setdefault(text, len(self._texts) + 1)
        return f"[{number}]"

    def lines(self) -> list[str]:
        return [f"[{n}] {text}" for text, n in self._texts.items()]


@dataclass(frozen=True)
class CellText:
    """The parts of one comparison cell, for each format to mark up.

    :param value: ``mean ± std`` over ok seeds, ``None`` without a value (then ``empty`` says why).
    :param delta: difference to the baseline's mean (``None`` for the baseline itself or without one).
    :param best: the best mean of its row (or column); ``not_worse``: not significantly worse than the best.
    :param notes: extra lines, e.g. ``+1 failed [2]`` (footnote marks included).
    """

    value: str | None = None
    n: int = 0
    delta: str | None = None
    best: bool = False
    not_worse: bool = False
    notes: tuple[str, ...] = ()
    empty: str = "-"


def cell_text(table: Table, cell: tuple[str, str], notes: Footnotes) -> CellText:
    group = table.cells.get(cell)
    if group is None:
        return CellText()
    failed = ""
    if group.failed:
        failed = notes.mark("failed: " + next(iter(group.failed.values())))
    if group.quality is None:
        if group.failed:
            return CellText(empty=f"failed ({len(group.failed)}) {failed}")
        if group.skipped:
            return CellText(empty=f"skipped {notes.mark('skipped: ' + next(iter(group.skipped.values())))}")
        return CellText(empty=f"no {group.metric}" if group.metric else "no value")
    quality = group.quality
    comparison = table.vs_baseline.get(cell)
    delta = None
    if comparison is not None and comparison.delta is not None:
        reference = quality.mean - comparison.delta
        delta = format_delta(comparison.delta, max(abs(quality.mean), abs(reference)))
    value = format_mean_std(quality.mean, quality.std) if quality.n > 1 else format_value(quality.mean)
    extra = (f"+{len(group.failed)} failed {failed}",) if group.failed else ()
    if group.search is not None:
        extra += (search_note(group, notes),)
    return CellText(
        value=value, n=quality.n, delta=delta, best=cell in table.best, not_worse=table.not_worse(cell), notes=extra,
    )


def search_note(group: Group, notes: Footnotes) -> str:
    """``4 trials [2]``: the trial count of a searched group, its footnote naming the selected setting."""
    search = group.search
    assert search is not None
    chosen = ", ".join(f"{k} = {format_setting(v)}" for k, v in search.values.items()) or "none scored"
    of = f"{search.trials} of {search.planned}" if search.trials < search.planned else f"{search.trials}"
    mark = notes.mark(f"{group.strategy} on {group.task} ({group.model}): selected on validation "
                      f"{search.metric or 'metric'} from {of} trials: {chosen}")  # fmt: skip
    return f"{search.trials} trial{'s' if search.trials != 1 else ''} {mark}"


def table_cells(table: Table, notes: Footnotes) -> tuple[list[str], list[tuple[str, list[CellText]]]]:
    """Column headings (first: the row heading) and, per row, its label and cells."""
    corner = table.rows_dim if table.rows_dim != "task" else "task (metric)"
    headers = [corner, *(table.label(table.cols_dim, c) for c in table.col_values)]
    body = [
        (table.label(table.rows_dim, r), [cell_text(table, (r, c), notes) for c in table.col_values])
        for r in table.row_values
    ]
    return headers, body


def table_title(table: Table) -> str:
    return f"{table.page_dim} {table.label(table.page_dim, table.page)}"


#: ``n``: ok seeds / seeds; ``trainable``: parameters and % of the total; ``stored``: bytes to save (see
#: :class:`harness.results.records.Params`); peak memory (GPU or RSS); ``train/s``: training samples per second.
COST_HEADERS = ["n", "trainable", "stored", "peak MiB", "train s", "train/s"]


def format_count(value: float) -> str:
    """A count with 3-4 significant digits and a k / M / B suffix: ``74.9k``, ``22.71M``."""
    value = round(value)
    units = (("", 1.0), ("k", 1e3), ("M", 1e6), ("B", 1e9))
    for i, (suffix, size) in enumerate(units):
        text = f"{value:.0f}" if not suffix else f"{value / size:.4g}"
        # the next unit when this one would round to 1000 or more (999,999 is 1M, never 1000k)
        if abs(float(text)) < 1000 or i == len(units) - 1:
            return text + suffix
    raise AssertionError("unreachable")


def omitted_notes(table: Table, notes: Footnotes) -> list[str]:
    """One line per row or column left out of ``table`` because all its cells were planned as skipped."""
    return [f"not shown: {dim} {value}, every cell skipped {notes.mark('skipped: ' + reason)}"
            for dim, value, reason in table.omitted]


def cost_table(table: Table) -> tuple[list[str], list[list[str]]]:
    """The companion cost table of ``table``: one line per cell (row, column), means over ok seeds (train time as
    mean ± std), peak memory labelled GPU or RSS (see :data:`MEMORY_LEGEND`)."""
    kinds = {g.memory_kind for g in table.cells.values() if "peak_memory_mib" in g.cost}
    memory_header = f"{next(iter(kinds))} MiB" if len(kinds) == 1 else "peak MiB"
    headers = [table.rows_dim, table.cols_dim, *(memory_header if h == "peak MiB" else h for h in COST_HEADERS)]
    # GPU runs: model FLOPs utilisation and energy, when any cell of the table measured them
    extra = [name for name in ("mfu", "energy_j") if any(name in g.cost for g in table.cells.values())]
    headers += [{"mfu": "MFU %", "energy_j": "energy J"}[name] for name in extra]
    # searched strategies: their trials and the training time of all of them (what the search cost)
    searched = [g.search for g in table.cells.values() if g.search is not None]
    search_gpu = any(s.gpu_hours is not None for s in searched)
    if searched:
        headers += ["trials", "search train s", *(["search GPU h"] if search_gpu else [])]
    body = []
    for r in table.row_values:
        for c in table.col_values:
            group = table.cells.get((r, c))
            if group is None or (group.quality is None and not group.failed):
                continue  # skipped: the quality table says why
            cost = group.cost
            trainable = "-"
            if "trainable" in cost:
                trainable = format_count(cost["trainable"].mean)
                if "trainable_pct" in cost:
                    pct = cost["trainable_pct"].mean
                    trainable += f" {pct:.0f}%" if pct >= 10 else f" {pct:.2g}%"
            stored = format_bytes(cost["stored_bytes"].mean) if "stored_bytes" in cost else "-"
            memory = "-"
            if "peak_memory_mib" in cost:
                memory = format_number(cost["peak_memory_mib"].mean)
                memory += "" if len(kinds) == 1 else f" {group.memory_kind}"
            train = "-"
            if "train_s" in cost:
                described = cost["train_s"]
                train = format_number(described.mean)
                if described.n > 1:
                    train = f"{train} ± {described.std:.2g}"
            throughput = format_number(cost["train_samples_per_s"].mean) if "train_samples_per_s" in cost else "-"
            total = len(group.values) + len(group.failed) + len(group.skipped)
            ok = len(group.values)
            gpu = [
                "-" if name not in cost else f"{cost[name].mean * 100:.3g}" if name == "mfu" else format_number(cost[name].mean)
                for name in extra
            ]
            line = [r, c, f"{ok}/{total}", trainable, stored, memory, train, throughput, *gpu]
            if searched:
                search = group.search
                line += ["-", "-"] if search is None else [str(search.trials), format_number(search.train_s)]
                if search_gpu:
                    line.append("-" if search is None or search.gpu_hours is None else f"{search.gpu_hours:.3g}")
            body.append(line)
    return headers, body
