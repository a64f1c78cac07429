"""Expanding a suite into cells: task × strategy × model × seed, with exclusions and skip reasons."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from harness.api.budget import BUDGET_DEFAULTS, Budget
from harness.api.cells import Cell, trial_label
from harness.api.host import PluginHost
from harness.errors import HarnessError, Problem, ValidationError
from harness.planning.optuna_search import PENDING, optuna_settings
from harness.planning.search import SearchSpec, combine, split_values
from harness.planning.search import settings as search_settings
from harness.planning.suite import Declared, Suite
from harness.results.store import ResultStore


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
    trained = [(d.name, host.strategy(d.plugin), d.options) for d in suite.strategies
               if d.valid and host.strategy(d.plugin).trains]  # fmt: skip
    warnings = []
    for key in ("learning_rate",):
        defaults = {name: strategy.budget_defaults_for(options).get(key, BUDGET_DEFAULTS.get(key))
                    for name, strategy, options in trained}  # fmt: skip
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


def plan(suite: Suite, host: PluginHost, store: ResultStore | None = None) -> list[Cell]:
    """All cells of the suite, in a stable order (model, task, strategy, trial, seed); unsupported ones carry a
    reason. A (model, task, strategy) with a search (:mod:`harness.planning.search`) plans one cell per trial and
    seed instead of one per seed; an Optuna search plans the trials its records in ``store`` lead to
    (:mod:`harness.planning.optuna_search`; without a store, its first batch)."""
    cells: list[Cell] = []
    problems: dict[str, Problem] = {}
    for model in suite.models:
        family = suite.families[model.name]
        for task_decl in suite.tasks:
            task = host.task(task_decl.plugin)
            for strategy_decl in suite.strategies:
                strategy = host.strategy(strategy_decl.plugin)
                reason = None
                if family not in task.families:
                    reason = f"task {task.name!r} does not support {family} models (supports: {', '.join(sorted(task.families))})"
                else:
                    reason = strategy.supports(task, family)
                entry = _Entry(suite, host, model, task_decl, strategy_decl, family, reason, problems)
                spec = combine(model.search, task_decl.search, strategy_decl.search)
                if not (spec and strategy.trains and reason is None):
                    cells += entry.cells(None, spec, 0, 1)
                elif spec.adaptive:
                    settings = optuna_settings(spec, lambda s, e=entry, sp=spec: _outcome(e.cells(s, sp, 0, 1), store, sp))
                    seen: set[str] = set()
                    for index, setting in enumerate(settings):  # a setting asked twice runs once
                        if trial_label(setting) not in seen:
                            seen.add(trial_label(setting))
                            cells += entry.cells(setting, spec, index, spec.trials or len(settings))
                else:
                    settings = search_settings(spec)
                    for index, setting in enumerate(settings):
                        cells += entry.cells(setting, spec, index, len(settings))
    if problems:
        raise ValidationError(list(problems.values()))
    if not cells:
        raise HarnessError(f"{suite.path}: the suite expands to no cells (every combination is excluded)")
    return cells


def has_adaptive_search(suite: Suite) -> bool:
    """Whether a search of the suite plans its trials from earlier results (Optuna), so ``run`` plans again."""
    return any(
        combine(m.search, t.search, s.search).adaptive for m in suite.models for t in suite.tasks for s in suite.strategies
    )


class _Entry:
    """One (model, task, strategy) of a suite: its cells for one setting of its search (or for none)."""

    def __init__(self, suite: Suite, host: PluginHost, model: Declared, task: Declared, strategy: Declared,
                 family: str, reason: str | None, problems: dict[str, Problem]):  # fmt: skip
        self.suite, self.host, self.model, self.task, self.strategy = suite, host, model, task, strategy
        self.family, self.reason, self.problems = family, reason, problems
        plugin = host.strategy(strategy.plugin)
        self.budget = resolve_budget(suite, plugin.budget_defaults_for(strategy.options), model, task, strategy)

    def cells(self, setting: dict[str, Any] | None, spec: SearchSpec, index: int, trials: int) -> list[Cell]:
        suite, model, task_decl, strategy_decl = self.suite, self.model, self.task, self.strategy
        strategy = self.host.strategy(strategy_decl.plugin)
        parts = split_values(setting, spec) if setting is not None else {}
        budget = Budget.from_dict({**self.budget.to_dict(), **parts.get("budget", {})})
        if budget.batch_size % budget.grad_accum_steps and self.reason is None:
            where = f"{suite.path}: budget of {task_decl.name} × {strategy_decl.name} × {model.name}"
            where += f" (trial {trial_label(setting)})" if setting is not None else ""
            self.problems.setdefault(where, Problem(where, (
                f"batch_size {budget.batch_size} is not a multiple of grad_accum_steps "
                f"{budget.grad_accum_steps} (each optimizer step accumulates equal micro-batches)")))
        trial = None
        if setting is not None:
            trial = {
                "search": f"{model.name}/{task_decl.name}/{strategy_decl.name}", "index": index, "trials": trials,
                "sampler": spec.sampler, "metric": spec.metric, "values": setting,
            }
        model_options = {**model.options, **parts.get("models", {})}
        cells = []
        for suffix, options in strategy.variants({**strategy_decl.options, **parts.get("strategies", {})}):
            name = f"{strategy_decl.name}@{suffix}" if suffix else strategy_decl.name
            for seed in suite.seeds:
                if matches_any(suite.exclude, task_decl.name, (strategy_decl.name, name), model.name, seed):
                    continue
                cells.append(Cell(
                    suite=suite.name, task=task_decl.name, task_type=task_decl.plugin,
                    task_options={**task_decl.options, **parts.get("tasks", {})}, strategy=name,
                    strategy_type=strategy_decl.plugin, strategy_options=options, model=model.name,
                    model_source=model.plugin, model_options=model_options, model_family=self.family,
                    model_label=self.host.model_source(model.plugin).label(model_options), seed=seed, budget=budget,
                    trust_remote_code=suite.trust_remote_code, skip_reason=self.reason, trial=trial,
                ))  # fmt: skip
        return cells


def _outcome(cells: list[Cell], store: ResultStore | None, spec: SearchSpec) -> Any:
    """An Optuna trial's result from its cells' records: the mean validation metric of the seeds that ended ok,
    ``None`` when none did, :data:`PENDING` while a cell has no record (or no store was given)."""
    if store is None or not cells:
        return PENDING
    values = []
    for cell in cells:
        record = store.load(cell)
        if record is None:
            return PENDING
        metric = spec.metric or record.primary_metric
        value = record.validation_metrics.get(metric) if record.status == "ok" and metric else None
        if isinstance(value, (int, float)) and math.isfinite(value):
            values.append(float(value))
    return sum(values) / len(values) if values else None
