"""Hyperparameter searches: ``[strategies.S.search]`` (and ``[tasks.T.search]``, ``[models.M.search]``) tables.

A search table gives some budget keys or options a list of values or a range instead of one value::

    [strategies.lora.search]
    learning_rate = [1e-4, 3e-4, 1e-3]           # a list: each value is tried
    r = [4, 8, 16]                               # an option of the strategy (also written lora.r)
    weight_decay = {low = 0.0, high = 0.1}       # a range: drawn uniformly (random search only)
    warmup_ratio = {low = 0.01, high = 0.1, log = true}   # drawn log-uniformly
    trials = 8                                   # random search: 8 settings; without it every combination (grid)
    seed = 0                                     # seeds the random draws (default 0)
    metric = "macro_f1"                          # the validation metric that selects (default: the task's primary)

Each setting is a *trial*: for every seed of the suite, one cell with the setting applied to its budget and options,
its own process, record and folder (``--learning_rate=0.0003+r=8`` after the usual cell id), resumable like any
cell. A trial's cell scores the validation split as well as test; the report selects, per (model, task, strategy),
the setting whose validation metric, averaged over the seeds that finished, is highest, and shows that setting's test
results (:mod:`harness.report.search`). Test results never take part in the choice.

Layers. The search tables of a cell's model, task and strategy combine like budgets: their keys add up and, for the
same key, the strategy's list replaces the task's, which replaces the model's; ``trials``, ``seed`` and ``metric``
come from the most specific table that sets them. A task's or model's search applies to the strategies that train
(zero- and few-shot cells run once, as written); a strategy's search on a strategy that trains nothing is an error.

Random search draws each key independently: a list uniformly, a range uniformly or (``log = true``) log-uniformly;
drawn floats are rounded to 3 significant digits (so they read well in tables and cell ids) and drawn integers to
whole numbers. Settings drawn twice are drawn again; a random search asking for more trials than its lists allow
(when it has no range) is an error. The draws depend only on ``seed`` and the table, so a re-run plans the same
trials and recomputes nothing.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.api.budget import BUDGET_OPTIONS
from harness.api.components import CheckContext
from harness.api.options import Option, check_options, did_you_mean
from harness.errors import Problem

#: Keys of a search table that configure the search rather than name a searched key.
SETTINGS = ("trials", "seed", "metric", "sampler", "batch")
#: Samplers: every combination, seeded independent draws, or Optuna's TPE on the trials' validation results.
SAMPLERS = ("grid", "random", "optuna")
#: Grids larger than this are refused (a typo in a list should not plan ten thousand cells).
MAX_TRIALS = 1000
#: Attempts at drawing a setting not drawn before, per trial, before a random search gives up.
_MAX_REDRAWS = 100


@dataclass(frozen=True)
class Dimension:
    """One searched key: its name as written in trial values, where the value goes, and its values or range."""

    key: str
    #: ``budget``, or ``options`` (of the component whose table declares it: strategy, task or model).
    target: str
    #: ``strategies`` / ``tasks`` / ``models``: the layer that declared it.
    layer: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    #: ``int`` or ``float`` for ranges.
    kind: str = "float"

    @property
    def is_range(self) -> bool:
        return self.low is not None


@dataclass(frozen=True)
class SearchSpec:
    """A validated search table (or the combination of a cell's model, task and strategy tables)."""

    dimensions: tuple[Dimension, ...] = ()
    trials: int | None = None
    #: Seeds the random draws; ``None`` (unset) draws as 0 does.
    seed: int | None = None
    metric: str | None = None
    #: ``sampler`` as written (``None``: grid without ``trials``, random with them).
    sampler_name: str | None = None
    #: Optuna: trials asked together before their results are told (default 1: one at a time).
    batch: int | None = None

    @property
    def sampler(self) -> str:
        if self.sampler_name is not None:
            return self.sampler_name
        return "grid" if self.trials is None else "random"

    @property
    def adaptive(self) -> bool:
        """Whether later trials depend on earlier results (Optuna): planned a batch at a time."""
        return self.sampler == "optuna"

    def __bool__(self) -> bool:
        return bool(self.dimensions)


def combine(*specs: SearchSpec | None) -> SearchSpec:
    """The search of a cell: the model's, task's and strategy's tables in that order, later keys replacing earlier
    ones of the same name and target, settings from the most specific table that sets them."""
    dims: dict[tuple[str, str, str], Dimension] = {}
    trials: int | None = None
    seed: int | None = None
    metric: str | None = None
    sampler: str | None = None
    batch: int | None = None
    for spec in specs:
        if spec is None:
            continue
        for dim in spec.dimensions:
            # a budget key is one key whoever writes it; options belong to their layer
            identity = (dim.target, dim.key, "" if dim.target == "budget" else dim.layer)
            dims.pop(identity, None)
            dims[identity] = dim
        if spec.dimensions:
            trials = spec.trials if spec.trials is not None else trials
            seed = spec.seed if spec.seed is not None else seed
            metric = spec.metric or metric
            sampler = spec.sampler_name or sampler
            batch = spec.batch if spec.batch is not None else batch
    return SearchSpec(tuple(dims.values()), trials, seed, metric, sampler, batch)


def settings(spec: SearchSpec) -> list[dict[str, Any]]:
    """The search's trials, in order: each a mapping of dimension key to value. Grid: every combination, the first
    key varying slowest, values in the order written. Random: ``trials`` seeded draws (see the module docs)."""
    if not spec:
        return []
    keys = [d.key for d in spec.dimensions]
    if spec.adaptive:
        raise ValueError("an Optuna search is planned from its results: harness.planning.optuna_search")
    if spec.trials is None:
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(d.values for d in spec.dimensions))]
    rng = random.Random(f"harness-search|{spec.seed or 0}|{'|'.join(keys)}")
    drawn: list[dict[str, Any]] = []
    seen: set[tuple[str, ...]] = set()
    for _ in range(spec.trials):
        for _attempt in range(_MAX_REDRAWS):
            setting = {d.key: _draw(d, rng) for d in spec.dimensions}
            identity = tuple(repr(v) for v in setting.values())
            if identity not in seen:
                break
        else:  # ranges too narrow to give distinct values: keep the draws so far
            return drawn
        seen.add(identity)
        drawn.append(setting)
    return drawn


