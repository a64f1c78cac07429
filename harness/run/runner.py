"""Running a suite: validate, plan, resume, hand the cells to an executor, and summarise.

:func:`run_suite` is what ``harness run`` calls. Executors (plugins) receive a :class:`harness.run.suiterun.SuiteRun`
(re-exported here), which holds everything they need and the bookkeeping they share.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from harness.api.cells import Cell
from harness.api.host import PluginHost
from harness.planning.plan import budget_warnings, has_adaptive_search, plan
from harness.planning.select import Selection
from harness.planning.suite import load_suite
from harness.results.records import cell_record, write_json_atomic
from harness.results.store import CORRUPT, LOG, ResultStore, now
from harness.run.devices import Device, discover_devices
from harness.run.estimates import estimate_demands
from harness.run.progress import Progress, format_duration
from harness.run.suiterun import (  # noqa: F401  (re-exported: executors and tests import them from here)
    MAKESPAN,
    SPEC,
    SuiteRun,
    WorkerArgv,
    _env,
    default_worker_argv,
    describe_exit,
    last_log_line,
)

Echo = Callable[..., Any]


@dataclass(frozen=True)
class RunOptions:
    """The options of ``harness run`` (see its ``--help``)."""

    output: Path | None = None
    devices: str | None = None
    jobs: int = 1
    executor: str | None = None
    timeout_s: float | None = None
    rerun: bool = False
    dry_run: bool = False
    save_artifacts: bool = False
    #: ``--address``: the Ray cluster of the ``ray`` executor (the CLI exports it as ``RAY_ADDRESS``, which the
    #: executor reads); ``None``: a local Ray instance.
    address: str | None = None
    #: ``--only`` / ``--exclude``: the cells to run and print (:mod:`harness.planning.select`); ``plan.json`` keeps
    #: the whole plan.
    selection: Selection = field(default_factory=Selection)


class Terminated(KeyboardInterrupt):
    """The harness received SIGTERM; raised like Ctrl-C so executors stop their cells the same way."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _settle_skipped(store: ResultStore, cells: list[Cell], suite_sha256: str) -> None:
    for cell in cells:
        existing = store.load(cell)
        if existing is not None and existing.status == "skipped" and existing.error == cell.skip_reason:
            continue
        record = cell_record(cell, "skipped", cell.skip_reason, env=_env(suite_sha256=suite_sha256), finished_at=now())
        store.write(cell, record)


def _set_aside_unreadable(store: ResultStore, cells: list[Cell], dry_run: bool) -> list[str]:
    """Move each unreadable ``record.json`` (truncated, not a record) aside to ``record.json.corrupt`` so that its
    cell runs again (a dry run only says it would); one warning line per record, naming the file and why."""
    warnings = []
    for cell in cells:
        path = store.record_path(cell)
        again = "its skipped record is written again" if cell.skip_reason else "the cell runs again"
        if dry_run:
            why = store.unreadable(cell)
            if why is not None:
                warnings.append(f"{path}: unreadable record ({why}); a run moves it to {CORRUPT} and {again}")
            continue
        moved = store.set_aside(cell)
        if moved is not None:
            warnings.append(f"{path}: unreadable record ({moved[1]}); moved to {moved[0].name}, {again}")
    return warnings


def _print_plan(echo: Echo, to_run: list[Cell], done: list[Cell], skipped: list[Cell], store: ResultStore) -> None:
    echo(f"to run ({len(to_run)}):")
    for cell in to_run:
        before = store.load(cell)
        note = f"  (failed before: {before.error})" if before is not None and before.status == "failed" else ""
        echo(f"  {cell.cell_id}{note}")
    echo(f"already done ({len(done)}):")
    for cell in done:
        echo(f"  {cell.cell_id}")
    echo(f"skipped ({len(skipped)}):")
    for cell in skipped:
        echo(f"  {cell.cell_id}: {cell.skip_reason}")


def _devices_text(devices: list[Device], jobs: int, max_cells_per_gpu: int = 1) -> str:
    if devices and devices[0].kind == "cpu":
        return f"cpu ({devices[0].name}), {jobs} at a time"
    shared = f", up to {max_cells_per_gpu} cells per GPU where memory allows" if max_cells_per_gpu > 1 else ""
    return ", ".join(d.describe() for d in devices) + shared


def makespan_line(report: dict[str, Any], path: Path) -> str:
    """One line summing up a makespan report: wall time, busy share per device, the ideal Σ/G."""
    busy = ", ".join(
        f"{d['device']} {d['utilisation']:.0%}" for d in report["devices"] if d["utilisation"] is not None
    )
    efficiency = f" (efficiency {report['efficiency']:.0%})" if report["efficiency"] is not None else ""
    return (
        f"makespan {format_duration(report['wall_s'])}: {report['cells']} cell(s) on {report['lanes']} lane(s), "
        f"busy {busy or '-'}; ideal Σ/G {format_duration(report['ideal_s'])}{efficiency}; {path}"
    )


