"""Expanding a suite into cells: task × strategy × model × seed, with exclusions and skip reasons."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from .budget import BUDGET_DEFAULTS, Budget
from .errors import HarnessError, Problem, ValidationError
from .host import PluginHost
from .suite import Declared, Suite

#: Characters of :attr:`Cell.cell_id` kept in a cell's folder name.
MAX_ID_IN_DIRNAME = 160


@dataclass(frozen=True)
class Cell:
    """One planned run: a task, a strategy, a model and a seed, with everything resolved.

    ``key`` hashes the full resolved configuration: changing any option changes the key, so only affected cells
    rerun; the harness version and plugin versions are recorded but not hashed.
    """

    suite: str
    task: str
    task_type: str
    task_options: Mapping[str, Any]
    strategy: str
    strategy_type: str
    strategy_options: Mapping[str, Any]
    model: str
    model_source: str
    model_options: Mapping[str, Any]
    model_family: str
    seed: int
    budget: Budget
    trust_remote_code: bool = False
    skip_reason: str | None = None
    #: The model's identity as its source tells it (a hub id, a folder name, a tiny config), for reports.
    model_label: str = ""

    @property
    def cell_id(self) -> str:
        """Readable identity, unique within a suite: ``task--strategy--model--seedN``."""
        return _safe(f"{self.task}--{self.strategy}--{self.model}--seed{self.seed}")

    def config(self) -> dict[str, Any]:
        """The resolved cell configuration (what the key hashes; the ``config`` of the report contract)."""
        return {
            "task": {"name": self.task, "type": self.task_type, "options": dict(self.task_options)},
            "strategy": {"name": self.strategy, "type": self.strategy_type, "options": dict(self.strategy_options)},
            "model": {
                "name": self.model,
                "source": self.model_source,
                "family": self.model_family,
                "label": self.model_label,
                "options": dict(self.model_options),
                "trust_remote_code": self.trust_remote_code,
            },
            "budget": self.budget.to_dict(),
            "seed": self.seed,
        }

    @property
    def key(self) -> str:
        """Hash of :meth:`config` without ``budget.timeout_s`` (a time limit changes no result)."""
        config = self.config()
        config["budget"].pop("timeout_s", None)
        blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def dirname(self) -> str:
        """The cell's folder name: its id and key, the id cut to :data:`MAX_ID_IN_DIRNAME` characters so that the
        name stays within filesystem limits (255 bytes) whatever the names in the suite; the key keeps it unique."""
        return f"{self.cell_id[:MAX_ID_IN_DIRNAME]}--{self.key[:8]}"

    def to_json(self) -> dict[str, Any]:
        return {"suite": self.suite, "skip_reason": self.skip_reason, **self.config()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cell:
        task, strategy, model = data["task"], data["strategy"], data["model"]
        return cls(
            suite=data["suite"],
            task=task["name"],
            task_type=task["type"],
            task_options=task["options"],
            strategy=strategy["name"],
            strategy_type=strategy["type"],
            strategy_options=strategy["options"],
            model=model["name"],
            model_source=model["source"],
            model_options=model["options"],
            model_family=model["family"],
            model_label=model.get("label", ""),
            trust_remote_code=model.get("trust_remote_code", False),
            seed=data["seed"],
            budget=Budget.from_dict(data["budget"]),
            skip_reason=data.get("skip_reason"),
        )


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text)


def _excluded(
    rules: tuple[Mapping[str, Any], ...], task: str, strategies: tuple[str, ...], model: str, seed: int
) -> bool:
    """Whether a rule excludes the cell; a strategy pattern matches the suite's name or a variant's (``few_shot``
    excludes every ``few_shot@k=N``, ``few_shot@k=8`` only that one)."""
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
                        if _excluded(suite.exclude, task_decl.name, (strategy_decl.name, name), model.name, seed):
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
