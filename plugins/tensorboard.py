"""The ``tensorboard`` reporter of ``harness report``: a TensorBoard log directory, one run per cell.

``harness report SUITE --format tensorboard --output DIR`` writes, for each cell, the run directory
``DIR/{task}/{strategy}/{model}/seed{N}`` (each part made path-safe: characters other than letters, digits and
``. _ = + - @`` become ``_``), so TensorBoard's run selector groups and filters runs by task, strategy and model
(``tensorboard --logdir DIR``; a regex such as ``sst2/lora/`` picks one task × strategy). Two rows that would share
a directory (two records of one cell) get the record key appended, ``seed{N}-{key[:8]}``.

Each run holds one event file, ``events.out.tfevents.harness``, replaced on every write (re-running the report does
not duplicate points; runs of cells no longer in the report are left as they are). Its contents:

ok cells (numbers are written only where the record has them; ``None`` is left out):

- ``metrics/<name>``: each numeric metric of the record (step 0); the primary metric's description says so;
- ``cost/train_s``, ``cost/eval_s``: wall seconds of training and of evaluation (step 0);
- ``cost/train_samples_per_s``: training throughput, samples per second (step 0);
- ``cost/peak_gpu_mib``: peak GPU memory allocated, MiB (2**20 bytes), when the cell ran on a GPU; otherwise
  ``cost/peak_rss_mib``: peak resident set size of the cell's process, MiB (step 0);
- ``params/trainable``, ``params/trainable_pct`` (percent of all parameters), ``params/stored_bytes`` (bytes the
  strategy stores per task) (step 0);
- ``train/loss`` and ``train/step_s`` (seconds per optimiser step) from the cell's ``steps.json``, at
  step = index + 1 (warm-up steps included; the record's ``timing.step_s_*`` statistics exclude them);
- ``validation/<primary metric>``: the primary metric on the validation split after each epoch, at step = epoch
  (1, 2, ...), when early stopping evaluated;
- a text summary ``cell`` (TensorBoard's Text tab): status, cell id, record key, primary metric and the cell's
  configuration as JSON.

failed cells: a run with the ``cell`` text summary only (status and error), no scalars. Skipped cells (the suite
rules them out, e.g. a task that does not support the model family) and pending cells get no run.

Scalars are written as 64-bit float tensors with the scalars plugin's metadata (what ``tf.summary.scalar`` writes,
in double precision so parameter counts stay exact); the wall time of every event is the cell's ``finished_at``.

Needs the ``tensorboard`` package (``pip install tuning-harness[tensorboard]``), neither TensorFlow nor torch: the
events are encoded with ``tensorboard.compat.proto`` and framed by ``tensorboard``'s ``RecordWriter`` into a plain
file (its ``EventFileWriter`` is not used: it creates files through ``tensorboard.compat.tf``, which imports
TensorFlow when it is installed). This module imports tensorboard only inside :meth:`TensorBoardReporter.write`,
and registers the reporter always: without tensorboard, :meth:`TensorBoardReporter.write` says what to install.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from harness.api.components import Reporter
from harness.api.hookspecs import hookimpl
from harness.errors import HarnessError

#: Name of the one event file in each run directory (TensorBoard reads files whose name contains ``tfevents``).
EVENT_FILE = "events.out.tfevents.harness"
#: Tag of the text summary each written run carries.
TEXT_TAG = "cell"
MIB = 2**20

#: (tag, record section, field, description) of the single-value scalars of an ok cell.
RECORD_SCALARS: tuple[tuple[str, str, str, str], ...] = (
    ("cost/train_s", "timing", "train_s", "training wall time, seconds"),
    ("cost/eval_s", "timing", "eval_s", "evaluation wall time (test split), seconds"),
    ("cost/train_samples_per_s", "timing", "train_samples_per_s", "training throughput, samples per second"),
    ("params/trainable", "params", "trainable", "trainable parameters"),
    ("params/trainable_pct", "params", "trainable_pct", "trainable parameters, percent of all parameters"),
    ("params/stored_bytes", "params", "stored_bytes", "bytes the strategy stores per task"),
)

#: One scalar point: (tag, step, value, description).
Point = tuple[str, int, float, str]


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a JSON number (not a bool), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def safe_part(text: Any) -> str:
    """One path-safe directory name: characters other than letters, digits and ``. _ = + - @`` become ``_``."""
    part = re.sub(r"[^A-Za-z0-9._=+@-]+", "_", str(text))
    return "_" if part.strip(".") == "" else part


def run_name(row: Mapping[str, Any]) -> str:
    """The run's directory relative to the output directory, ``task/strategy/model/seedN`` (``/``-separated)."""
    return "/".join(
        safe_part(part) for part in (row.get("task"), row.get("strategy"), row.get("model"), f"seed{row.get('seed')}")
    )


