"""Suite files (TOML): loading and validating everything before any model loads.

A suite is data, never code. All problems are collected and reported together, each with its place in the file
(``file:line: key.path: message``). The README's "Suite files" section shows the keys; every component's options
are listed, with types and defaults, by ``harness plugins --json``.
"""

from __future__ import annotations

import codecs
import hashlib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from harness.api.budget import BUDGET_OPTIONS
from harness.api.components import CheckContext
from harness.api.host import PluginHost
from harness.api.options import Option, check_options, did_you_mean
from harness.api.paths import offline
from harness.errors import HarnessError, Problem, ValidationError
from harness.planning.search import SearchSpec, check_search

TOP_LEVEL = ("suite", "budget", "models", "tasks", "strategies", "exclude")
SUITE_OPTIONS: tuple[Option, ...] = (
    Option("name", "str", None, "suite name; records go to results/<name>/ (default: the file's stem)"),
    Option("description", "str", "", "free text"),
    Option(
        "profile", "str", None,
        "names a reduced run of a study (\"quick\": fewer examples, steps and seeds); reports say so in their header",
    ),
    Option("seeds", "list[int]", [0], "seeds; every cell runs once per seed"),
    Option("executor", "str", "local", "executor plugin that runs the cells (--executor overrides)"),
    Option("trust_remote_code", "bool", False, "allow models to run code from their repository (off unless set)"),
    Option(
        "max_cells_per_gpu", "int", 1,
        "cells one GPU may run at once when their memory estimates fit together (local executor)", minimum=1,
    ),
)
EXCLUDE_KEYS = ("task", "strategy", "model", "seed")
#: The key of a declaration's hyperparameter search table (:mod:`harness.planning.search`).
SEARCH_KEY = "search"
#: Keys every ``[models.NAME]``, ``[tasks.NAME]`` and ``[strategies.NAME]`` table takes besides its plugin's options:
#: the plugin key first (``source`` names a model source, ``type`` a task or strategy), then ``budget`` and
#: :data:`SEARCH_KEY`.
DECLARATION_KEYS: dict[str, tuple[str, str, str]] = {
    "models": ("source", "budget", SEARCH_KEY),
    "tasks": ("type", "budget", SEARCH_KEY),
    "strategies": ("type", "budget", SEARCH_KEY),
}


@dataclass(frozen=True)
class Declared:
    """A model, task or strategy declared in the suite: its table name, plugin name, options and budget overrides."""

    name: str
    plugin: str
    options: Mapping[str, Any]
    budget: Mapping[str, Any]
    where: str
    #: False when its options had problems (then nothing derived from them is computed).
    valid: bool = True
    #: Its ``search`` table (:mod:`harness.planning.search`), when it has one.
    search: SearchSpec | None = None


@dataclass(frozen=True)
class Suite:
    """A validated suite file."""

    path: Path
    name: str
    description: str
    seeds: tuple[int, ...]
    executor: str
    trust_remote_code: bool
    budget: Mapping[str, Any]
    models: tuple[Declared, ...]
    tasks: tuple[Declared, ...]
    strategies: tuple[Declared, ...]
    exclude: tuple[Mapping[str, Any], ...]
    sha256: str
    families: Mapping[str, str] = field(default_factory=dict)
    max_cells_per_gpu: int = 1
    #: ``[suite] profile``: a reduced run of a study (``quick``), which reports name in their header.
    profile: str | None = None
    #: What components warned about while checking (:meth:`CheckContext.warn`), each placed in the file.
    warnings: tuple[str, ...] = ()


class _Locator:
    """Best-effort line numbers for key paths, from the TOML text (tomllib gives none)."""

    _header = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _key = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+)\s*=")

    def __init__(self, text: str):
        self.lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        counts: dict[tuple[str, ...], int] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._header.match(line)
            if header:
                table = tuple(p.strip().strip("\"'") for p in header.group(1).split("."))
                if line.lstrip().startswith("[["):
                    index = counts.get(table, 0)
                    counts[table] = index + 1
                    table = (*table, str(index))
                self.lines.setdefault(table, number)
                continue
            key = self._key.match(line)
            if key:
                parts = tuple(p.strip().strip("\"'") for p in key.group(1).split("."))
                self.lines.setdefault((*table, *parts), number)

    def line(self, dotted: str) -> int | None:
        parts = tuple(dotted.split("."))
        while parts:
            if parts in self.lines:
                return self.lines[parts]
            parts = parts[:-1]
        return None


def _place(path: Path, locator: _Locator, problem: Problem) -> Problem:
    line = locator.line(problem.where) if problem.where else None
    prefix = f"{path}:{line}" if line else str(path)
    return Problem(f"{prefix}: {problem.where}" if problem.where else prefix, problem.message)