def _write_makespan(run: SuiteRun) -> tuple[dict[str, Any], Path] | None:
    """Write ``makespan.json`` in the results directory; ``None`` when it cannot be written."""
    report = run.makespan()
    path = run.store.root / MAKESPAN
    try:
        write_json_atomic(path, report)
    except OSError:
        return None
    return report, path


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While running, SIGTERM raises :class:`Terminated` so workers are stopped like on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_suite(
    suite_path: Path,
    options: RunOptions,
    echo: Echo = click.echo,
    host: PluginHost | None = None,
    worker_argv: WorkerArgv = default_worker_argv,
) -> int:
    """Run a suite; return the exit code (0: no cell failed, 1: some failed, 130/143: interrupted).

    :param host: the plugin host (default: built from entry points).
    :param worker_argv: the command run per cell (tests substitute fake workers).
    :raises HarnessError: bad suite, options, devices or output directory (the CLI prints one line, exit 2).
    """
    started_wall, started = time.time(), time.monotonic()
    run: SuiteRun | None = None
    rounds: list[SuiteRun] = []
    written: tuple[dict[str, Any], Path] | None = None
    try:
        host = host or PluginHost.load()
        for problem in host.problems:
            echo(f"warning: {problem}", err=True)
        suite = load_suite(suite_path, host)
        store = ResultStore(options.output or Path("results") / suite.name)
        cells = plan(suite, host, store)
        for warning in (*suite.warnings, *budget_warnings(suite, host)):
            echo(f"warning: {warning}", err=True)
        executor = host.executor(options.executor or suite.executor)
        devices = discover_devices(options.devices)
        if not options.dry_run:
            store.ensure_writable()
        adaptive = has_adaptive_search(suite)
        ran: set[str] = set()  # keys run by this invocation (rounds of an Optuna search never run a cell twice)
        done_before: int | None = None
        while True:
            selected = options.selection.cells(cells, str(suite.path))
            for warning in _set_aside_unreadable(store, selected, options.dry_run):
                echo(f"warning: {warning}", err=True)
            skipped = [c for c in selected if c.skip_reason]
            runnable = [c for c in selected if not c.skip_reason]
            to_run = [c for c in runnable if c.key not in ran and (options.rerun or not store.is_done(c))]
            running_keys = {c.key for c in to_run}
            done = [c for c in runnable if c.key not in running_keys and c.key not in ran]
            done_before = len(done) if done_before is None else done_before
            chosen = f", {len(selected)} selected ({options.selection.text})" if options.selection else ""
            head = (
                f"suite {suite.name}: {len(cells)} cells{chosen}: {len(to_run)} to run, {len(done)} already done, "
                f"{len(skipped)} skipped; {_devices_text(devices, options.jobs, suite.max_cells_per_gpu)} via "
                f"{executor.name}; records in {store.root}"
            )
            if options.dry_run:
                echo(f"dry run: {head}")
                _print_plan(echo, to_run, done, skipped, store)
                if adaptive:
                    echo("optuna searches plan their next trials from these results: the run plans again after them")
                return 0
            store.write_plan(cells, str(suite.path), suite.sha256, suite.description, suite.profile)
            _settle_skipped(store, skipped, suite.sha256)
            echo(head if not rounds else f"optuna searches, round {len(rounds) + 1}: {len(to_run)} new cells to run")
            gpus = any(d.kind == "cuda" for d in devices)
            demands = estimate_demands(to_run, host, store.records(), memory=gpus) if to_run else {}
            run = SuiteRun(
                cells=to_run,
                store=store,
                devices=devices,
                suite_path=suite.path,
                suite_sha256=suite.sha256,
                jobs=options.jobs,
                timeout_s=options.timeout_s,
                save_artifacts=options.save_artifacts,
                rerun=options.rerun,
                worker_argv=worker_argv,
                progress=Progress(len(to_run)),
                started_wall=started_wall,
                max_cells_per_gpu=suite.max_cells_per_gpu,
                demands=demands,
            )
            rounds.append(run)
            if to_run:
                run.clock_start = time.monotonic()
                with _sigterm_as_interrupt():
                    try:
                        executor.execute(run)
                    finally:
                        run.progress.close()
                        written = _write_makespan(run)
            ran |= running_keys
            if not (adaptive and to_run):
                break
            replanned = plan(suite, host, store)  # an Optuna search asks its next trials from the new records
            if [c.key for c in replanned] == [c.key for c in cells]:
                break
            cells = replanned
    except KeyboardInterrupt as exc:
        finished = sum(len(r.records) for r in rounds)
        stopped = len(run.in_flight) if run else 0
        echo(
            f"interrupted: {finished} cell(s) finished and recorded; {stopped} stopped in flight will run again "
            "next time",
            err=True,
        )
        return 128 + exc.signum if isinstance(exc, Terminated) else 130
    if written is not None:
        echo(makespan_line(*written))
    ok, failed = sum(r.ok for r in rounds), sum(r.failed for r in rounds)
    elsewhere = sum(len(r.elsewhere) for r in rounds)
    parts = [f"{ok} ok", f"{failed} failed", f"{len(skipped)} skipped", f"{done_before} already done"]
    if elsewhere:
        parts.append(f"{elsewhere} left to another run")
    echo(f"suite {suite.name}: {', '.join(parts)} in {format_duration(time.monotonic() - started)}; records in {store.root}")
    if failed:
        echo(f"failed cells keep their logs: {store.root / 'cells'}/<cell>/{LOG}; they run again on the next run")
    return 1 if failed else 0