def _wall_time(row: Mapping[str, Any]) -> float:
    """The cell's ``finished_at`` (else ``started_at``) as POSIX seconds; 0 when neither parses."""
    for field in ("finished_at", "started_at"):
        value = row.get(field)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0


def read_steps(cell_dir: Path | None) -> Mapping[str, Any]:
    """The cell's ``steps.json`` as a mapping; empty when the cell has no folder or the file is absent.

    :raises HarnessError: the file exists but is not a JSON object.
    """
    if cell_dir is None:
        return {}
    path = Path(cell_dir) / "steps.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{path}: cannot read the per-step log ({exc})", exit_code=1) from None
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: the per-step log is not a JSON object", exit_code=1)
    return data


def cell_points(row: Mapping[str, Any], steps: Mapping[str, Any]) -> list[Point]:
    """The scalar points of an ok cell (see the module docstring), in tag order of first appearance."""
    points: list[Point] = []
    primary = row.get("primary_metric")
    for name, value in (row.get("metrics") or {}).items():
        number = _number(value)
        if number is not None:
            note = "primary metric of the task" if name == primary else "metric on the test split"
            points.append((f"metrics/{name}", 0, number, note))
    for tag, section, field, note in RECORD_SCALARS:
        number = _number((row.get(section) or {}).get(field))
        if number is not None:
            points.append((tag, 0, number, note))
    memory = row.get("memory") or {}
    gpu, rss = _number(memory.get("gpu_peak_allocated_bytes")), _number(memory.get("peak_rss_bytes"))
    if gpu is not None:
        points.append(("cost/peak_gpu_mib", 0, gpu / MIB, "peak GPU memory allocated, MiB"))
    elif rss is not None:
        points.append(("cost/peak_rss_mib", 0, rss / MIB, "peak resident set size of the cell's process, MiB"))
    for tag, key, note in (
        ("train/loss", "loss", "training loss per optimiser step"),
        ("train/step_s", "step_s", "seconds per optimiser step (warm-up steps included)"),
    ):
        series = steps.get(key)
        for index, value in enumerate(series if isinstance(series, list) else []):
            number = _number(value)
            if number is not None:
                points.append((tag, index + 1, number, note))
    validation = (row.get("training") or {}).get("validation") or []
    for epoch, value in enumerate(validation, start=1):
        number = _number(value)
        if number is not None and primary:
            points.append((f"validation/{primary}", epoch, number, "primary metric on the validation split, by epoch"))
    return points


def cell_text(row: Mapping[str, Any]) -> str:
    """The Markdown of the ``cell`` text summary: status, cell id, key, primary metric or error, configuration."""
    lines = [f"**{row.get('status')}** · cell `{row.get('cell_id', run_name(row))}` · key `{row.get('key')}`", ""]
    if row.get("primary_metric"):
        lines += [f"primary metric: `{row['primary_metric']}`", ""]
    if row.get("error"):
        lines += ["error:", "", "```", str(row["error"]), "```", ""]
    if row.get("config"):
        lines += ["configuration:", "", "```json", json.dumps(row["config"], indent=2, default=str), "```"]
    return "\n".join(lines).rstrip() + "\n"