def _draw(dim: Dimension, rng: random.Random) -> Any:
    if not dim.is_range:
        return dim.values[rng.randrange(len(dim.values))]
    assert dim.low is not None and dim.high is not None
    if dim.log:
        value = math.exp(rng.uniform(math.log(dim.low), math.log(dim.high)))
    else:
        value = rng.uniform(dim.low, dim.high)
    if dim.kind == "int":
        return min(int(dim.high), max(int(dim.low), round(value)))
    return float(f"{value:.3g}")


def split_values(setting: Mapping[str, Any], spec: SearchSpec) -> dict[str, dict[str, Any]]:
    """A trial's values by target: ``budget``, ``strategies``, ``tasks``, ``models`` (options of that layer)."""
    out: dict[str, dict[str, Any]] = {"budget": {}, "strategies": {}, "tasks": {}, "models": {}}
    for dim in spec.dimensions:
        out["budget" if dim.target == "budget" else dim.layer][_option_name(dim)] = setting[dim.key]
    return out


def _option_name(dim: Dimension) -> str:
    return dim.key.split(".", 1)[1] if dim.target == "options" and dim.layer != "strategies" else dim.key


# -- checking a search table ------------------------------------------------------------------------------------


def check_search(
    raw: Any,
    where: str,
    layer: str,
    component: Any,
    options: Mapping[str, Any],
    ctx: CheckContext,
    declared_name: str,
) -> tuple[SearchSpec | None, list[Problem]]:
    """Validate the search table at ``where`` (``strategies.lora.search``) of a declared ``component`` (its plugin,
    with resolved ``options``) in ``layer``; every listed value and both ends of every range are checked as the
    budget or the component would check them written alone."""
    if not isinstance(raw, Mapping):
        return None, [Problem(where, f"expected a table, got {type(raw).__name__} {raw!r}")]
    problems: list[Problem] = []
    budget_by_name = {o.name: o for o in BUDGET_OPTIONS}
    option_by_name = {o.name: o for o in component.options}
    prefix = {"strategies": "", "tasks": "task.", "models": "model."}[layer]
    entries: list[tuple[str, str, Option, Any, str]] = []  # (where, key, option, value or range, target)
    for key, value in raw.items():
        at = f"{where}.{key}"
        if key in SETTINGS:
            continue
        if key == declared_name and isinstance(value, Mapping):  # lora.r = [...] inside [strategies.lora.search]
            for sub, sub_value in value.items():
                if sub not in option_by_name:
                    problems.append(Problem(f"{at}.{sub}", _unknown(sub, option_by_name, budget_by_name, declared_name)))
                else:
                    entries.append((f"{at}.{sub}", prefix + sub, option_by_name[sub], sub_value, "options"))
            continue
        if key in budget_by_name:
            entries.append((at, key, budget_by_name[key], value, "budget"))
        elif key in option_by_name:
            entries.append((at, prefix + key, option_by_name[key], value, "options"))
        else:
            problems.append(Problem(at, _unknown(key, option_by_name, budget_by_name, declared_name)))
    trials = raw.get("trials")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
        problems.append(Problem(f"{where}.trials", f"expected a whole number of random trials (at least 1), got {trials!r}"))
        trials = None
    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        problems.append(Problem(f"{where}.seed", f"expected an integer, got {seed!r}"))
        seed = None
    metric = raw.get("metric")
    if metric is not None and not (isinstance(metric, str) and metric):
        problems.append(Problem(f"{where}.metric", f"expected a metric name, got {metric!r}"))
        metric = None
    sampler, batch = raw.get("sampler"), raw.get("batch")
    if sampler is not None and sampler not in SAMPLERS:
        problems.append(Problem(f"{where}.sampler", f"expected one of {', '.join(SAMPLERS)}, got {sampler!r}"))
        sampler = None
    if sampler == "grid" and trials is not None:
        problems.append(Problem(f"{where}.trials", "a grid tries every combination; trials is for random and optuna"))
    if sampler in ("random", "optuna") and trials is None:
        problems.append(Problem(f"{where}.trials", f"the {sampler} sampler needs trials = N"))
    if sampler == "optuna" and importlib.util.find_spec("optuna") is None:
        problems.append(Problem(f"{where}.sampler", "the optuna sampler needs the optuna package: "
                                                    "pip install 'tuning-harness[optuna]'"))  # fmt: skip
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        problems.append(Problem(f"{where}.batch", f"expected a whole number of trials asked at once, got {batch!r}"))
        batch = None
    if batch is not None and sampler != "optuna":
        problems.append(Problem(f"{where}.batch", "only the optuna sampler asks trials in batches"))
    dims: list[Dimension] = []
    for at, key, option, value, target in entries:
        dim, found = _dimension(at, key, option, value, target, layer, ctx.base_dir)
        problems += found
        if dim is not None:
            dims.append(dim)
    if not entries and not problems:
        problems.append(Problem(where, "searches nothing: give some budget keys or options a list of values or a range"))
    spec = SearchSpec(tuple(dims), trials, seed, metric, sampler, batch)
    if problems:
        return None, problems
    problems += check_size(spec, where)
    if not problems and layer == "strategies" and not getattr(component, "trains", True):
        problems.append(Problem(where, f"strategy {component.name!r} trains nothing, so there is nothing to tune"))
    if not problems:
        problems += _check_settings(spec, where, component, options, ctx)
    return (None if problems else spec), problems


