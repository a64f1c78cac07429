"""Module names of harness API 2 that moved into sub-packages in API 3, kept importable for one API version.

``import harness.components`` (or ``from harness.plan import Cell``) still works: it warns with a
:class:`DeprecationWarning` naming the new module and gives that module itself (one module object under both names,
so patching either patches both). The old names go away in API 4. ``harness.worker`` and ``harness.report`` became
packages under the same names: their old module-level names are served by the packages' ``__getattr__``
(:func:`moved_attribute`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

#: Old module (``harness.<name>``) -> its new place.
MOVED = {
    "options": "api.options",
    "paths": "api.paths",
    "budget": "api.budget",
    "components": "api.components",
    "hookspecs": "api.hookspecs",
    "host": "api.host",
    "inventory": "api.inventory",
    "suite": "planning.suite",
    "plan": "planning.plan",
    "records": "results.records",
    "store": "results.store",
    "runner": "run.runner",
    "suiterun": "run.suiterun",
    "scheduler": "run.scheduler",
    "estimates": "run.estimates",
    "devices": "run.devices",
    "progress": "run.progress",
    "cell": "worker.cell",
    "training": "worker.training",
    "oom": "worker.oom",
    "measure": "worker.measure",
    "compute": "worker.compute",
    "envinfo": "worker.envinfo",
    "text2text": "tasklib.text2text",
    "textpairs": "tasklib.textpairs",
    "incontext": "tasklib.incontext",
    "prompts": "tasklib.prompts",
    "generation": "tasklib.generation",
    "batching": "tasklib.batching",
    "datafiles": "tasklib.datafiles",
    "datahub": "tasklib.datahub",
    "datacheck": "tasklib.datacheck",
    "analysis": "report.analysis",
    "stats": "report.stats",
    "reporting": "report.reporting",
    "compare": "report.compare",
    "plots": "report.plots",
    "figures": "report.figures",
    "testing_data": "testing.data",
}
#: Names that left a module with it: old module -> name -> the module that has it now.
MOVED_NAMES = {
    "cell": {"save_artifact": "api.components"},
    "estimates": {"dtype_bytes": "api.components"},
    "worker": {"ProgressFile": "worker.main", "run_spec": "worker.main", "is_out_of_memory": "worker.oom",
               "describe_error": "worker.oom"},
    "report": {**dict.fromkeys(("Row", "Rows", "load_rows", "pending_count", "pending_note"), "report.rows"),
               **dict.fromkeys(("MEMORY_LEGEND", "COST_HEADERS", "CellText", "Footnotes", "cell_text", "cost_table",
                                "format_bytes", "format_count", "format_delta", "format_mean_std", "format_number",
                                "format_value", "omitted_notes", "table_cells", "table_title"), "report.tables")},
    "stats": {"ItemStats": "api.itemstats", "align": "api.itemstats", "pool": "api.itemstats"},
}  # fmt: skip


def _warn(old: str, new: str) -> None:
    warnings.warn(f"harness.{old} moved to harness.{new} (harness API 3); import it from there: the old name "
                  "goes away in API 4", DeprecationWarning, stacklevel=3)  # fmt: skip


class _Alias:
    """Loader giving the moved module under its old name."""

    def __init__(self, old: str):
        self.old = old

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        new = MOVED[self.old]
        _warn(self.old, new)
        target = importlib.import_module(f"harness.{new}")
        for name, home in MOVED_NAMES.get(self.old, {}).items():
            if not hasattr(target, name):
                setattr(target, name, getattr(importlib.import_module(f"harness.{home}"), name))
        sys.modules[module.__name__] = target  # the import statement returns sys.modules' entry


class MovedFinder:
    """A ``sys.meta_path`` finder for the old names (consulted last: only names nothing else finds)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        prefix, _, old = fullname.partition(".")
        if prefix != "harness" or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(old))


def moved_attribute(package: str, names: dict[str, str], name: str) -> Any:
    """A package ``__getattr__`` body: the old module-level ``name`` of ``harness.<package>`` from its new module
    (``names``: name -> ``harness``-relative module), with the deprecation warning."""
    if name not in names:
        raise AttributeError(f"module 'harness.{package}' has no attribute {name!r}")
    _warn(f"{package}.{name}", f"{names[name]}.{name}")
    return getattr(importlib.import_module(f"harness.{names[name]}"), name)


def install() -> None:
    if not any(isinstance(finder, MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedFinder())
