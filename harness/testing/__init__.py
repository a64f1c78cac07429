"""A pytest plugin for plugin authors: register a plugin for one test, tiny CPU models and tasks, one cell in-process.

Opt in (nothing loads it automatically) in your ``conftest.py``::

    pytest_plugins = ["harness.testing"]

or on the command line: ``pytest -p harness.testing``. Importing this module imports neither torch nor any plugin;
models load only when a cell runs.

Fixtures:

``harness_plugin``
    ``register(plugin, name=None) -> PluginHost``: makes ``plugin`` part of every :meth:`PluginHost.load` until the
    test ends, in this process and in worker subprocesses (it is added to ``HARNESS_EXTRA_PLUGINS`` as
    ``name=module``, and the folder it is imported from to ``PYTHONPATH``). ``plugin`` is a module, an importable
    module name, or a :class:`~pathlib.Path` to a ``.py`` file or a package folder (its parent folder is put on
    ``sys.path``); ``name`` defaults to the module name. Plugins are imported by name in workers, so an object that
    is not an importable module (a class, an instance, a module built in memory) is refused: load such an object
    with ``PluginHost.load(extra=[(name, obj)])`` yourself. Returns the host with every installed plugin plus this
    one; the test fails with the plugin's problems (import error with its traceback, a component name that another
    plugin registers, a misspelt hook, a newer hook API than this harness) when it does not load cleanly. A module
    that an installed entry point already loads is left as it is.
``harness_tiny_task``
    ``make(kind="classification", n=64, **options) -> dict``: :func:`harness.testing.data.tiny_task` writing into a
    fresh folder under the test's ``tmp_path``.
``harness_run_cell``
    ``run(*, task=None, strategy="full", model=None, seed=0, budget=None, host=None, device="cpu") -> Record``:
    :func:`run_cell` in a fresh folder under the test's ``tmp_path``.

Functions: :func:`tiny_model` (a ``[models.NAME]`` table of the ``tiny`` source), :func:`tiny_task` (a tiny dataset
and its ``[tasks.NAME]`` table) and :func:`run_cell` (one cell in-process, returning its record).

An example test of a strategy plugin ``my_package.bitfit`` that registers a strategy ``bitfit``::

    # conftest.py
    pytest_plugins = ["harness.testing"]

    # test_bitfit.py
    from harness.testing import tiny_model

    def test_bitfit_registers(harness_plugin):
        host = harness_plugin("my_package.bitfit")
        assert "bitfit" in host.names("strategy")

    def test_bitfit_trains_only_biases(harness_plugin, harness_tiny_task, harness_run_cell):
        harness_plugin("my_package.bitfit")
        record = harness_run_cell(task=harness_tiny_task("classification"), strategy="bitfit", model=tiny_model())
        assert record.status == "ok", record.error
        assert 0 < record.params.trainable < record.params.total
        assert "accuracy" in record.metrics

A cell runs as a worker runs it (:func:`harness.worker.cell.run_cell`: seed, load, train, evaluate, measure), but in the
test's process (``budget.timeout_s`` is not enforced) and on a tiny budget (:data:`TINY_BUDGET`, a few seconds on a
CPU). An exception inside the cell gives a ``failed`` record whose ``error`` is ``"ExcType: message"``, as a worker
writes it, and its traceback on stderr (pytest shows it when the test fails): assert ``record.status == "ok",
record.error``. A cell the plan skips (a strategy that does not support the model family) gives a ``skipped``
record with the reason as ``error``. A suite that does not validate fails the test with every problem.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import site
import sys
import sysconfig
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from harness.api.host import BLOCK_ENV, EXTRA_ENV, PluginHost
from harness.errors import HarnessError, ValidationError
from harness.testing.data import tiny_model, tiny_task

if TYPE_CHECKING:  # pragma: no cover
    from harness.results.records import Record

__all__ = ["TINY_BUDGET", "PluginRegistrar", "run_cell", "tiny_model", "tiny_task", "suite_toml"]

#: The ``[budget]`` of :func:`run_cell` unless its ``budget`` overrides keys: 8 steps of 8 examples, short inputs.
TINY_BUDGET: dict[str, Any] = {
    "max_steps": 8,
    "batch_size": 8,
    "eval_batch_size": 32,
    "max_length": 64,
    "warmup_steps_excluded": 1,
}
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


# -- registering a plugin ------------------------------------------------------------------------------------------
class PluginRegistrar:
    """The ``harness_plugin`` fixture's callable (see the module docstring); undone by ``monkeypatch`` after the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        self._registered: dict[str, str] = {}
        #: Module names imported from a path given to :meth:`__call__`, dropped from ``sys.modules`` after the test.
        self.path_modules: list[str] = []

    def __call__(self, plugin: ModuleType | str | os.PathLike[str], name: str | None = None) -> PluginHost:
        module = self._module_name(plugin)
        name = module if name is None else name
        if not name or re.search(r"[\s,=]", name):
            raise ValueError(f"plugin name {name!r} must be non-empty, without spaces, commas or '='")
        if self._registered.get(name, module) != module:
            raise ValueError(f"plugin name {name!r} is already registered for module {self._registered[name]!r}")
        before = PluginHost.load()
        if any(p.error is None and p.module.partition(":")[0].strip() == module for p in before.plugins):
            return before  # an entry point (or an earlier call) already loads it
        extra = [s for s in os.environ.get(EXTRA_ENV, "").split(",") if s.strip()]
        self._monkeypatch.setenv(EXTRA_ENV, ",".join([*extra, f"{name}={module}"]))
        self._registered[name] = module
        host = PluginHost.load()
        info = next((p for p in host.plugins if p.name == name and p.module == module), None)
        if info is None:
            pytest.fail(
                f"harness_plugin: plugin {name!r} is blocked by {BLOCK_ENV}={os.environ.get(BLOCK_ENV)}", pytrace=False
            )
        problems = [p for p in host.problems if p not in before.problems]
        if info.error or problems:
            lines = "\n".join(f"  {p}" for p in problems or [info.error or ""])
            pytest.fail(
                f"harness_plugin: plugin {name!r} (module {module}) did not load cleanly:\n{lines}{_import_traceback(module)}",
                pytrace=False,
            )
        self._export(sys.modules.get(module))
        return host

    def _module_name(self, plugin: ModuleType | str | os.PathLike[str]) -> str:
        if isinstance(plugin, str):
            return plugin
        if isinstance(plugin, ModuleType):
            name = plugin.__name__
            if name == "__main__" or sys.modules.get(name) is not plugin or getattr(plugin, "__spec__", None) is None:
                raise ValueError(
                    f"module {name!r} cannot be imported by name (workers import plugins by name); write it to a file "
                    "or load it in this process only with PluginHost.load(extra=[(name, module)])"
                )
            return name
        if isinstance(plugin, os.PathLike):
            path = Path(plugin).resolve()
            if path.suffix == ".py" and path.is_file():
                name = path.stem
            elif path.is_dir() and (path / "__init__.py").is_file():
                name = path.name
            else:
                raise ValueError(f"{path}: expected a .py file or a package folder (with __init__.py)")
            if not name.isidentifier():
                raise ValueError(f"{path}: {name!r} is not a valid module name")
            loaded = sys.modules.get(name)
            if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() not in (
                path,
                path / "__init__.py",
            ):
                self._monkeypatch.delitem(sys.modules, name)  # another test's module of the same name
            self._monkeypatch.syspath_prepend(str(path.parent))
            self.path_modules.append(name)
            return name
        raise TypeError(f"expected a module, a module name or a path, got {type(plugin).__name__}")

    def _export(self, module: ModuleType | None) -> None:
        """Put the folder ``module`` is imported from on ``PYTHONPATH`` so worker subprocesses import it too (not the
        interpreter's own folders, nor modules found by an import hook such as an editable install's finder)."""
        file = getattr(module, "__file__", None)
        if module is None or not file:
            return
        path = Path(file).resolve()
        parts = module.__name__.split(".")
        folder = path.parent if path.name == "__init__.py" else path.with_suffix("")
        for part in reversed(parts):
            if folder.name != part:
                return
            folder = folder.parent
        known = {Path(p).resolve() for p in (*site.getsitepackages(), site.getusersitepackages())}
        known |= {Path(p).resolve() for p in sysconfig.get_paths().values()}
        current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if folder in known or str(folder) in current:
            return
        self._monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), *current]))


