"""Validate-time reads of whole data files through the cells' own readers, remembered by file identity.

A task's cheap checks (headers, first records) cannot see a truncated line 3,000 or a byte that the declared encoding
cannot decode; the cells would then all fail at run time. :func:`check_by_reading` runs the reader the cells use
(one pass over each file) and turns its first :class:`~harness.errors.HarnessError` (file and line) into a problem.
A read that succeeded is remembered in the cache folder (:func:`cache_root`) under a hash of the reader's name,
the harness version, the task's options and each file's path, size and modification time (ns), so validating an
unchanged suite again reads nothing; what the read warned about (:meth:`CheckContext.warn`) is remembered with it.
Light: no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness import __version__
from harness.api.components import CheckContext
from harness.errors import HarnessError, Problem
from harness.results.records import write_json_atomic


def cache_root() -> Path:
    """The harness's cache folder: ``HARNESS_CACHE_DIR``, else ``$XDG_CACHE_HOME/harness``, else
    ``~/.cache/harness``."""
    if os.environ.get("HARNESS_CACHE_DIR"):
        return Path(os.environ["HARNESS_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "harness"


def _identity(files: Iterable[str | Path]) -> list[tuple[str, int, int]] | None:
    """``(absolute path, size, mtime_ns)`` per file, or ``None`` when one cannot be looked at (the read says why)."""
    found = []
    for name in sorted({str(f) for f in files}):
        try:
            info = os.stat(name)
        except OSError:
            return None
        found.append((os.path.abspath(name), info.st_size, info.st_mtime_ns))
    return found


def check_by_reading(
    reader: str,
    options: Mapping[str, Any],
    files: Sequence[str | Path],
    read: Callable[[], Sequence[str]],
    where: str,
    ctx: CheckContext,
) -> list[Problem]:
    """Read ``files`` with ``read`` (the cells' loader; it returns its warnings) unless an identical read succeeded
    before; return its error as a problem at ``where``, pass its warnings to ``ctx``.

    :param reader: names the loader in the cache key (``"classification"``): two tasks reading the same file
        differently are remembered apart.
    :param options: the task's resolved options (in the key: a changed column or encoding reads again).
    """
    identity = _identity(files)
    path = None
    if identity is not None:
        blob = json.dumps([reader, __version__, dict(options), identity], sort_keys=True, default=str)
        path = cache_root() / "validated" / f"{hashlib.sha256(blob.encode()).hexdigest()[:32]}.json"
        try:
            warnings = json.loads(path.read_text(encoding="utf-8"))["warnings"]
        except (OSError, ValueError, KeyError, TypeError):
            warnings = None
        if isinstance(warnings, list):
            for warning in warnings:
                ctx.warn(where, str(warning))
            return []
    try:
        warnings = list(read())
    except HarnessError as exc:
        return [Problem(where, str(exc))]
    for warning in warnings:
        ctx.warn(where, warning)
    if path is not None:
        try:
            write_json_atomic(path, {"reader": reader, "files": identity, "warnings": warnings})
        except OSError:
            pass  # a read-only cache only costs time
    return []


#: The ``metric_info`` entry (and task-run ``metadata`` key) that carries a cell's data warnings into its record.
DATA_WARNINGS = "data_warnings"


def note_data_warnings(run: Any, warnings: Sequence[str]) -> Any:
    """``run`` (a :class:`~harness.api.components.TaskRun`) with ``warnings`` in its ``metadata`` (so in the record's
    ``metric_info``, as :data:`DATA_WARNINGS`, joined by ``"; "``) when there are any."""
    if warnings:
        run.metadata = {**run.metadata, DATA_WARNINGS: "; ".join(warnings)}
    return run
