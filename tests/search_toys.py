"""A task whose validation metric peaks at a known learning rate, for the search tests.

The cell trains a tiny random BERT on :mod:`runtime_toys`' synthetic data for real, then scores each split with a
closed-form function of the cell's learning rate: validation peaks at ``VALIDATION_PEAK`` and, with ``poison =
true``, test peaks elsewhere (``TEST_PEAK``), so a selection that looked at test would pick another setting. The
predictions saved carry the score so that it is recomputable from them. Loaded in worker processes with
``HARNESS_EXTRA_PLUGINS=searchtoys=search_toys`` (``tests/`` on ``PYTHONPATH``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from runtime_toys import ToyRun

from harness.api.components import EvalResult, Task, TaskRun
from harness.api.hookspecs import hookimpl
from harness.api.options import Option

VALIDATION_PEAK = 3e-4
TEST_PEAK = 1e-3


def peaked(learning_rate: float, peak: float, seed: int) -> float:
    """1 at the peak, falling by 0.2 per factor of 10 away from it, plus a seed-dependent wobble below 0.01."""
    return 1.0 - 0.2 * abs(math.log10(learning_rate / peak)) + 0.001 * ((seed * 7) % 5)


class PeakRun(ToyRun):
    def __init__(self, learning_rate: float, seed: int, poison: bool):
        super().__init__(n_train=32, n_eval=8, seed=0)
        self.learning_rate, self.seed, self.poison = learning_rate, seed, poison

    def evaluate(self, model: Any, split: str, batch_size: int, device: str) -> EvalResult:
        result = super().evaluate(model, split, batch_size, device)  # a real pass over the split
        peak = TEST_PEAK if split == "test" and self.poison else VALIDATION_PEAK
        score = peaked(self.learning_rate, peak, self.seed)
        predictions = [{**p, "score": score} for p in result.predictions]
        return EvalResult({"score": score, "accuracy": result.metrics["accuracy"]}, predictions, result.samples,
                          result.tokens)  # fmt: skip


class PeakTask(Task):
    name = "toy-peak"
    description = "validation metric peaks at learning rate 3e-4 (test elsewhere with poison = true)"
    options = (Option("poison", "bool", False, "make test peak at 1e-3 instead"),)

    def setup(self, options: Mapping[str, Any], ctx: Any) -> TaskRun:
        run = PeakRun(ctx.cell.budget.learning_rate, ctx.cell.seed, options["poison"])
        run.primary_metric = "score"
        return run


@hookimpl
def harness_register_tasks(register):
    register(PeakTask())
