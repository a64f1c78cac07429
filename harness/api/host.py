"""The plugin host: a pluggy manager built per session (never at import) from the ``harness`` entry-point group.

Worker processes rebuild their own host the same way, from names, so no plugin object is ever pickled.

Environment variables:

``HARNESS_LOAD_PLUGINS``
    Comma-separated entry-point names: load only these (an empty value loads none).
``HARNESS_BLOCK_PLUGINS``
    Comma-separated entry-point names never to load.
``HARNESS_EXTRA_PLUGINS``
    Comma-separated ``name=module.path`` pairs: plugin modules to load as if they had entry points (not filtered by
    ``HARNESS_LOAD_PLUGINS``, but blocked by ``HARNESS_BLOCK_PLUGINS``). Worker processes inherit the environment, so
    tests and plugin authors use it to run a cell with a module that is importable but not installed.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

import pluggy

from harness.api import hookspecs
from harness.api.components import Component, Executor, ModelSource, Reporter, Strategy, Task
from harness.api.options import did_you_mean
from harness.errors import HarnessError

ENTRY_POINT_GROUP = "harness"
LOAD_ENV = "HARNESS_LOAD_PLUGINS"
BLOCK_ENV = "HARNESS_BLOCK_PLUGINS"
EXTRA_ENV = "HARNESS_EXTRA_PLUGINS"

#: hook name -> component base class it registers.
HOOK_KINDS: dict[str, type[Component]] = {
    "harness_register_tasks": Task,
    "harness_register_strategies": Strategy,
    "harness_register_model_sources": ModelSource,
    "harness_register_executors": Executor,
    "harness_register_reporters": Reporter,
}

C = TypeVar("C", bound=Component)


class _RowsReporter(Reporter):
    """A reporter of a plugin written for hook API 1, whose ``render`` took the report's rows: given those."""

    def __init__(self, wrapped: Reporter) -> None:
        self.wrapped = wrapped
        self.name = wrapped.name  # type: ignore[misc]
        self.description = wrapped.description  # type: ignore[misc]
        self.options = wrapped.options  # type: ignore[misc]

    def render(self, report: Any) -> str:
        return self.wrapped.render(report.rows)


