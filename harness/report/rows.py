"""Reading a results directory into report rows (:func:`load_rows`).

A *row* is :meth:`harness.results.records.Record.to_json` of one cell (``harness report --format json`` prints them
under ``records``). :mod:`harness.report.analysis` aggregates rows over seeds and tests the differences;
:mod:`harness.report.tables` turns its tables into the texts every reporter shares.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.api.cells import Cell
from harness.errors import HarnessError
from harness.results.records import InvalidRecordError, NewerSchemaError, Record, read_record
from harness.results.store import PLAN, RECORD

if TYPE_CHECKING:  # pragma: no cover
    pass

Row = Mapping[str, Any]
#: Which cells to report: ``keep(task, strategy, model, seed)``.
Keep = Callable[[str, str, str, int], bool]

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
        #: From ``plan.json``: the suite's name, description and profile (``[suite] profile``), when known.
        self.suite: dict[str, Any] = {}


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


def load_rows(results_dir: Path, keep: Keep | None = None) -> Rows:
    """The rows of a results directory, sorted by model, task, strategy, seed.

    ``keep(task, strategy, model, seed)``, when given, selects the cells to report (``--only`` / ``--exclude``:
    :meth:`harness.planning.select.Selection.keeps`); the others are neither rows nor pending.

    With ``plan.json`` (written by ``harness run``) exactly the cells of the current plan are reported: a cell's
    record counts only when its key matches the plan (records of an older configuration are ignored); a planned
    skipped cell without a record becomes a ``skipped`` row carrying its reason; other planned cells without a
    record are counted in :attr:`Rows.pending`. Without a plan, every record is reported, the newest
    (``finished_at``) per task, strategy, model, seed and search trial. A record file that cannot be read (truncated, not a
    record) counts as missing, with a line in :attr:`Rows.warnings` naming it and why.

    :raises HarnessError: the directory does not exist, holds no readable records (the message lists the unreadable
        ones), or a record was written by a newer harness.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise HarnessError(f"{root}: {'not a directory' if root.exists() else 'no such results directory'}")
    rows = _rows_from_plan(root, keep) if (root / PLAN).is_file() else _newest_records(root, keep)
    if not rows:
        waiting = f" ({rows.pending} planned cells have no record yet)" if rows.pending else ""
        raise HarnessError("\n".join([
            f"{root}: no records found{waiting}; run `harness run SUITE --output {root}` first", *rows.warnings,
        ]))
    rows.sort(key=lambda r: (str(r["model"]), str(r["task"]), str(r["strategy"]), int(r["seed"])))
    return rows


def _newest_records(root: Path, keep: Keep | None) -> Rows:
    newest: dict[tuple[str, str, str, int, str], tuple[Record, Path]] = {}
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
        if keep is not None and not keep(record.task, record.strategy, record.model, record.seed):
            continue
        trial = (record.config or {}).get("trial") or {}  # each trial of a search is a cell of its own
        identity = (record.task, record.strategy, record.model, record.seed,
                    json.dumps(trial.get("values"), sort_keys=True, default=str))  # fmt: skip
        kept = newest.get(identity)
        if kept is None or (record.finished_at or "") > (kept[0].finished_at or ""):
            newest[identity] = (record, path.parent)
    return Rows(
        (r.to_json() for r, _ in newest.values()), dirs={r.key: d for r, d in newest.values()}, warnings=warnings
    )


def _rows_from_plan(root: Path, keep: Keep | None) -> Rows:
    path = root / PLAN
    try:
        data = json.loads(path.read_text("utf-8"))
        planned = [(str(e["key"]), str(e["dir"]), Cell.from_json(e)) for e in data["cells"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HarnessError(f"{path}: not a plan written by `harness run` ({type(exc).__name__}: {exc})") from None
    rows = Rows()
    rows.suite = {"name": data.get("suite"), "description": data.get("description") or "", "profile": data.get("profile")}
    for key, dirname, cell in planned:
        if keep is not None and not keep(cell.task, cell.strategy, cell.model, cell.seed):
            continue
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


