"""The plugin API: what a third-party task, strategy, model source, executor or reporter imports.

Everything here is light (no torch, no numpy): ``harness plugins`` and ``harness validate`` import it. Import the
names from this package (``from harness.api import Task, hookimpl``) or from their modules:

* :mod:`harness.api.hookspecs`: ``hookimpl`` and the hooks (reference: ``docs/hooks.md``);
* :mod:`harness.api.components`: the base classes and the contexts they are given (``docs/components.md``);
* :mod:`harness.api.options`: ``Option``, how components declare their suite-file options;
* :mod:`harness.api.budget`: the training budget every strategy shares;
* :mod:`harness.api.cells`: ``Cell``, one planned task × strategy × model × seed;
* :mod:`harness.api.itemstats`: ``ItemStats``, per-item statistics for significance tests (needs numpy; loaded
  when first used);
* :mod:`harness.api.paths`: suite paths (``pkg:`` included) and offline mode;
* :mod:`harness.api.host`: the plugin host (how plugins are found, loaded and checked).

What task plugins share beyond these (data files, text-to-text runs, prompts, generation, batching) is in
:mod:`harness.tasklib`; :mod:`harness.testing` is the pytest plugin for plugin authors' tests.
"""

from __future__ import annotations

from typing import Any

from harness.api.budget import Budget
from harness.api.cells import Cell
from harness.api.components import (
    FAMILIES,
    CellContext,
    CheckContext,
    Component,
    EvalResult,
    Executor,
    LoadedModel,
    ModelSize,
    ModelSource,
    Reporter,
    Strategy,
    Task,
    TaskRun,
)
from harness.api.hookspecs import API_VERSION, hookimpl
from harness.api.options import Option
from harness.errors import HarnessError, Problem, ValidationError

__all__ = [
    "API_VERSION", "FAMILIES", "Budget", "Cell", "CellContext", "CheckContext", "Component", "EvalResult", "Executor",
    "HarnessError", "ItemStats", "LoadedModel", "ModelSize", "ModelSource", "Option", "Problem", "Reporter",
    "Strategy", "Task", "TaskRun", "ValidationError", "hookimpl",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name == "ItemStats":  # numpy: only when a task builds statistics, never when plugins are listed
        from harness.api.itemstats import ItemStats

        return ItemStats
    raise AttributeError(f"module 'harness.api' has no attribute {name!r}")
