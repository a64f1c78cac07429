"""The progress display of a run: one permanent line per finished cell, and on a terminal a live status line.

On a TTY the status line (done/failed/total, elapsed, a rough ETA, each running cell with its phase and step count
from ``<cell_dir>/progress.json``) is redrawn in place at most about once a second; finished cells are printed
above it. Elsewhere (logs, CI) a line is printed when a cell starts and one when it ends. Plain ANSI, no dependency.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from harness.results.records import Record
from harness.results.store import PROGRESS_FILE

REDRAW_EVERY_S = 1.0
ERROR_WIDTH = 240
_CLEAR_LINE = "\r\x1b[2K"


def format_duration(seconds: float) -> str:
    """``75`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def read_cell_progress(cell_dir: Path) -> dict | None:
    """The worker's latest ``{"phase", "done", "total", "updated"}``, or ``None`` when absent or unreadable."""
    try:
        with open(cell_dir / PROGRESS_FILE, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def outcome(record: Record) -> str:
    """The primary metric (``accuracy=0.8123``) of an ok record, or the error of a failed one."""
    if record.status != "ok":
        lines = (record.error or "").strip().splitlines()
        text = lines[0] if lines else ""
        return text if len(text) <= ERROR_WIDTH else text[: ERROR_WIDTH - 1] + "…"
    name = record.primary_metric
    if name and name in record.metrics:
        value = record.metrics[name]
        return f"{name}={value:.4f}" if isinstance(value, float) else f"{name}={value}"
    return ""


@dataclass
class _Running:
    cell_id: str
    where: str
    cell_dir: Path
    started: float


class Progress:
    """Shows a run's progress on ``stream``.

    :param total: cells this run will execute.
    :param tty: force terminal mode on or off (default: ``stream.isatty()``).
    :param clock: monotonic seconds (tests inject one).
    """

    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.clock = clock
        self.started = clock()
        self.ok = 0
        self.failed = 0
        self.running: dict[str, _Running] = {}
        self._status_shown = False
        self._last_draw = float("-inf")

    @property
    def finished(self) -> int:
        return self.ok + self.failed

    # -- events --------------------------------------------------------------------------------------------
    def cell_started(self, cell_id: str, where: str, cell_dir: Path) -> None:
        """A cell began on ``where`` (e.g. ``cuda:0``); its worker reports progress in ``cell_dir``."""
        self.running[cell_id] = _Running(cell_id, where, cell_dir, self.clock())
        if self.tty:
            self.refresh(force=True)
        else:
            self._print(f"start  {cell_id} on {where}")

    def cell_finished(self, record: Record) -> None:
        """A cell ended; print its permanent line."""
        running = self.running.pop(record.cell_id, None)
        seconds = self.clock() - running.started if running else (record.timing.total_s or 0.0)
        if record.status == "ok":
            self.ok += 1
        else:
            self.failed += 1
        mark = "ok" if record.status == "ok" else record.status.upper()
        detail = outcome(record)
        line = f"[{self.finished}/{self.total}] {mark:<6} {record.cell_id}  {seconds:.1f}s"
        self._print(f"{line}  {detail}" if detail else line)

    def note(self, text: str) -> None:
        """Print a permanent line (e.g. a cell left to another run)."""
        self._print(text)

    # -- drawing -------------------------------------------------------------------------------------------
    def status_line(self) -> str:
        """The live line: counts, elapsed, ETA, and each running cell's phase and steps."""
        elapsed = self.clock() - self.started
        eta = "?"
        if self.finished:
            eta = "~" + format_duration(elapsed / self.finished * (self.total - self.finished))
        parts = [f"{self.finished}/{self.total} done, {self.failed} failed, {format_duration(elapsed)} elapsed, ETA {eta}"]
        for run in self.running.values():
            state = read_cell_progress(run.cell_dir) or {}
            phase = state.get("phase", "starting")
            steps = f" {state['done']}/{state['total']}" if state.get("total") else ""
            parts.append(f"{run.cell_id} [{run.where}] {phase}{steps}")
        return " | ".join(parts)

    def refresh(self, force: bool = False) -> None:
        """Redraw the status line on a terminal, at most about once a second unless ``force``."""
        if not self.tty:
            return
        now = self.clock()
        if not force and now - self._last_draw < REDRAW_EVERY_S:
            return
        self._last_draw = now
        width = shutil.get_terminal_size((120, 24)).columns - 1
        line = self.status_line()
        if len(line) > width:
            line = line[: max(0, width - 1)] + "…"
        self.stream.write(_CLEAR_LINE + line)
        self.stream.flush()
        self._status_shown = True

    def close(self) -> None:
        """Remove the status line (call before printing a summary)."""
        if self.tty and self._status_shown:
            self.stream.write(_CLEAR_LINE)
            self.stream.flush()
            self._status_shown = False

    def _print(self, text: str) -> None:
        if self.tty and self._status_shown:
            self.stream.write(_CLEAR_LINE)
            self._status_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()
        if self.tty and self.running:
            self.refresh(force=True)
