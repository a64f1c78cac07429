"""Expanding a suite into cells: task × strategy × model × seed, with exclusions and skip reasons."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from harness.api.budget import BUDGET_DEFAULTS, Budget
from harness.api.cells import Cell
from harness.api.host import PluginHost
from harness.errors import HarnessError, Problem, ValidationError
from harness.planning.suite import Declared, Suite


def matches_any(
    rules: Sequence[Mapping[str, Any]], task: str, strategies: tuple[str, ...], model: str, seed: int
) -> bool:
    """Whether one of ``rules`` (``[[exclude]]`` tables, ``--only`` / ``--exclude`` rules) matches the cell: every key
    of a rule must match (a list: any of its values; names are globs); a strategy pattern matches the suite's name
    or a variant's (``few_shot`` matches every ``few_shot@k=N``, ``few_shot@k=8`` only that one)."""
    values = {"task": (task,), "strategy": strategies, "model": (model,)}
    for rule in rules:
        matched = True
        for key, pattern in rule.items():
            if key == "seed":
                seeds = pattern if isinstance(pattern, list) else [pattern]
                matched = matched and seed in seeds
            else:
                patterns = pattern if isinstance(pattern, list) else [pattern]
                matched = matched and any(fnmatchcase(v, p) for v in values[key] for p in patterns)
        if matched:
            return True
    return False


def resolve_budget(suite: Suite, strategy_defaults: Mapping[str, Any], *layers: Declared) -> Budget:
    """Layer budget values: defaults, the strategy plugin's defaults, the suite, then model, task, strategy."""
    merged: dict[str, Any] = dict(BUDGET_DEFAULTS)
    merged.update(strategy_defaults)
    merged.update(suite.budget)
    for layer in layers:
        merged.update(layer.budget)
    return Budget.from_dict(merged)


def budget_warnings(suite: Suite, host: PluginHost) -> list[str]:
    """A learning rate written for every strategy at once (``[budget]``, a model's or a task's budget) that replaces
    strategy defaults which differ between the suite's trained strategies: the rate that suits full fine-tuning
    leaves prompt tuning near chance, so such a value is usually a mistake. One line per place it is written."""
    trained = [(d.name, host.strategy(d.plugin)) for d in suite.strategies if d.valid and host.strategy(d.plugin).trains]
    warnings = []
    for key in ("learning_rate",):
        defaults = {name: strategy.budget_defaults.get(key, BUDGET_DEFAULTS.get(key)) for name, strategy in trained}
        if len(set(map(str, defaults.values()))) < 2:
            continue
        own = ", ".join(f"{name} {value}" for name, value in defaults.items())
        layers = [("[budget]", suite.budget)]
        layers += [(f"[models.{d.name}.budget]", d.budget) for d in suite.models]
        layers += [(f"[tasks.{d.name}.budget]", d.budget) for d in suite.tasks]
        for where, budget in layers:
            if key in budget:
                warnings.append(
                    f"{suite.path}: {where} {key} = {budget[key]} replaces the strategies' own defaults ({own}) "
                    f"for all of them; set it in [strategies.NAME.budget] to tune one strategy"
                )
    return warnings


def plan(suite: Suite, host: PluginHost) -> list[Cell]:
    """All cells of the suite, in a stable order (model, task, strategy, seed); unsupported ones carry a reason."""
    cells: list[Cell] = []
    problems: dict[str, Problem] = {}
    for model in suite.models:
        family = suite.families[model.name]
        label = host.model_source(model.plugin).label(model.options)
        for task_decl in suite.tasks:
            task = host.task(task_decl.plugin)
            for strategy_decl in suite.strategies:
                strategy = host.strategy(strategy_decl.plugin)
                reason = None
                if family not in task.families:
                    reason = f"task {task.name!r} does not support {family} models (supports: {', '.join(sorted(task.families))})"
                else:
                    reason = strategy.supports(task, family)
                budget = resolve_budget(suite, strategy.budget_defaults, model, task_decl, strategy_decl)
                if budget.batch_size % budget.grad_accum_steps and reason is None:
                    where = f"{suite.path}: budget of {task_decl.name} × {strategy_decl.name} × {model.name}"
                    problems.setdefault(where, Problem(where, (
                        f"batch_size {budget.batch_size} is not a multiple of grad_accum_steps "
                        f"{budget.grad_accum_steps} (each optimizer step accumulates equal micro-batches)")))
                for suffix, options in strategy.variants(strategy_decl.options):
                    name = f"{strategy_decl.name}@{suffix}" if suffix else strategy_decl.name
                    for seed in suite.seeds:
                        if matches_any(suite.exclude, task_decl.name, (strategy_decl.name, name), model.name, seed):
                            continue
                        cells.append(
                            Cell(
                                suite=suite.name,
                                task=task_decl.name,
                                task_type=task_decl.plugin,
                                task_options=dict(task_decl.options),
                                strategy=name,
                                strategy_type=strategy_decl.plugin,
                                strategy_options=options,
                                model=model.name,
                                model_source=model.plugin,
                                model_options=dict(model.options),
                                model_family=family,
                                model_label=label,
                                seed=seed,
                                budget=budget,
                                trust_remote_code=suite.trust_remote_code,
                                skip_reason=reason,
                            )
                        )
    if problems:
        raise ValidationError(list(problems.values()))
    if not cells:
        raise HarnessError(f"{suite.path}: the suite expands to no cells (every combination is excluded)")
    return cells
