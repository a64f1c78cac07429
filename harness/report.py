"""Reading a results directory into report rows, and summarising them for the comparison tables.

A *row* is :meth:`harness.records.Record.to_json` of one cell: the contract ``harness report --format json``
prints. Rows are summarised per (model, task, strategy) over their seeds: only ``ok`` seeds enter the mean, the
sample standard deviation (n-1; 0 for one seed) and ``n``; failed and skipped seeds are counted, never averaged.

Numbers in tables: a metric's mean is shown with 4 significant digits and its standard deviation to the same
decimal place (``0.8123 ± 0.0123``); metrics are shown as the task reports them (fractions stay fractions). Times
are seconds with 4 significant digits; memory is MiB (2**20 bytes), labelled ``GPU`` (torch's peak allocated
memory) or ``RSS`` (the cell process's peak resident set size, used when a cell had no GPU).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import HarnessError
from .records import Record, read_record
from .store import PLAN, RECORD, ResultStore

Row = Mapping[str, Any]

#: Footer explaining the memory labels of the cost tables.
MEMORY_LEGEND = (
    "Peak memory in MiB: GPU = torch max_memory_allocated in the cell; RSS = peak resident set size of the cell "
    "process (cells that ran without a GPU)."
)


class Rows(list[dict[str, Any]]):
    """Report rows (``Record.to_json()`` dicts) plus ``pending``: planned cells that have no record yet."""

    def __init__(self, rows: Iterable[dict[str, Any]] = (), pending: int = 0):
        super().__init__(rows)
        self.pending = pending


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
    (``finished_at``) per task, strategy, model and seed.

    :raises HarnessError: the directory does not exist, or holds no records.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise HarnessError(f"{root}: {'not a directory' if root.exists() else 'no such results directory'}")
    rows = _rows_from_plan(root) if (root / PLAN).is_file() else _newest_records(root)
    if not rows:
        waiting = f" ({rows.pending} planned cells have no record yet)" if rows.pending else ""
        raise HarnessError(f"{root}: no records found{waiting}; run `harness run SUITE --output {root}` first")
    rows.sort(key=lambda r: (str(r["model"]), str(r["task"]), str(r["strategy"]), int(r["seed"])))
    return rows


def _newest_records(root: Path) -> Rows:
    newest: dict[tuple[str, str, str, int], Record] = {}
    for record in ResultStore(root).records():
        identity = (record.task, record.strategy, record.model, record.seed)
        kept = newest.get(identity)
        if kept is None or (record.finished_at or "") > (kept.finished_at or ""):
            newest[identity] = record
    return Rows(r.to_json() for r in newest.values())


def _rows_from_plan(root: Path) -> Rows:
    from .plan import Cell

    path = root / PLAN
    try:
        planned = [(str(e["key"]), str(e["dir"]), Cell.from_json(e)) for e in json.loads(path.read_text("utf-8"))["cells"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HarnessError(f"{path}: not a plan written by `harness run` ({type(exc).__name__}: {exc})") from None
    rows = Rows()
    for key, dirname, cell in planned:
        record = _read_matching(root / "cells" / dirname / RECORD, key)
        if record is None and cell.skip_reason:
            record = Record(
                key=key, suite=cell.suite, cell_id=cell.cell_id, task=cell.task, strategy=cell.strategy,
                model=cell.model, seed=cell.seed, status="skipped", error=cell.skip_reason, config=cell.config(),
            )
        if record is None:
            rows.pending += 1
        else:
            rows.append(record.to_json())
    return rows


def _read_matching(path: Path, key: str) -> Record | None:
    try:
        record = read_record(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if record.key == key else None


# -- aggregation -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """One (model, task, strategy) over its seeds. Means are over ``ok`` seeds only.

    :param metric: the primary metric's name; ``mean``/``std``/``n`` describe it (``None``/``None``/0 without ok
        seeds). ``std`` is the sample standard deviation (n-1), 0 for one seed.
    :param memory_kind: ``"GPU"`` when every ok seed has a GPU peak allocated figure (then ``peak_memory_bytes`` is
        its mean), else ``"RSS"`` (the mean peak RSS); ``None`` without figures.
    """

    model: str
    task: str
    strategy: str
    metric: str | None
    mean: float | None
    std: float | None
    n: int
    failed: int
    skipped: int
    error: str | None
    skip_reason: str | None
    train_s: float | None
    peak_memory_bytes: float | None
    memory_kind: str | None
    trainable: int | None
    trainable_pct: float | None


def _mean(values: Iterable[Any]) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return statistics.fmean(numbers) if numbers else None


def summarize(rows: Sequence[Row]) -> list[Summary]:
    """Summaries per (model, task, strategy), in the order the groups first appear in ``rows``."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["task"], row["strategy"]), []).append(row)
    return [_summarize(key, members) for key, members in groups.items()]