def check_size(spec: SearchSpec, where: str) -> list[Problem]:
    """A grid with a range, a random search asking for more distinct settings than its lists allow, a grid too big."""
    ranges = [d.key for d in spec.dimensions if d.is_range]
    combos = math.prod(len(d.values) for d in spec.dimensions if not d.is_range)
    if spec.adaptive:
        return [] if (spec.trials or 0) <= MAX_TRIALS else [Problem(where, f"{spec.trials} trials; at most {MAX_TRIALS} per search")]
    if spec.trials is None and ranges:
        return [Problem(where, f"{ranges[0]} is a range, which only a random search can draw from: add trials = N")]
    if spec.trials is not None and not ranges and spec.trials > combos:
        return [Problem(f"{where}.trials", f"{spec.trials} trials but the lists allow only {combos} distinct settings; "
                                           "leave trials out to try every combination (grid)")]  # fmt: skip
    count = spec.trials if spec.trials is not None else combos
    if count > MAX_TRIALS:
        return [Problem(where, f"{count} trials; at most {MAX_TRIALS} per search")]
    return []


def _unknown(key: str, options: Mapping[str, Option], budget: Mapping[str, Option], name: str) -> str:
    known = [*budget, *options]
    return (f"neither a budget key nor an option of {name!r}{did_you_mean(key, known)}; a search table takes budget "
            f"keys, the component's options and the settings {', '.join(SETTINGS)}")  # fmt: skip


