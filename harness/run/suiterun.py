"""What an executor gets for a suite run: :class:`SuiteRun` and the helpers it shares with executors.

:class:`SuiteRun` holds everything an executor needs and the bookkeeping executors share: claiming a cell (its
lock), writing the worker's spec, recording how the worker ended (a failed record when it left none), each cell's
memory and duration estimate (:mod:`harness.run.estimates`), the busy intervals of the makespan report, and the
progress display. :func:`harness.run.runner.run_suite` builds it; ``harness.run.runner`` re-exports these names.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import __version__
from harness.api.cells import Cell
from harness.results.records import Record, Timing, cell_record, write_json_atomic
from harness.results.store import LOG, PROGRESS_FILE, SPEC, ResultStore, now
from harness.run.devices import Device, cpu_device
from harness.run.estimates import Demand
from harness.run.progress import Progress
from harness.run.scheduler import Interval, makespan_report

MAKESPAN = "makespan.json"
WorkerArgv = Callable[[Path], list[str]]


def default_worker_argv(spec_path: Path) -> list[str]:
    """The command that runs one cell: ``python -m harness.worker SPEC``."""
    return [sys.executable, "-m", "harness.worker", str(spec_path)]


def describe_exit(returncode: int | None, timeout_s: float | None = None) -> str:
    """Why a worker that left no record ended: a timeout, a signal (``SIGSEGV (-11)``) or an exit code."""
    if timeout_s is not None:
        return f"timed out after {timeout_s:g} s"
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = "; the kernel's out-of-memory killer sends it" if -returncode == signal.SIGKILL else ""
        return f"killed by signal {name} ({returncode}{hint})"
    if returncode:
        return f"worker exited with code {returncode} without writing a record"
    return "worker exited without writing a record"


def last_log_line(path: Path, offset: int = 0) -> str | None:
    """The last non-empty line written to ``path`` after byte ``offset`` (reads at most the last 64 KiB)."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(offset, size - 65536))
            tail = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else None


def _env(**extra: Any) -> dict[str, Any]:
    return {"harness": __version__, "python": platform.python_version(), "hostname": platform.node(), **extra}


@dataclass
class _Attempt:
    attempt: str
    device: Device
    started_at: str
    started: float
    log_offset: int
    cell_id: str = ""


