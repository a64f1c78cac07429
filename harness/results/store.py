"""The results directory: one folder per cell with its record, log and predictions; the plan; per-cell locks.

Layout::

    results/<suite>/plan.json                      the latest plan (cells, keys, skip reasons)
    results/<suite>/cells/<cell_id>--<key8>/
        record.json                                written atomically when the cell ends
        record.json.corrupt                        an unreadable record a run set aside (.2, .3, ... after it)
        cell.log                                   the cell process's stdout and stderr
        predictions.jsonl                          per-example predictions (from the task)
        steps.json                                 per-step times and losses
        spec.json                                  what the worker runs (the cell, its device, the attempt id)
        progress.json                              the worker's phase and step, read by the status line
        artifact/                                  the trained model, with --save-artifacts
        .lock                                      held while a run executes the cell

Two runs on one directory never run the same cell twice at once (the second sees the lock and leaves the cell to
the first), and never corrupt a record (atomic replace).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import HarnessError
from harness.results.records import InvalidRecordError, NewerSchemaError, Record, read_record, write_json_atomic

if TYPE_CHECKING:  # pragma: no cover (a cell is passed in; this layer does not build cells)
    from harness.api.cells import Cell

RECORD = "record.json"
#: What an unreadable ``record.json`` is renamed to by :meth:`ResultStore.set_aside` (``.2``, ``.3``... appended
#: when that name is taken, so earlier damaged files are kept too).
CORRUPT = RECORD + ".corrupt"
LOG = "cell.log"
PREDICTIONS = "predictions.jsonl"
#: The validation predictions of a search's trial (what selected it).
VALIDATION_PREDICTIONS = "predictions-validation.jsonl"
PLAN = "plan.json"
STEPS = "steps.json"
ARTIFACT = "artifact"
PROGRESS_FILE = "progress.json"
SPEC = "spec.json"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ResultStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def ensure_writable(self) -> None:
        """Fail early with one line when the output directory cannot be written."""
        try:
            (self.root / "cells").mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise HarnessError(f"{self.root}: output directory is not writable ({exc.strerror or exc})") from None

    def cell_dir(self, cell: Cell) -> Path:
        return self.root / "cells" / cell.dirname

    def record_path(self, cell: Cell) -> Path:
        return self.cell_dir(cell) / RECORD

    def load(self, cell: Cell) -> Record | None:
        """The cell's record, ``None`` when it has none (or an unreadable one, or one of another configuration).

        :raises HarnessError: the record was written by a newer harness (its schema is newer than this one reads).
        """
        path = self.record_path(cell)
        try:
            record = read_record(path)
        except NewerSchemaError as exc:
            raise HarnessError(f"{path}: {exc}") from None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return record if record.key == cell.key else None

    def unreadable(self, cell: Cell) -> str | None:
        """Why the cell's ``record.json`` is no readable record (``truncated JSON at line 3 column 5``), or ``None``
        when it is readable, absent, or written by a newer harness (which :meth:`load` refuses)."""
        try:
            read_record(self.record_path(cell))
        except InvalidRecordError as exc:
            return str(exc)
        except (OSError, NewerSchemaError):
            return None
        return None

    def set_aside(self, cell: Cell) -> tuple[Path, str] | None:
        """Rename the cell's unreadable ``record.json`` to :data:`CORRUPT` (the first free of ``record.json.corrupt``,
        ``record.json.corrupt.2``, ...) so that the cell runs again without losing the file; return the new path and
        why the record was unreadable. ``None`` when the record is readable or absent, or another run holds the
        cell's lock (that run writes a new record)."""
        if self.unreadable(cell) is None:
            return None
        with self.lock(cell) as held:
            why = self.unreadable(cell) if held else None  # again under the lock: another run may have written it
            if why is None:
                return None
            directory = self.cell_dir(cell)
            target, n = directory / CORRUPT, 1
            while target.exists():
                n += 1
                target = directory / f"{CORRUPT}.{n}"
            try:
                os.rename(self.record_path(cell), target)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise HarnessError(
                    f"{self.record_path(cell)}: unreadable record ({why}) that cannot be moved aside to {target.name} "
                    f"({exc.strerror or exc}); move or delete it"
                ) from None
            return target, why

    def is_done(self, cell: Cell) -> bool:
        """Done means finished with status ``ok``; failed cells are retried by the next run."""
        record = self.load(cell)
        return record is not None and record.status == "ok"

    def write(self, cell: Cell, record: Record) -> Path:
        path = self.record_path(cell)
        write_json_atomic(path, record.to_json())
        return path

    def write_plan(
        self, cells: list[Cell], suite_path: str, suite_sha256: str, description: str = "", profile: str | None = None
    ) -> None:
        write_json_atomic(
            self.root / PLAN,
            {
                "suite": cells[0].suite if cells else None,
                "suite_path": suite_path,
                "suite_sha256": suite_sha256,
                "description": description,
                "profile": profile,
                "written_at": now(),
                "cells": [{"key": c.key, "dir": c.dirname, **c.to_json()} for c in cells],
            },
        )

    @contextmanager
    def lock(self, cell: Cell) -> Iterator[bool]:
        """Try to take the cell's lock without waiting; yields whether this process holds it."""
        directory = self.cell_dir(cell)
        directory.mkdir(parents=True, exist_ok=True)
        fh = open(directory / ".lock", "a+")
        try:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        finally:
            fh.close()

    def records(self) -> list[Record]:
        """Every readable record under the directory."""
        out = []
        for path in sorted((self.root / "cells").glob(f"*/{RECORD}")):
            try:
                out.append(read_record(path))
            except (ValueError, KeyError, TypeError, OSError):
                continue
        return out
