"""Reading a results directory into report rows, and the text of the comparison tables every reporter shares.

A *row* is :meth:`harness.records.Record.to_json` of one cell (``harness report --format json`` prints them under
``records``). :mod:`harness.analysis` aggregates rows over seeds and tests the differences; this module turns its
tables into cell texts (:func:`table_cells`, :func:`cost_table`) that each format marks up in its own way.

Numbers in tables: a metric's mean is shown with 4 significant digits and its standard deviation to the same
decimal place (``0.8123 ± 0.0123``); metrics are shown as the task reports them (fractions stay fractions). Times
are seconds with 4 significant digits; memory is MiB (2**20 bytes), labelled ``GPU`` (torch's peak allocated
memory) or ``RSS`` (the cell process's peak resident set size, used when a cell had no GPU).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import HarnessError
from .records import InvalidRecordError, NewerSchemaError, Record, read_record
from .store import PLAN, RECORD

if TYPE_CHECKING:  # pragma: no cover
    from .analysis import Table

Row = Mapping[str, Any]

#: Footer explaining the memory labels of the cost tables.
MEMORY_LEGEND = (
    "Peak memory in MiB: GPU = torch max_memory_allocated in the cell; RSS = peak resident set size of the cell "
    "process (cells that ran without a GPU)."
)


class Rows(list[dict[str, Any]]):
    """Report rows (``Record.to_json()`` dicts) plus ``pending``: planned cells that have no record yet,
    ``dirs``: record key -> the cell's folder (its predictions, steps.json and log), and ``warnings``: one line per
    record file that could not be read (``<path>: unreadable record (why); ...``), for the command to print."""

    def __init__(
        self, rows: Iterable[dict[str, Any]] = (), pending: int = 0, dirs: dict[str, Path] | None = None,
        warnings: Iterable[str] = (),
    ):
        super().__init__(rows)
        self.pending = pending
        self.dirs: dict[str, Path] = dict(dirs or {})
        self.warnings: list[str] = list(warnings)


def pending_count(rows: Sequence[Row]) -> int:
    """Planned cells without a record behind ``rows`` (0 for a plain list)."""
    return int(getattr(rows, "pending", 0))


def pending_note(rows: Sequence[Row]) -> str | None:
    """The footer line about planned cells without a record, or ``None`` when there are none."""
    n = pending_count(rows)
    if not n:
        return None
    return f"{n} planned cell{'s' if n != 1 else ''} {'have' if n != 1 else 'has'} no record yet."


# -- loading ---------------------------------------------------------------------------------------------------


def load_rows(results_dir: Path) -> Rows:
    """The rows of a results directory, sorted by model, task, strategy, seed.

    With ``plan.json`` (written by ``harness run``) exactly the cells of the current plan are reported: a cell's
    record counts only when its key matches the plan (records of an older configuration are ignored); a planned
    skipped cell without a record becomes a ``skipped`` row carrying its reason; other planned cells without a
    record are counted in :attr:`Rows.pending`. Without a plan, every record is reported, the newest
    (``finished_at``) per task, strategy, model and seed. A record file that cannot be read (truncated, not a
    record) counts as missing, with a line in :attr:`Rows.warnings` naming it and why.

    :raises HarnessError: the directory does not exist, holds no readable records (the message lists the unreadable
        ones), or a record was written by a newer harness.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise HarnessError(f"{root}: {'not a directory' if root.exists() else 'no such results directory'}")
    rows = _rows_from_plan(root) if (root / PLAN).is_file() else _newest_records(root)
    if not rows:
        waiting = f" ({rows.pending} planned cells have no record yet)" if rows.pending else ""
        raise HarnessError("\n".join([
            f"{root}: no records found{waiting}; run `harness run SUITE --output {root}` first", *rows.warnings,
        ]))
    rows.sort(key=lambda r: (str(r["model"]), str(r["task"]), str(r["strategy"]), int(r["seed"])))
    return rows


def _newest_records(root: Path) -> Rows:
    newest: dict[tuple[str, str, str, int], tuple[Record, Path]] = {}
    warnings: list[str] = []
    for path in sorted((root / "cells").glob(f"*/{RECORD}")):
        try:
            record = read_record(path)
        except NewerSchemaError as exc:
            raise HarnessError(f"{path}: {exc}") from None
        except InvalidRecordError as exc:
            warnings.append(f"{path}: unreadable record ({exc}); the cell is left out")
            continue
        except OSError:
            continue
        identity = (record.task, record.strategy, record.model, record.seed)
        kept = newest.get(identity)
        if kept is None or (record.finished_at or "") > (kept[0].finished_at or ""):
            newest[identity] = (record, path.parent)
    return Rows(
        (r.to_json() for r, _ in newest.values()), dirs={r.key: d for r, d in newest.values()}, warnings=warnings
    )


def _rows_from_plan(root: Path) -> Rows:
    from .plan import Cell

    path = root / PLAN
    try:
        planned = [(str(e["key"]), str(e["dir"]), Cell.from_json(e)) for e in json.loads(path.read_text("utf-8"))["cells"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HarnessError(f"{path}: not a plan written by `harness run` ({type(exc).__name__}: {exc})") from None
    rows = Rows()
    for key, dirname, cell in planned:
        path = root / "cells" / dirname / RECORD
        record, problem = _read_matching(path, key)
        if problem is not None:
            counted = "reported as skipped, from the plan" if cell.skip_reason else "counted as missing"
            rows.warnings.append(f"{path}: unreadable record ({problem}); the cell is {counted}")
        if record is None and cell.skip_reason:
            record = Record(
                key=key, suite=cell.suite, cell_id=cell.cell_id, task=cell.task, strategy=cell.strategy,
                model=cell.model, seed=cell.seed, status="skipped", error=cell.skip_reason, config=cell.config(),
            )
        if record is None:
            rows.pending += 1
        else:
            rows.append(record.to_json())
            rows.dirs[record.key] = root / "cells" / dirname
    return rows


def _read_matching(path: Path, key: str) -> tuple[Record | None, str | None]:
    """The record in ``path`` when its key is ``key`` (else ``None``: no record yet, or one of an older
    configuration), and why the file is unreadable when it is."""
    try:
        record = read_record(path)
    except NewerSchemaError as exc:
        raise HarnessError(f"{path}: {exc}") from None
    except InvalidRecordError as exc:
        return None, str(exc)
    except OSError:
        return None, None
    return (record if record.key == key else None), None


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
    return CellText(
        value=value, n=quality.n, delta=delta, best=cell in table.best,
        not_worse=table.not_worse(cell), notes=(f"+{len(group.failed)} failed {failed}",) if group.failed else (),
    )


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
#: :class:`harness.records.Params`); peak memory (GPU or RSS); ``train/s``: training samples per second.
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
            body.append([r, c, f"{ok}/{total}", trainable, stored, memory, train, throughput, *gpu])
    return headers, body