def _import_traceback(module: str) -> str:
    """The traceback of importing ``module`` (empty when it imports)."""
    try:
        importlib.import_module(module)
    except Exception:
        return "\n" + traceback.format_exc().rstrip()
    return ""


# -- one cell in-process -------------------------------------------------------------------------------------------
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, os.PathLike)):
        return json.dumps(os.fspath(value), ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) to a suite file")


def _toml_key(key: Any) -> str:
    key = str(key)
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _table(header: str, values: Mapping[str, Any]) -> str:
    lines = [f"[{header}]"] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def _component(value: str | Mapping[str, Any], what: str, plugin_key: str = "type") -> dict[str, Any]:
    if isinstance(value, str):
        return {plugin_key: value}
    if not isinstance(value, Mapping) or not isinstance(value.get(plugin_key), str):
        raise TypeError(f"{what}: expected a name or a table with {plugin_key!r}, got {value!r}")
    return dict(value)


def suite_toml(
    *,
    task: Mapping[str, Any],
    strategy: Mapping[str, Any],
    model: Mapping[str, Any],
    seed: int,
    budget: Mapping[str, Any],
) -> str:
    """The text of a one-cell suite (tables ``[tasks.<type>]``, ``[strategies.<type>]``, ``[models.<source>]``)."""
    return "\n".join(
        [
            _table("suite", {"name": "harness-testing", "seeds": [seed]}),
            _table("budget", budget),
            _table(f"models.{_toml_key(model.get('source', 'hub'))}", model),
            _table(f"tasks.{_toml_key(task['type'])}", task),
            _table(f"strategies.{_toml_key(strategy['type'])}", strategy),
        ]
    )