@dataclass
class PluginInfo:
    """One plugin as ``harness plugins`` shows it."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    error: str | None = None
    components: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "error": self.error,
            "components": self.components,
        }


def _names_from_env(var: str) -> set[str] | None:
    value = os.environ.get(var)
    if value is None:
        return None
    return {n.strip() for n in value.split(",") if n.strip()}


def _why_nothing(implemented: list[str]) -> str:
    """The end of the problem line of a plugin that registered no component, given the hooks it implements."""
    if not implemented:
        return (
            "it implements no harness hook; define one (e.g. harness_register_tasks) decorated with @hookimpl "
            "from harness.api.hookspecs"
        )
    return f"its {', '.join(implemented)} never called register; call register(component) for each component"


class PluginHost:
    """Loads plugins, collects the components they register, and answers lookups with helpful errors."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        #: Conflicts and failures, one line each (shown by ``harness plugins`` and ``--check``).
        self.problems: list[str] = []
        self._components: dict[str, dict[str, tuple[Component, str]]] = {
            cls.kind: {} for cls in HOOK_KINDS.values()
        }
        self._conflicts: dict[tuple[str, str], list[str]] = {}

    # -- loading -------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, extra: Iterable[tuple[str, ModuleType | object]] = ()) -> PluginHost:
        """Build a host from the entry points (filtered by the environment variables) plus ``extra`` plugins
        given as ``(name, module_or_object)`` (used by tests and the plugin-author fixture)."""
        host = cls()
        allow, block = _names_from_env(LOAD_ENV), _names_from_env(BLOCK_ENV) or set()
        seen: dict[str, str] = {}
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            if (allow is not None and ep.name not in allow) or ep.name in block:
                continue
            name = ep.name
            if name in seen:
                host.problems.append(
                    f"entry point {name!r} is declared twice: by {seen[name]} and by {dist_name or ep.value}; "
                    f"the second is loaded as {name + '@' + str(dist_name)!r}"
                )
                name = f"{name}@{dist_name}"
            seen[name] = dist_name or ep.value
            info = PluginInfo(name, ep.value, dist_name, dist.version if dist is not None else None)
            try:
                obj = ep.load()
            except Exception as exc:  # a broken third-party plugin must not take the others down
                info.error = f"{type(exc).__name__}: {exc}"
                host.problems.append(f"plugin {name!r} failed to import: {info.error}")
                host.plugins.append(info)
                continue
            host._add(info, obj)
        for spec in filter(None, (s.strip() for s in os.environ.get(EXTRA_ENV, "").split(","))):
            name, _, module = (part.strip() for part in spec.partition("="))
            if name in block:
                continue
            info = PluginInfo(name, module)
            try:
                if not module:
                    raise ValueError(f"{EXTRA_ENV} entry {spec!r} is not name=module.path")
                obj = importlib.import_module(module)
            except Exception as exc:
                info.error = f"{type(exc).__name__}: {exc}"
                host.problems.append(f"plugin {name!r} failed to import: {info.error}")
                host.plugins.append(info)
                continue
            host._add(info, obj)
        for name, obj in extra:
            host._add(PluginInfo(name, getattr(obj, "__name__", repr(obj))), obj)
        return host

    def _add(self, info: PluginInfo, obj: Any) -> None:
        self.plugins.append(info)
        declared = getattr(obj, "HARNESS_API_VERSION", hookspecs.API_VERSION)
        if isinstance(declared, bool) or not isinstance(declared, int) or declared < 1:
            info.error = f"HARNESS_API_VERSION must be a positive integer, got {declared!r}"
            self.problems.append(f"plugin {info.name!r} refused: {info.error}")
            return
        if declared > hookspecs.API_VERSION:
            info.error = (
                f"needs harness hook API {declared}, this harness provides {hookspecs.API_VERSION}; "
                "upgrade harness"
            )
            self.problems.append(f"plugin {info.name!r} refused: {info.error}")
            return
        marker = f"{hookspecs.PROJECT}_impl"  # set by @hookimpl
        unknown = [
            a
            for a in dir(obj)
            if a not in HOOK_KINDS
            and callable(getattr(obj, a, None))
            and (hasattr(getattr(obj, a), marker) or a.startswith("harness_register"))
        ]
        found_before = len(self.problems)
        for attr in unknown:
            self.problems.append(
                f"plugin {info.name!r} defines {attr!r}, which is not a harness hook"
                f"{did_you_mean(attr, list(HOOK_KINDS))}"
            )
        for attr in self._unmarked_hooks(obj):
            self.problems.append(
                f"plugin {info.name!r} (module {info.module}) defines {attr!r} without the @hookimpl marker, so it "
                "is never called; decorate it with @hookimpl from harness.api.hookspecs"
            )
        try:
            self.pm.register(obj, name=info.name)
        except Exception as exc:
            info.error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            self.problems.append(f"plugin {info.name!r} failed to register: {info.error}")
            return
        for attr in self._pending_hooks(info.name):  # pluggy's check_pending, for this plugin alone
            if attr not in unknown:
                self.problems.append(f"plugin {info.name!r} implements {attr!r}, which is not a harness hook")
        pending: list[tuple[str, Component]] = []
        implemented: list[str] = []
        for hook_name, base in HOOK_KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name != info.name:
                    continue
                implemented.append(hook_name)

                def register(component: Component, _base: type[Component] = base, _hook: str = hook_name) -> None:
                    if not isinstance(component, _base):
                        raise TypeError(f"{_hook} registered {component!r}, expected a {_base.__name__} instance")
                    pending.append((_base.kind, component))

                try:
                    impl.function(register=register)
                except Exception as exc:
                    info.error = f"{type(exc).__name__} in {hook_name}: {' '.join(str(exc).split())}"
                    self.problems.append(f"plugin {info.name!r} failed to register: {info.error}")
                    self.pm.unregister(name=info.name)
                    return
        if not pending and len(self.problems) == found_before:  # a problem found above already says why
            self.problems.append(
                f"plugin {info.name!r} (module {info.module}) registers nothing: {_why_nothing(implemented)}"
            )
        for kind, component in pending:
            if not component.name:
                self.problems.append(f"plugin {info.name!r} registered a {kind} without a name ({component!r})")
                continue
            if kind == Reporter.kind and declared < 2:  # hook API 1: render(rows)
                component = _RowsReporter(component)  # type: ignore[arg-type]
            self._remember(info, kind, component)

    def _unmarked_hooks(self, obj: Any) -> list[str]:
        """Callable attributes of ``obj`` named like a hook that pluggy does not take as implementations (no
        ``@hookimpl`` marker): without this check they would be ignored without a word."""
        return [
            name
            for name in HOOK_KINDS
            if callable(getattr(obj, name, None)) and self.pm.parse_hookimpl_opts(obj, name) is None
        ]

    def _pending_hooks(self, plugin_name: str) -> list[str]:
        """Hook implementations of ``plugin_name`` that match no hook specification: what pluggy's
        ``PluginManager.check_pending`` raises on, checked per plugin so that one plugin's misspelled hook is
        reported against it and does not fail the check of every plugin loaded after it."""
        found = []
        for name, caller in vars(self.pm.hook).items():
            if name.startswith("_") or caller.has_spec():
                continue
            if any(i.plugin_name == plugin_name and not i.optionalhook for i in caller.get_hookimpls()):
                found.append(name)
        return found

    def _remember(self, info: PluginInfo, kind: str, component: Component) -> None:
        table = self._components[kind]
        info.components.setdefault(kind, []).append(component.name)
        if component.name in table and table[component.name][1] == info.name:
            self.problems.append(f"plugin {info.name!r} registers {kind} {component.name!r} twice; the first is kept")
            return
        if component.name in table:
            owner = table[component.name][1]
            self._conflicts.setdefault((kind, component.name), [owner]).append(info.name)
            self.problems.append(
                f"{kind} {component.name!r} is registered by plugin {owner!r} and by plugin {info.name!r}; "
                f"suites naming it are refused until one is blocked ({BLOCK_ENV})"
            )
            return
        table[component.name] = (component, info.name)

    # -- lookups -------------------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self._components[kind])

    def components(self, kind: str) -> list[tuple[Component, str]]:
        """``(component, plugin name)`` pairs of one kind, sorted by name."""
        table = self._components[kind]
        return [table[n] for n in sorted(table)]

    def lookup_problem(self, kind: str, name: str) -> str | None:
        """Why ``name`` cannot be used as a ``kind``, or ``None`` when it can."""
        if (kind, name) in self._conflicts:
            owners = " and ".join(repr(o) for o in self._conflicts[(kind, name)])
            return f"{kind} {name!r} is registered by plugins {owners}; block one with {BLOCK_ENV}"
        if name not in self._components[kind]:
            available = ", ".join(self.names(kind)) or "none installed"
            broken = [f"{p.name!r} ({p.error})" for p in self.plugins if p.error]
            note = f"; plugins that failed to load: {', '.join(broken)}" if broken else ""
            return f"unknown {kind} {name!r}{did_you_mean(name, self.names(kind))}; available: {available}{note}"
        return None

    def get(self, kind: str, name: str) -> Component:
        problem = self.lookup_problem(kind, name)
        if problem:
            raise HarnessError(problem)
        return self._components[kind][name][0]

    def task(self, name: str) -> Task:
        return self.get(Task.kind, name)  # type: ignore[return-value]

    def strategy(self, name: str) -> Strategy:
        return self.get(Strategy.kind, name)  # type: ignore[return-value]

    def model_source(self, name: str) -> ModelSource:
        return self.get(ModelSource.kind, name)  # type: ignore[return-value]

    def executor(self, name: str) -> Executor:
        return self.get(Executor.kind, name)  # type: ignore[return-value]

    def reporter(self, name: str) -> Reporter:
        return self.get(Reporter.kind, name)  # type: ignore[return-value]

    def versions(self) -> dict[str, str | None]:
        """Plugin name -> distribution version, for the environment record."""
        return {p.name: p.version for p in self.plugins if p.error is None}
