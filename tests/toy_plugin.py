"""A toy third-party plugin used by the core tests: light components whose heavy methods are never called."""

from __future__ import annotations

from harness.api.components import ModelSource, Strategy, Task
from harness.api.hookspecs import hookimpl
from harness.api.options import REQUIRED, Option
from harness.errors import HarnessError


class ToyTask(Task):
    name = "toy-task"
    description = "a task for planning tests"
    families = frozenset({"encoder"})
    options = (
        Option("data", "path", REQUIRED, "a data file"),
        Option("size", "int", 10, "examples"),
        Option("labels", "list[str]", ["a", "b"], "label names"),
        Option("mode", "str", "fast", "mode", choices=("fast", "slow")),
    )

    def setup(self, options, ctx):  # pragma: no cover - never run in core tests
        raise AssertionError("heavy method called in a planning test")


class ToyStrategy(Strategy):
    name = "toy-strategy"
    description = "trains everything"
    options = (Option("rate", "float", 0.5, "a rate"),)
    budget_defaults = {"learning_rate": 1e-3}

    def apply(self, model, run, options, ctx):  # pragma: no cover
        raise AssertionError("heavy method called in a planning test")


class EncoderOnly(Strategy):
    name = "encoder-only"
    description = "supports encoders only"
    families = frozenset({"encoder"})

    def apply(self, model, run, options, ctx):  # pragma: no cover
        raise AssertionError


class ToySource(ModelSource):
    name = "toy-source"
    description = "a model of a declared family"
    options = (Option("family", "str", "encoder", "family", choices=("encoder", "decoder", "encoder-decoder")),)

    def family(self, options, ctx):
        if options["family"] == "encoder-decoder" and ctx.offline is None:  # pragma: no cover
            raise HarnessError("unreachable")
        return options["family"]

    def open(self, options, ctx):  # pragma: no cover
        raise AssertionError


@hookimpl
def harness_register_tasks(register):
    register(ToyTask())


@hookimpl
def harness_register_strategies(register):
    register(ToyStrategy())
    register(EncoderOnly())


@hookimpl
def harness_register_model_sources(register):
    register(ToySource())
