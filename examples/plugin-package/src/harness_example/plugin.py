"""The plugin module: what the entry point ``example = "harness_example.plugin"`` (group ``harness``) names.

The harness imports this module in its main process (``harness plugins``, ``harness validate``, planning) and again in
each cell's worker, then calls its hook implementations, which register the components (two tasks, one strategy).
Neither this module nor anything it imports at its top imports torch or transformers: the heavy code is imported
inside the components' worker-side methods (``RegressionTask.setup``, ``TaggingTask.setup``, ``BiasTuning.apply``).
"""

from __future__ import annotations

from typing import Any

from harness.api.hookspecs import hookimpl

from .bias_tuning import BiasTuning
from .regression import RegressionTask
from .tagging import TaggingTask

#: The hook API this plugin was written and tested against (``harness.api.hookspecs.API_VERSION``). A harness older than
#: this refuses the plugin with a clear message instead of failing somewhere inside a cell.
HARNESS_API_VERSION = 3


@hookimpl
def harness_register_tasks(register: Any) -> None:
    register(RegressionTask())
    register(TaggingTask())


@hookimpl
def harness_register_strategies(register: Any) -> None:
    register(BiasTuning())
