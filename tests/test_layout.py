"""The house: sub-packages whose imports flow one way (import-linter contracts in pyproject.toml), no import circles,
a light plugin API, and API 2's module names kept for one version with a DeprecationWarning."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from harness import _moved

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    """``lint-imports`` (layers: cli/testing > run/report > worker/planning > tasklib > api > results > errors;
    forbidden: torch and the cell runtime in api/planning/results/report; harness internals in plugins)."""
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if command is None:
        pytest.skip("import-linter is not installed (the test extra installs it)")
    result = subprocess.run([command, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 5 kept, 0 broken." in result.stdout


def test_every_plugin_module_is_under_a_plugin_contract():
    """The plugin contracts name plugin modules (import-linter has no "all but"): a new module must be added to one."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["importlinter"]["contracts"]
    listed = [m for c in contracts if c["id"] in ("plugins", "reporters", "executors") for m in c["source_modules"]]
    assert len(listed) == len(set(listed))
    modules = {f"harness_plugins.{p.stem}" for p in (ROOT / "plugins").glob("*.py") if p.stem != "__init__"}
    modules |= {f"harness_plugins.{p.name}" for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").is_file()}
    assert modules == set(listed)


def test_no_import_circles():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("harness", "harness_plugins", exclude_type_checking_imports=True)
    circles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if module < imported and graph.chain_exists(importer=imported, imported=module):
                circles.append((module, imported))
    assert not circles, circles


def test_the_root_holds_only_the_cli_errors_and_packages():
    modules = sorted(p.name for p in (ROOT / "harness").glob("*.py"))
    assert modules == ["__init__.py", "_moved.py", "cli.py", "errors.py"]
    packages = sorted(p.name for p in (ROOT / "harness").iterdir() if (p / "__init__.py").is_file())
    assert packages == ["api", "planning", "report", "results", "run", "tasklib", "testing", "worker"]


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_api2_module_names_still_import_with_a_warning(old):
    new = importlib.import_module(f"harness.{_moved.MOVED[old]}")
    sys.modules.pop(f"harness.{old}", None)
    with pytest.warns(DeprecationWarning, match=rf"harness\.{old} moved to harness\.{_moved.MOVED[old]}"):
        module = importlib.import_module(f"harness.{old}")
    assert module is new  # one module under both names: patching either patches both


def test_names_that_moved_with_their_module_are_still_there():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from harness.cell import save_artifact
        from harness.estimates import dtype_bytes
        from harness.plan import Cell
        from harness.stats import ItemStats
        from harness.suite import offline
        from harness.text2text import Prompt
    from harness.api.cells import Cell as NewCell
    from harness.api.components import dtype_bytes as new_dtype_bytes
    from harness.api.components import save_artifact as new_save_artifact
    from harness.api.itemstats import ItemStats as NewItemStats
    from harness.api.paths import offline as new_offline
    from harness.tasklib.prompts import Prompt as NewPrompt

    assert (Cell, ItemStats, offline, Prompt, save_artifact, dtype_bytes) == (
        NewCell, NewItemStats, new_offline, NewPrompt, new_save_artifact, new_dtype_bytes)  # fmt: skip


@pytest.mark.parametrize(("package", "name", "home"), [
    ("report", "load_rows", "harness.report.rows"), ("report", "format_mean_std", "harness.report.tables"),
    ("worker", "describe_error", "harness.worker.oom"), ("worker", "run_spec", "harness.worker.main"),
])  # fmt: skip
def test_old_module_level_names_of_packages_warn(package, name, home):
    with pytest.warns(DeprecationWarning, match=rf"harness\.{package}\.{name} moved"):
        value = getattr(importlib.import_module(f"harness.{package}"), name)
    assert value is getattr(importlib.import_module(home), name)
    module = importlib.import_module(f"harness.{package}")
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


def test_the_plugin_api_is_light_and_complete():
    """``harness.api`` is the one face plugins import; importing it (and listing plugins) loads no torch, numpy or
    transformers."""
    code = (
        "import json, sys; import harness.api as api; from harness.api.inventory import plugin_inventory; "
        "plugin_inventory(); print(json.dumps({'heavy': sorted(m for m in ('torch', 'numpy', 'transformers', "
        "'scipy', 'peft') if m in sys.modules), 'names': sorted(api.__all__)}))"
    )
    env = {**os.environ, "HARNESS_LOAD_PLUGINS": "sources,classification,ner,full,peft,local,reporters"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["heavy"] == []
    import harness.api as api

    for name in found["names"]:
        assert getattr(api, name) is not None
    assert {"Task", "TaskRun", "Strategy", "ModelSource", "Executor", "Reporter", "hookimpl", "Option", "Cell",
            "CellContext", "CheckContext", "ItemStats", "HarnessError", "Problem"} <= set(found["names"])  # fmt: skip


def test_python_m_harness_worker_still_runs_the_worker(tmp_path):
    result = subprocess.run([sys.executable, "-m", "harness.worker"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "usage: python -m harness.worker SPEC_PATH" in result.stderr