def _strategy_names(strategies: list[Declared], host: PluginHost) -> list[str]:
    """Declared strategy names and the names of their variants (``few_shot@k=4``), which exclusions may name."""
    names = []
    for decl in strategies:
        names.append(decl.name)
        if decl.valid:
            suffixes = [suffix for suffix, _ in host.strategy(decl.plugin).variants(decl.options) if suffix]
            names.extend(f"{decl.name}@{suffix}" for suffix in suffixes)
    return names


def load_suite(path: str | Path, host: PluginHost) -> Suite:
    """Read and validate a suite file; raise :class:`ValidationError` listing every problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise HarnessError(f"{path}: suite file not found") from None
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read suite file: {exc.strerror}") from None
    if raw.startswith(codecs.BOM_UTF8):
        raise HarnessError(
            f"{path}: starts with a UTF-8 byte-order mark (BOM), which TOML does not allow; save it as UTF-8 without BOM"
        )
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"{path}: malformed TOML: {exc}") from None
    locator = _Locator(text)
    problems: list[Problem] = []
    ctx = CheckContext(base_dir=path.resolve().parent, offline=offline())

    for key, value in data.items():
        if key not in TOP_LEVEL:
            what = "table" if isinstance(value, Mapping) else "key"
            hint = f" ({key} belongs in [suite])" if key in {o.name for o in SUITE_OPTIONS} and what == "key" else ""
            problems.append(Problem(key, f"unknown top-level {what}{did_you_mean(key, TOP_LEVEL)}{hint}; expected the "
                                         f"tables {', '.join(TOP_LEVEL)}"))  # fmt: skip

    def table(key: str, value: Any) -> Mapping[str, Any]:
        if isinstance(value, Mapping):
            return value
        problems.append(Problem(key, f"expected a table, got {type(value).__name__} {value!r}"))
        return {}

    suite_opts, found = check_options(SUITE_OPTIONS, table("suite", data.get("suite", {})), "suite", ctx.base_dir)
    problems += found
    budget, found = _check_budget(table("budget", data.get("budget", {})), "budget", ctx, defaults=False)
    problems += found

    if isinstance(suite_opts.get("name"), str):
        problems += [Problem("suite.name", message) for message in _name_problems(suite_opts["name"])]
    if "executor" in data.get("suite", {}) and isinstance(suite_opts.get("executor"), str):
        reason = host.lookup_problem("executor", suite_opts["executor"])
        if reason:
            problems.append(Problem("suite.executor", reason))

    families: dict[str, str] = {}
    models = _declare(data, "models", "model source", host, ctx, problems, default_plugin="hub")
    for decl in models:
        if decl.valid:
            try:
                families[decl.name] = host.model_source(decl.plugin).family(decl.options, ctx)
            except HarnessError as exc:
                problems.append(Problem(decl.where, str(exc)))
    tasks = _declare(data, "tasks", "task", host, ctx, problems)
    strategies = _declare(data, "strategies", "strategy", host, ctx, problems)

    exclude = data.get("exclude", [])
    if not isinstance(exclude, list):
        problems.append(Problem("exclude", "expected an array of tables: [[exclude]]"))
        exclude = []
    names = {"task": [d.name for d in tasks], "strategy": _strategy_names(strategies, host), "model": [d.name for d in models]}
    for index, rule in enumerate(exclude):
        where = f"exclude.{index}"
        if not isinstance(rule, Mapping) or not rule:
            problems.append(Problem(where, "expected a table with some of: task, strategy, model, seed"))
            continue
        for key, value in rule.items():
            if key not in EXCLUDE_KEYS:
                problems.append(Problem(f"{where}.{key}", f"unknown key{did_you_mean(key, EXCLUDE_KEYS)}; expected one of {', '.join(EXCLUDE_KEYS)}"))
            elif key == "seed":
                if not (isinstance(value, int) or (isinstance(value, list) and all(isinstance(v, int) for v in value))):
                    problems.append(Problem(f"{where}.seed", f"expected an integer or a list of integers, got {value!r}"))
            else:
                patterns = value if isinstance(value, list) else [value]
                if not all(isinstance(p, str) for p in patterns):
                    problems.append(Problem(f"{where}.{key}", f"expected a name, a glob or a list of them, got {value!r}"))
                    continue
                for pattern in patterns:
                    if not any(fnmatchcase(n, pattern) for n in names[key]):
                        problems.append(Problem(f"{where}.{key}", f"{pattern!r} matches no declared {key}{did_you_mean(pattern, names[key])}"))

    for kind, declared in (("models", models), ("tasks", tasks), ("strategies", strategies)):
        if not declared and kind not in [p.where.split(".")[0] for p in problems]:
            problems.append(Problem(kind, f"the suite declares no {kind}; add at least one [{kind}.NAME] table"))
    if not suite_opts.get("seeds"):
        problems.append(Problem("suite.seeds", "expected at least one seed"))
    elif isinstance(suite_opts["seeds"], list) and len(set(suite_opts["seeds"])) != len(suite_opts["seeds"]):
        repeated = sorted({s for s in suite_opts["seeds"] if suite_opts["seeds"].count(s) > 1})
        problems.append(Problem("suite.seeds", f"seeds repeat: {repeated}; each seed runs once per cell"))

    if problems:
        raise ValidationError([_place(path, locator, p) for p in problems])
    return Suite(
        warnings=tuple(str(_place(path, locator, w)) for w in ctx.warnings),
        path=path,
        name=suite_opts["name"] or path.stem,
        description=suite_opts["description"],
        seeds=tuple(suite_opts["seeds"]),
        executor=suite_opts["executor"],
        trust_remote_code=suite_opts["trust_remote_code"],
        budget=budget,
        models=tuple(models),
        tasks=tuple(tasks),
        strategies=tuple(strategies),
        exclude=tuple(exclude),
        sha256=hashlib.sha256(raw).hexdigest(),
        families=families,
        max_cells_per_gpu=suite_opts["max_cells_per_gpu"],
        profile=suite_opts["profile"],
    )


#: The longest name of the suite or of a declared model, task or strategy: names become folder and file names
#: (``results/<suite>/``, cell folders, plots, TensorBoard runs) and table headers.
MAX_NAME = 64


def _name_problems(name: str) -> list[str]:
    """What makes ``name`` unusable as the results folder's name: it must be one plain folder name."""
    if not name.strip():
        return ["expected a non-empty name"]
    if any(sep in name for sep in "/\\") or name in {".", ".."} or name.startswith("."):
        return [f"{name!r} is a path; expected a plain name (records go to results/<name>/): no / or \\, no leading ."]
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return [f"{name!r} has control characters; expected a plain name"]
    if len(name) > MAX_NAME:
        return [f"{len(name)} characters long; at most {MAX_NAME} (it names the results folder)"]
    return []