def _summarize(key: tuple[str, str, str], rows: list[Row]) -> Summary:
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    skipped = [r for r in rows if r["status"] == "skipped"]
    metric = next((r["primary_metric"] for r in ok if r.get("primary_metric")), None)
    metric = metric or next((r["primary_metric"] for r in rows if r.get("primary_metric")), None)
    values = [float(r["metrics"][metric]) for r in ok if metric and _is_number((r.get("metrics") or {}).get(metric))]
    mean = statistics.fmean(values) if values else None
    std = (statistics.stdev(values) if len(values) > 1 else 0.0) if values else None
    memories = [r.get("memory") or {} for r in ok]
    gpu = [m.get("gpu_peak_allocated_bytes") for m in memories]
    if memories and all(v is not None for v in gpu):
        memory_kind, peak = "GPU", _mean(gpu)
    else:
        peak = _mean(m.get("peak_rss_bytes") for m in memories)
        memory_kind = "RSS" if peak is not None else None
    params = [r.get("params") or {} for r in ok]
    trainable = _mean(p.get("trainable") for p in params)
    return Summary(
        model=key[0], task=key[1], strategy=key[2], metric=metric, mean=mean, std=std, n=len(values),
        failed=len(failed), skipped=len(skipped),
        error=next((r.get("error") for r in failed if r.get("error")), None),
        skip_reason=next((r.get("error") for r in skipped if r.get("error")), None),
        train_s=_mean((r.get("timing") or {}).get("train_s") for r in ok),
        peak_memory_bytes=peak, memory_kind=memory_kind,
        trainable=round(trainable) if trainable is not None else None,
        trainable_pct=_mean(p.get("trainable_pct") for p in params),
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class ModelView:
    """The summaries of one model arranged for a pivot: rows are tasks, columns strategies (first-seen order)."""

    model: str
    tasks: tuple[str, ...]
    strategies: tuple[str, ...]
    #: task -> its primary metric's name (``None`` when no cell of the task reported one).
    metrics: Mapping[str, str | None]
    cells: Mapping[tuple[str, str], Summary]


def by_model(rows: Sequence[Row]) -> list[ModelView]:
    """One :class:`ModelView` per model, in the order models first appear in ``rows``."""
    views: dict[str, list[Summary]] = {}
    for summary in summarize(rows):
        views.setdefault(summary.model, []).append(summary)
    out = []
    for model, summaries in views.items():
        tasks = tuple(dict.fromkeys(s.task for s in summaries))
        metrics = {t: next((s.metric for s in summaries if s.task == t and s.metric), None) for t in tasks}
        out.append(
            ModelView(
                model=model, tasks=tasks, strategies=tuple(dict.fromkeys(s.strategy for s in summaries)),
                metrics=metrics, cells={(s.task, s.strategy): s for s in summaries},
            )
        )
    return out


# -- formatting --------------------------------------------------------------------------------------------------


def format_mean_std(mean: float, std: float) -> str:
    """``mean ± std``: the mean with 4 significant digits, the std to the same decimal place."""
    if not (math.isfinite(mean) and math.isfinite(std)):
        return f"{mean} ± {std}"
    decimals = 4 if mean == 0 else max(0, 3 - math.floor(math.log10(abs(mean))))
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def format_number(value: float | None) -> str:
    """4 significant digits without exponent notation; ``-`` for a missing value."""
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


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


def metric_cell(summary: Summary | None, notes: Footnotes) -> list[str]:
    """The lines of one comparison cell: ``mean ± std``, ``(n=k)``, ``+k failed``; or ``failed (k)``; ``skipped``.

    Reporters join the lines with a newline (terminal) or a space (markdown).
    """
    if summary is None:
        return ["-"]
    if summary.mean is not None:
        lines = [format_mean_std(summary.mean, summary.std or 0.0), f"(n={summary.n})"]
        if summary.failed:
            lines.append(f"+{summary.failed} failed {notes.mark('failed: ' + (summary.error or 'no error recorded'))}")
        return lines
    if summary.failed:
        return [f"failed ({summary.failed}) {notes.mark('failed: ' + (summary.error or 'no error recorded'))}"]
    if summary.skipped:
        return [f"skipped {notes.mark('skipped: ' + (summary.skip_reason or 'no reason recorded'))}"]
    return ["no value"]


def comparison_table(view: ModelView, notes: Footnotes, joiner: str) -> tuple[list[str], list[list[str]]]:
    """Headers and body of the pivot of the primary metric: tasks (with their metric) × strategies."""
    headers = ["task (metric)", *view.strategies]
    body = []
    for task in view.tasks:
        metric = view.metrics[task]
        label = f"{task}{joiner}({metric})" if metric else task
        body.append([label, *(joiner.join(metric_cell(view.cells.get((task, s)), notes)) for s in view.strategies)])
    return headers, body


COST_HEADERS = ["task", "strategy", "ok seeds", "train s", "peak MiB", "trainable params"]


def cost_table(view: ModelView) -> list[list[str]]:
    """Rows of the cost table (see :data:`COST_HEADERS`): mean train time and peak memory over ok seeds."""
    body = []
    for task in view.tasks:
        for strategy in view.strategies:
            s = view.cells.get((task, strategy))
            if s is None:
                continue
            memory = "-"
            if s.peak_memory_bytes is not None:
                memory = f"{s.peak_memory_bytes / 2**20:,.1f} {s.memory_kind}"
            trainable = "-" if s.trainable is None else f"{s.trainable:,}"
            if s.trainable is not None and s.trainable_pct is not None:
                trainable += f" ({s.trainable_pct:.3g}%)"
            total = s.n + s.failed + s.skipped
            body.append([task, strategy, f"{s.n}/{total}", format_number(s.train_s), memory, trainable])
    return body