class _EventFile:
    """Encodes events with tensorboard's protos into one file, written whole on :meth:`save` (lazy imports)."""

    def __init__(self, wall_time: float):
        from tensorboard.compat.proto import event_pb2

        self.wall_time = wall_time
        self.events = [event_pb2.Event(wall_time=wall_time, file_version="brain.Event:2")]
        self.described: set[str] = set()

    def scalar(self, tag: str, step: int, value: float, description: str) -> None:
        from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorboard.plugins.scalar import metadata

        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_DOUBLE, tensor_shape=tensor_shape_pb2.TensorShapeProto(), double_val=[value]
        )
        self._add(summary_pb2.Summary.Value(tag=tag, tensor=tensor), step, metadata, description)

    def text(self, tag: str, step: int, markdown: str) -> None:
        from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorboard.plugins.text import metadata

        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, tensor_shape=tensor_shape_pb2.TensorShapeProto(), string_val=[markdown.encode()]
        )
        self._add(summary_pb2.Summary.Value(tag=tag, tensor=tensor), step, metadata, "")

    def _add(self, value: Any, step: int, plugin_metadata: Any, description: str) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        if value.tag not in self.described:  # TensorBoard reads a tag's metadata from its first value
            value.metadata.CopyFrom(plugin_metadata.create_summary_metadata(display_name="", description=description))
            self.described.add(value.tag)
        summary = summary_pb2.Summary(value=[value])
        self.events.append(event_pb2.Event(wall_time=self.wall_time, step=step, summary=summary))

    def save(self, path: Path) -> None:
        """Write the events to ``path`` through a temporary file (a running TensorBoard never sees half a file)."""
        from tensorboard.summary.writer.record_writer import RecordWriter

        temporary = path.with_name(f".{path.name}.tmp")
        with open(temporary, "wb") as stream:
            writer = RecordWriter(stream)
            for event in self.events:
                writer.write(event.SerializeToString())
        os.replace(temporary, path)


class TensorBoardReporter(Reporter):
    name = "tensorboard"
    description = (
        "TensorBoard log directory (--output DIR): one run per cell, DIR/task/strategy/model/seedN, with metrics, "
        "cost, parameter counts and per-step training loss; needs `pip install tuning-harness[tensorboard]`"
    )
    output: ClassVar[str] = "directory"

    def render(self, report: Any) -> str:
        raise HarnessError("the tensorboard reporter writes a directory: use --output DIR")

    def write(self, report: Any, directory: Path) -> list[Path]:
        """Write one run directory per ok or failed cell of ``report`` under ``directory``; return the event files.

        :param report: a :class:`harness.report.analysis.Report` (``rows``: record dicts; ``cell_dir(row)``: the cell's
            folder or None).
        :raises HarnessError: the tensorboard package is not installed, a run directory cannot be written, or a
            cell's ``steps.json`` is unreadable.
        """
        if not available():
            raise HarnessError("the tensorboard reporter needs the tensorboard package: "
                               "pip install 'tuning-harness[tensorboard]'")  # fmt: skip
        rows = [row for row in report.rows if row.get("status") in ("ok", "failed")]
        names = [run_name(row) for row in rows]
        shared = {name for name, count in Counter(names).items() if count > 1}
        written: list[Path] = []
        for row, name in zip(rows, names, strict=True):
            if name in shared:
                name = f"{name}-{safe_part(str(row.get('key') or '')[:8])}"
            events = _EventFile(_wall_time(row))
            if row.get("status") == "ok":
                for tag, step, value, note in cell_points(row, read_steps(report.cell_dir(row))):
                    events.scalar(tag, step, value, note)
            events.text(TEXT_TAG, 0, cell_text(row))
            run_dir = Path(directory, *name.split("/"))
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                events.save(run_dir / EVENT_FILE)
            except OSError as exc:
                raise HarnessError(f"{run_dir}: cannot write the TensorBoard run ({exc.strerror or exc})", 1) from None
            written.append(run_dir / EVENT_FILE)
        return written


def available() -> bool:
    """Whether the tensorboard package is installed (found without importing it)."""
    return importlib.util.find_spec("tensorboard") is not None


@hookimpl
def harness_register_reporters(register: Callable[[Reporter], None]) -> None:
    register(TensorBoardReporter())  # without the tensorboard package it says so when used, like `bottleneck`