def _check_budget(given: Mapping[str, Any], where: str, ctx: CheckContext, defaults: bool) -> tuple[dict[str, Any], list[Problem]]:
    resolved, problems = check_options(BUDGET_OPTIONS, given, where, ctx.base_dir)
    if not defaults:  # keep only what the user wrote, so overrides layer correctly
        resolved = {k: v for k, v in resolved.items() if k in given}
    return resolved, problems


def _declare(
    data: Mapping[str, Any],
    section: str,
    kind: str,
    host: PluginHost,
    ctx: CheckContext,
    problems: list[Problem],
    default_plugin: str | None = None,
) -> list[Declared]:
    plugin_key, budget_key, _ = DECLARATION_KEYS[section]
    value = data.get(section, {})
    if not isinstance(value, Mapping):
        problems.append(Problem(section, f"expected tables [{section}.NAME], got {type(value).__name__}"))
        return []
    declared = []
    for name, body in value.items():
        where = f"{section}.{name}"
        if len(name) > MAX_NAME:
            problems.append(Problem(where, f"the name is {len(name)} characters long; at most {MAX_NAME} (names become "
                                           "folder and file names and table headers)"))  # fmt: skip
            continue
        if not isinstance(body, Mapping):
            problems.append(Problem(where, f"expected a table, got {type(body).__name__} {body!r}"))
            continue
        plugin = body.get(plugin_key, default_plugin or name)
        if not isinstance(plugin, str):
            problems.append(Problem(f"{where}.{plugin_key}", f"expected a {kind} name, got {plugin!r}"))
            continue
        reason = host.lookup_problem(kind, plugin)
        if reason:
            problems.append(Problem(f"{where}.{plugin_key}" if plugin_key in body else where, reason))
            declared.append(Declared(name, plugin, {}, {}, where, valid=False))
            continue
        component = host.get(kind, plugin)
        options, option_problems = check_options(component.options, body, where, ctx.base_dir,
                                                 ignore=(plugin_key, budget_key, SEARCH_KEY),
                                                 budget_keys=[o.name for o in BUDGET_OPTIONS])  # fmt: skip
        problems += option_problems
        check_problems = component.check(options, where, ctx) if not option_problems else []
        problems += check_problems
        overrides = body.get(budget_key, {})
        if not isinstance(overrides, Mapping):
            problems.append(Problem(f"{where}.{budget_key}", f"expected a table, got {type(overrides).__name__}"))
            overrides = {}
        budget, found = _check_budget(overrides, f"{where}.{budget_key}", ctx, defaults=False)
        problems += found
        search = None
        if SEARCH_KEY in body and not (option_problems or check_problems):
            search, found = check_search(body[SEARCH_KEY], f"{where}.{SEARCH_KEY}", section, component, options, ctx, name)
            problems += found
        declared.append(Declared(name, plugin, options, budget, where, valid=not (option_problems or check_problems),
                                 search=search))  # fmt: skip
    return declared