@dataclass
class SuiteRun:
    """What an executor needs to run a suite's cells, and the bookkeeping every executor shares.

    An executor, for each cell: :meth:`claim` it (skip when ``None``), :meth:`write_spec`, start
    ``worker_argv(spec_path)`` in its own process pinned to the device, call :meth:`tick` while waiting, then
    :meth:`finished` with how the process ended, and close the claim. On ``KeyboardInterrupt`` it stops its
    workers, closes the claims and re-raises.

    Placement: :meth:`demand` is a cell's expected GPU memory and duration; ``max_cells_per_gpu`` how many cells a
    GPU may run at once (the ``local`` executor packs them with :class:`harness.run.scheduler.Planner`). Each cell's
    time on its device, from :meth:`write_spec` (or :meth:`started`) to :meth:`finished`, goes into the makespan
    report (:meth:`makespan`).
    """

    cells: list[Cell]
    store: ResultStore
    devices: list[Device]
    suite_path: Path
    suite_sha256: str
    jobs: int = 1
    timeout_s: float | None = None
    save_artifacts: bool = False
    rerun: bool = False
    worker_argv: WorkerArgv = default_worker_argv
    progress: Progress = field(default_factory=lambda: Progress(0))
    #: Cells a GPU may run at once (``[suite] max_cells_per_gpu``).
    max_cells_per_gpu: int = 1
    #: The makespan report's ``G`` when the executor knows it (a cluster's concurrent cells); else the GPUs, or
    #: ``--jobs`` on the CPU.
    lanes: int | None = None
    #: Expected GPU memory and duration per cell key (:func:`harness.run.scheduler.estimate_demands`).
    demands: dict[str, Demand] = field(default_factory=dict)
    #: ``time.monotonic()`` when the cells began (the makespan report's zero).
    clock_start: float = field(default_factory=time.monotonic)
    #: Each finished cell's time on its device, in seconds since ``clock_start``.
    intervals: list[Interval] = field(default_factory=list)
    #: Wall-clock time (``time.time()``) the run began; records written after it were written by this run or a
    #: concurrent one, so the cell is not run again.
    started_wall: float = field(default_factory=time.time)
    records: list[Record] = field(default_factory=list)
    elsewhere: list[Cell] = field(default_factory=list)
    _attempts: dict[str, _Attempt] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return sum(1 for r in self.records if r.status == "ok")

    @property
    def failed(self) -> int:
        return sum(1 for r in self.records if r.status != "ok")

    @property
    def in_flight(self) -> list[str]:
        """Cell ids started but not finished (after an interrupt: the cells that were stopped)."""
        return list(self._attempts)

    def demand(self, cell: Cell) -> Demand:
        """The cell's expected GPU memory and duration (unknown when not estimated)."""
        return self.demands.get(cell.key, Demand())

    def timeout_for(self, cell: Cell) -> float | None:
        """The cell's wall-clock limit: ``--timeout``, else its budget's ``timeout_s``."""
        return self.timeout_s or cell.budget.timeout_s

    def log_path(self, cell: Cell) -> Path:
        return self.store.cell_dir(cell) / LOG

    def claim(self, cell: Cell) -> contextlib.ExitStack | None:
        """Take the cell's lock, or return ``None`` (and say why) when another run holds it or has just finished
        it. Close the returned stack when the cell ends."""
        stack = contextlib.ExitStack()
        reason = None
        if not stack.enter_context(self.store.lock(cell)):
            reason = "running elsewhere (another run holds its lock)"
        elif self._finished_by_another_run(cell):
            reason = "finished by another run meanwhile"
        if reason is None:
            return stack
        stack.close()
        self.elsewhere.append(cell)
        self.progress.total -= 1
        self.progress.note(f"skip   {cell.cell_id}: {reason}")
        return None

    def _finished_by_another_run(self, cell: Cell) -> bool:
        record = self.store.load(cell)
        if record is None:
            return False
        if not self.rerun and record.status == "ok":
            return True
        try:
            return self.store.record_path(cell).stat().st_mtime >= self.started_wall
        except OSError:
            return False

    def write_spec(self, cell: Cell, device: Device) -> tuple[Path, str]:
        """Write ``<cell_dir>/spec.json`` for a fresh attempt on ``device``; return its path and the attempt id.

        Also marks the attempt in the cell's log and shows the cell as running."""
        directory = self.store.cell_dir(cell).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        (directory / PROGRESS_FILE).unlink(missing_ok=True)
        attempt = uuid.uuid4().hex
        spec_path = directory / SPEC
        write_json_atomic(
            spec_path,
            {
                "cell": cell.to_json(),
                "attempt": attempt,
                "device": device.kind,
                "out_dir": str(directory),
                "save_artifacts": self.save_artifacts,
                "suite_path": str(self.suite_path.resolve()),
                "suite_sha256": self.suite_sha256,
            },
        )
        started_at = now()
        with open(directory / LOG, "a", encoding="utf-8") as log:
            log.write(f"=== harness: attempt {attempt} on {device.label} at {started_at} ===\n")
            offset = log.tell()
        self._attempts[cell.key] = _Attempt(attempt, device, started_at, time.monotonic(), offset, cell.cell_id)
        self.progress.cell_started(cell.cell_id, device.label, directory)
        return spec_path, attempt

    def started(self, cell: Cell, device: Device | None = None) -> None:
        """Optional: the cell's worker began running now, on ``device`` when given. An executor whose cells may wait
        in a queue after :meth:`write_spec` calls it, so the makespan report counts only the time they ran (and
        the cell's total time in a failed record starts here)."""
        state = self._attempts[cell.key]
        state.started = time.monotonic()
        if device is not None:
            state.device = device

    def tick(self) -> None:
        """Call while waiting on workers: redraws the progress display (at most about once a second)."""
        self.progress.refresh()

    def failed_record(
        self, cell: Cell, error: str, started_at: str | None, attempt: str | None = None, device: Device | None = None,
        total_s: float | None = None,
    ) -> Record:
        """The record of a cell whose worker died or never started."""
        env = _env(suite_sha256=self.suite_sha256, attempt=attempt)
        if device is not None:
            env.update(device=device.kind, device_name=device.name, cuda_visible_devices=device.cuda_visible_devices)
        return cell_record(
            cell, "failed", error, env=env, started_at=started_at, finished_at=now(), log=LOG,
            timing=Timing(total_s=total_s),
        )

    def finished(self, cell: Cell, error: str | None = None, ran: tuple[str, float, float] | None = None) -> Record:
        """The cell's worker ended. Use the record it wrote for this attempt; otherwise write a failed one whose
        error is ``error`` (how the process ended, see :func:`describe_exit`) plus the log's last line. Updates the
        display and the counts, and returns the record. ``ran``: (lane, wall-clock start, wall-clock end) when the
        executor knows better than the claim-to-finish span where and when the worker ran (a cluster's node and GPU,
        after time queued); the makespan report uses it."""
        state = self._attempts.pop(cell.key)
        ended = time.monotonic()
        record = self.store.load(cell)
        if record is None or record.env.get("attempt") != state.attempt:
            message = error or describe_exit(None)
            written = _read_raw(self.store.record_path(cell))
            if written.get("env", {}).get("attempt") == state.attempt and written.get("key") != cell.key:
                message = (
                    f"the worker recorded key {written.get('key')!r}, not {cell.key!r}: the cell's configuration "
                    "hashed differently in the worker (was harness changed or reinstalled during the run?)"
                )
            line = last_log_line(self.log_path(cell), state.log_offset)
            if line:
                message = f"{message}; last log line: {line}"
            record = self.failed_record(
                cell, message, state.started_at, state.attempt, state.device, time.monotonic() - state.started
            )
            self.store.write(cell, record)
        self.records.append(record)
        lane, start, end = state.device.label, state.started - self.clock_start, ended - self.clock_start
        if ran is not None:  # wall-clock times of the executor's report, on this run's monotonic scale
            shift = (time.monotonic() - self.clock_start) - time.time()
            lane, start, end = ran[0], ran[1] + shift, ran[2] + shift
        self.intervals.append(Interval(cell.cell_id, lane, start, end, record.status))
        self.progress.cell_finished(record)
        return record

    def makespan(self) -> dict[str, Any]:
        """The makespan report until now (``makespan.json``): :func:`harness.run.scheduler.makespan_report` over the
        finished cells and those still in flight (status ``stopped``), with the devices' names and memory."""
        end = time.monotonic()
        intervals = list(self.intervals) + [
            Interval(s.cell_id, s.device.label, s.started - self.clock_start, end - self.clock_start, "stopped")
            for s in self._attempts.values()
        ]
        gpus = [d for d in self.devices if d.kind == "cuda"]
        devices = gpus or [next((d for d in self.devices if d.kind == "cpu"), None) or cpu_device()]
        used = {i.device for i in intervals}
        if used and not used & {d.label for d in devices}:  # an executor elsewhere (Ray nodes): its devices only
            devices = []
        report = makespan_report(intervals, [d.label for d in devices], end - self.clock_start,
                                 lanes=self.lanes or (None if gpus and devices else max(1, self.jobs)))
        described = {d.label: {"name": d.name, "memory_bytes": d.memory_bytes} for d in devices}
        for entry in report["devices"]:
            entry.update(described.get(entry["device"], {}))
        expected = {c.cell_id: self.demand(c) for c in self.cells}
        for entry in report["intervals"]:
            demand = expected.get(entry["cell"], Demand())
            entry.update(memory_estimate_bytes=demand.memory_bytes, memory_basis=demand.basis,
                         expected_s=demand.duration_s)
        suite = self.cells[0].suite if self.cells else None
        return {
            "suite": suite, "suite_sha256": self.suite_sha256, "written_at": now(),
            "max_cells_per_gpu": self.max_cells_per_gpu, **report,
        }


def _read_raw(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# -- run_suite ---------------------------------------------------------------------------------------------
