"""The cell worker: ``python -m harness.worker SPEC_PATH`` runs one cell in this process and records it.

``SPEC_PATH`` is the JSON the executor wrote: ``{"cell", "attempt", "device", "out_dir", "save_artifacts",
"suite_path", "suite_sha256"}``. The worker rebuilds the plugin host from entry points, runs the cell, and writes
``<out_dir>/record.json`` atomically with ``env.attempt`` set to the spec's attempt id; ``<out_dir>/progress.json``
is updated at most about once a second (and at each phase's start and end). Any exception gives a ``failed`` record
(``error`` = ``"ExcType: message"``, traceback on stderr, which the executor appends to the cell log); CUDA running
out of memory gives ``error`` = ``"out of memory: ..."``. Exit status 0 when the cell is ok, 1 when it failed.
A Ctrl-C (``KeyboardInterrupt``) writes no record, so the cell counts as not run.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from harness.results.records import write_json_atomic
from harness.results.store import PROGRESS_FILE, RECORD
from harness.worker.oom import describe_error

PROGRESS_INTERVAL_S = 1.0


class ProgressFile:
    """A progress callback writing ``{"phase", "done", "total", "updated"}`` atomically, throttled."""

    def __init__(self, path: Path, interval_s: float = PROGRESS_INTERVAL_S):
        self.path = path
        self.interval_s = interval_s
        self._phase: str | None = None
        self._written = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.time()
        if phase == self._phase and done < total and now - self._written < self.interval_s:
            return
        self._phase, self._written = phase, now
        try:
            write_json_atomic(self.path, {"phase": phase, "done": done, "total": total, "updated": now})
        except OSError:  # progress is advisory; never fail a cell over it
            pass


def run_spec(spec: dict[str, Any]) -> int:
    """Run the cell of a spec, write its record, return the exit status."""
    from harness.api.cells import Cell
    from harness.worker.cell import CellState, run_cell

    cell = Cell.from_json(spec["cell"])
    out_dir = Path(spec["out_dir"])
    device = spec.get("device", "cpu")
    state = CellState(cell, spec["attempt"], device)
    progress = ProgressFile(out_dir / PROGRESS_FILE)
    try:
        from harness.api.host import PluginHost

        host = PluginHost.load()
        for problem in host.problems:
            print(f"harness worker: plugin problem: {problem}", file=sys.stderr)
        record = run_cell(
            cell,
            host,
            out_dir,
            device,
            spec["attempt"],
            save_artifacts=bool(spec.get("save_artifacts", False)),
            suite_sha256=spec.get("suite_sha256"),
            progress=progress,
            state=state,
        )
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a record
        traceback.print_exc(file=sys.stderr)
        if not state.env:
            try:
                from harness.worker.envinfo import collect

                state.env = collect(suite_sha256=spec.get("suite_sha256"), seed=cell.seed, device=device)
            except Exception:  # the record matters more than its environment
                state.env = {}
        record = state.record("failed", describe_error(exc))
    write_json_atomic(out_dir / RECORD, record.to_json())
    return 0 if record.status == "ok" else 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m harness.worker SPEC_PATH", file=sys.stderr)
        return 2
    try:
        spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"harness worker: cannot read spec {args[0]}: {exc}", file=sys.stderr)
        return 1
    try:
        return run_spec(spec)
    except KeyboardInterrupt:
        print("harness worker: interrupted; no record written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