def _dimension(
    at: str, key: str, option: Option, value: Any, target: str, layer: str, base_dir: Path | None
) -> tuple[Dimension | None, list[Problem]]:
    if isinstance(value, list):
        if not value:
            return None, [Problem(at, "empty list; give at least one value")]
        problems = []
        for item in value:
            _, found = check_options((option,), {option.name: item}, "", base_dir)
            problems += [Problem(at, f"the value {item!r}: {p.message}") for p in found]
        repeated = [v for i, v in enumerate(value) if v in value[:i]]
        if repeated:
            problems.append(Problem(at, f"{repeated[0]!r} is listed twice"))
        return (None if problems else Dimension(key, target, layer, values=tuple(value))), problems
    if isinstance(value, Mapping):
        return _range(at, key, option, value, target, layer, base_dir)
    return None, [Problem(at, f"expected a list of values or a range {{low = .., high = ..}}, got {value!r}; a single "
                              "value belongs in the budget or the options, not the search")]  # fmt: skip


def _range(
    at: str, key: str, option: Option, value: Mapping[str, Any], target: str, layer: str, base_dir: Path | None
) -> tuple[Dimension | None, list[Problem]]:
    if option.kind not in ("int", "float"):
        return None, [Problem(at, f"a range needs a numeric key; {option.name} takes {option.kind}: give a list")]
    unknown = sorted(set(value) - {"low", "high", "log"})
    if unknown:
        return None, [Problem(f"{at}.{unknown[0]}", "unknown key; a range takes low, high and log")]
    low, high, log = value.get("low"), value.get("high"), value.get("log", False)
    problems = []
    for name, end in (("low", low), ("high", high)):
        if isinstance(end, bool) or not isinstance(end, (int, float)):
            problems.append(Problem(f"{at}.{name}", f"expected a number, got {end!r}"))
        else:
            _, found = check_options((option,), {option.name: end}, at, base_dir)
            problems += [Problem(f"{at}.{name}", p.message) for p in found]
    if not isinstance(log, bool):
        problems.append(Problem(f"{at}.log", f"expected true or false, got {log!r}"))
    if problems:
        return None, problems
    if not low < high:
        return None, [Problem(at, f"low ({low}) must be below high ({high})")]
    if log and low <= 0:
        return None, [Problem(f"{at}.low", f"a log range needs low > 0, got {low}")]
    return Dimension(key, target, layer, low=float(low), high=float(high), log=log, kind=option.kind), []


def _check_settings(
    spec: SearchSpec, where: str, component: Any, options: Mapping[str, Any], ctx: CheckContext
) -> list[Problem]:
    """The component's own cross-option checks (``target_r`` below ``init_r``, ...) for each listed combination of
    its searched options (ranges at their ends); the first failing setting is reported."""
    dims = [d for d in spec.dimensions if d.target == "options"]
    if not dims:
        return []
    choices = [d.values if not d.is_range else _ends(d) for d in dims]
    for combo in itertools.islice(itertools.product(*choices), MAX_TRIALS):
        trial = {**options, **{_option_name(d): v for d, v in zip(dims, combo, strict=True)}}
        found = component.check(trial, where.rsplit(".", 1)[0], ctx)
        if found:
            shown = ", ".join(f"{d.key} = {v!r}" for d, v in zip(dims, combo, strict=True))
            return [Problem(where, f"the setting {shown}: {p.where}: {p.message}") for p in found[:1]]
    return []


def _ends(dim: Dimension) -> Sequence[Any]:
    assert dim.low is not None and dim.high is not None
    if dim.kind == "int":
        return (int(dim.low), int(dim.high))
    return (dim.low, dim.high)