def run_cell(
    directory: str | Path,
    *,
    task: str | Mapping[str, Any] | None = None,
    strategy: str | Mapping[str, Any] = "full",
    model: Mapping[str, Any] | None = None,
    seed: int = 0,
    budget: Mapping[str, Any] | None = None,
    host: PluginHost | None = None,
    device: str = "cpu",
) -> Record:
    """Run one cell in this process and return its record; its files go to ``directory``.

    ``directory/suite.toml`` is the one-cell suite (validated and planned as ``harness run`` does) and
    ``directory/cell/`` the cell's folder (``record.json``, ``predictions.jsonl``, ``steps.json``).

    :param task: a ``[tasks.NAME]`` table (``type`` and options, e.g. from :func:`tiny_task`) or a task name (default
        options); default: the tiny classification task, written to ``directory/data``.
    :param strategy: a strategy name (default options) or a table with ``type`` and options.
    :param model: a ``[models.NAME]`` table; default :func:`tiny_model` (a tiny random BERT).
    :param budget: ``[budget]`` keys layered over :data:`TINY_BUDGET` (a key set to ``None`` falls back to the
        harness default: ``max_steps=None`` trains ``epochs``); a table may still carry its own ``budget`` table.
    :param host: the plugin host; default ``PluginHost.load()`` (which includes plugins registered with
        ``harness_plugin``).
    """
    from harness.planning.plan import plan
    from harness.planning.suite import load_suite
    from harness.results.records import cell_record, write_json_atomic
    from harness.results.store import RECORD

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    task_table = _component(task if task is not None else tiny_task(directory / "data"), "task")
    strategy_table = _component(strategy, "strategy")
    model_table = dict(model) if model is not None else tiny_model()
    host = host if host is not None else PluginHost.load()
    path = directory / "suite.toml"
    text = suite_toml(
        task=task_table, strategy=strategy_table, model=model_table, seed=seed, budget={**TINY_BUDGET, **(budget or {})}
    )
    path.write_text(text, encoding="utf-8")
    try:
        suite = load_suite(path, host)
        cells = plan(suite, host)
    except ValidationError as exc:
        lines = "\n".join(f"  {p}" for p in exc.problems)
        pytest.fail(f"harness run_cell: the suite does not validate:\n{lines}", pytrace=False)
    except HarnessError as exc:
        pytest.fail(f"harness run_cell: {exc}", pytrace=False)
    if len(cells) != 1:
        names = ", ".join(c.strategy for c in cells)
        pytest.fail(
            f"harness run_cell: the strategy expands to {len(cells)} cells ({names}); give options for one",
            pytrace=False,
        )
    cell = cells[0]
    out_dir = directory / "cell"
    if cell.skip_reason:
        record = cell_record(cell, "skipped", cell.skip_reason)
    else:
        record = _run_in_process(cell, host, out_dir, device, suite.sha256)
    write_json_atomic(out_dir / RECORD, record.to_json())
    return record


def _run_in_process(cell: Any, host: PluginHost, out_dir: Path, device: str, suite_sha256: str) -> Record:
    """:func:`harness.worker.cell.run_cell` as the worker calls it, turning an exception into a ``failed`` record; torch's
    deterministic-algorithms setting (which seeding changes) is restored afterwards."""
    import torch

    from harness.worker.cell import CellState
    from harness.worker.cell import run_cell as run_in_process
    from harness.worker.oom import describe_error

    deterministic = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    state = CellState(cell, "harness-testing", device)
    try:
        return run_in_process(cell, host, out_dir, device, "harness-testing", suite_sha256=suite_sha256, state=state)
    except Exception as exc:  # every failure becomes a record, as in the worker
        traceback.print_exc(file=sys.stderr)
        return state.record("failed", describe_error(exc))
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])


# -- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture
def harness_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[PluginRegistrar]:
    """``register(plugin, name=None) -> PluginHost``: the plugin is loaded by every plugin host until the test ends."""
    registrar = PluginRegistrar(monkeypatch)
    yield registrar
    for name in registrar.path_modules:  # a later test may write another module of the same name
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            sys.modules.pop(loaded, None)


def _numbered(tmp_path: Path, prefix: str) -> Path:
    index = 1
    while (tmp_path / f"{prefix}{index}").exists():
        index += 1
    folder = tmp_path / f"{prefix}{index}"
    folder.mkdir()
    return folder


@pytest.fixture
def harness_tiny_task(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """``make(kind="classification", n=64, **options) -> dict``: :func:`tiny_task` in a fresh folder of ``tmp_path``."""

    def make(kind: str = "classification", n: int = 64, **options: Any) -> dict[str, Any]:
        return tiny_task(_numbered(tmp_path, "harness-data-"), kind, n, **options)

    return make


@pytest.fixture
def harness_run_cell(tmp_path: Path) -> Callable[..., Record]:
    """``run(*, task=None, strategy="full", model=None, seed=0, budget=None, host=None, device="cpu") -> Record``:
    :func:`run_cell` in a fresh folder of ``tmp_path`` (``harness-run-1``, ``harness-run-2``, ...)."""

    def run(**kwargs: Any) -> Record:
        return run_cell(_numbered(tmp_path, "harness-run-"), **kwargs)

    return run
