"""Plugin discovery: entry points, third-party distributions, failures, conflicts, allow/block lists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.api.host import PluginHost
from harness.errors import HarnessError

ROOT = Path(__file__).resolve().parents[1]

TASK_MODULE = """
from harness.api.components import Task
from harness.api.hookspecs import hookimpl

class QA(Task):
    name = "{task}"
    description = "extractive question answering"
    def setup(self, options, ctx):
        raise AssertionError

@hookimpl
def harness_register_tasks(register):
    register(QA())
"""


def make_dist(site: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """An installed distribution on a path: a .dist-info folder with its entry points, plus its modules."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {value}" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[harness]\n{lines}\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path, monkeypatch):
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    monkeypatch.delenv("HARNESS_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("HARNESS_BLOCK_PLUGINS", raising=False)
    yield path
    for name in list(sys.modules):
        if name.startswith("thirdparty_"):
            del sys.modules[name]


def test_builtins_register_through_entry_points():
    host = PluginHost.load()
    builtin = {p.name: p for p in host.plugins if p.module.startswith("harness_plugins.")}
    assert {"sources", "classification", "full", "local", "reporters"} <= set(builtin)
    assert all(p.distribution == "tuning-harness" for p in builtin.values())  # third-party packages may be installed
    assert not [p for p in host.plugins if p.error], host.problems
    assert "classification" in host.names("task") and "full" in host.names("strategy")
    assert {"hub", "local", "tiny"} <= set(host.names("model source"))
    assert "local" in host.names("executor") and {"table", "json", "csv", "markdown"} <= set(host.names("reporter"))


def test_third_party_distribution_appears_with_its_version(site):
    make_dist(site, "harness-qa", "2.3.1", {"qa": "thirdparty_qa"}, {"thirdparty_qa": TASK_MODULE.format(task="qa")})
    host = PluginHost.load()
    info = next(p for p in host.plugins if p.name == "qa")
    assert (info.distribution, info.version, info.error) == ("harness-qa", "2.3.1", None)
    assert info.components == {"task": ["qa"]}
    assert host.task("qa").description == "extractive question answering"


def test_plugin_failing_at_import_is_reported_and_others_load(site):
    make_dist(site, "broken", "0.1", {"broken": "thirdparty_broken"}, {"thirdparty_broken": "raise RuntimeError('boom')"})
    host = PluginHost.load()
    broken = next(p for p in host.plugins if p.name == "broken")
    assert broken.error == "RuntimeError: boom"
    assert "plugin 'broken' failed to import: RuntimeError: boom" in host.problems
    assert "classification" in host.names("task")


def test_plugin_failing_at_registration_registers_nothing(site):
    source = TASK_MODULE.format(task="half") + textwrap.dedent(
        """
        @hookimpl
        def harness_register_strategies(register):
            raise ValueError("bad strategy")
        """
    )
    make_dist(site, "half", "0.1", {"half": "thirdparty_half"}, {"thirdparty_half": source})
    host = PluginHost.load()
    assert "half" not in host.names("task")
    assert any("plugin 'half' failed to register: ValueError in harness_register_strategies: bad strategy" in p for p in host.problems)


def test_same_component_name_from_two_plugins_is_a_reported_conflict(site):
    make_dist(site, "one", "1", {"one": "thirdparty_one"}, {"thirdparty_one": TASK_MODULE.format(task="classification")})
    host = PluginHost.load()
    assert any("task 'classification' is registered by plugin 'classification' and by plugin 'one'" in p for p in host.problems)
    with pytest.raises(HarnessError, match="registered by plugins 'classification' and 'one'"):
        host.task("classification")


def test_duplicate_entry_point_names_are_reported_not_dropped(site):
    make_dist(site, "dup-a", "1", {"dupe": "thirdparty_dupa"}, {"thirdparty_dupa": TASK_MODULE.format(task="dupa")})
    make_dist(site, "dup-b", "1", {"dupe": "thirdparty_dupb"}, {"thirdparty_dupb": TASK_MODULE.format(task="dupb")})
    host = PluginHost.load()
    assert any("entry point 'dupe' is declared twice" in p for p in host.problems)
    assert {"dupa", "dupb"} <= set(host.names("task"))  # both loaded


def test_allow_and_block_lists(site, monkeypatch):
    make_dist(site, "harness-qa", "1", {"qa": "thirdparty_qa"}, {"thirdparty_qa": TASK_MODULE.format(task="qa")})
    monkeypatch.setenv("HARNESS_BLOCK_PLUGINS", "qa, full")
    host = PluginHost.load()
    assert "qa" not in host.names("task") and "full" not in host.names("strategy")
    monkeypatch.delenv("HARNESS_BLOCK_PLUGINS")
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "qa")
    assert [p.name for p in PluginHost.load().plugins] == ["qa"]


def test_newer_api_refused_and_unknown_hooks_reported(site):
    newer = TASK_MODULE.format(task="future") + "\nHARNESS_API_VERSION = 99\n"
    typo = TASK_MODULE.format(task="typo") + (
        "\ndef harness_register_task(register):\n    pass\n"  # misspelled, unmarked
        "\n@hookimpl\ndef harness_strategies(register):\n    pass\n"  # marked, unknown
        "\ndef harness_helper():\n    pass\n"  # an ordinary function: not a hook, not reported
    )
    make_dist(site, "future", "1", {"future": "thirdparty_future", "typo": "thirdparty_typo"},
              {"thirdparty_future": newer, "thirdparty_typo": typo})
    host = PluginHost.load()
    assert any("plugin 'future' refused: needs harness hook API 99" in p for p in host.problems)
    assert "future" not in host.names("task")
    assert any("'harness_register_task', which is not a harness hook (did you mean 'harness_register_tasks'?)" in p
               for p in host.problems)
    assert any("'harness_strategies', which is not a harness hook" in p for p in host.problems)
    assert not any("harness_helper" in p for p in host.problems)


def test_lookup_errors_suggest_names():
    host = PluginHost.load()
    with pytest.raises(HarnessError, match=r"unknown strategy 'ful' \(did you mean 'full'\?\); available: .*full"):
        host.strategy("ful")


def test_hosts_are_built_per_session_not_shared():
    first, second = PluginHost.load(), PluginHost.load()
    assert first.pm is not second.pm
    assert first.task("classification") is not second.task("classification")


def _harness(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def test_harness_plugins_json_lists_everything_and_does_not_import_torch(site):
    make_dist(site, "harness-qa", "2.0", {"qa": "thirdparty_qa"}, {"thirdparty_qa": TASK_MODULE.format(task="qa")})
    make_dist(site, "broken", "0.1", {"broken": "thirdparty_broken"}, {"thirdparty_broken": "import nonexistent_xyz"})
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    out = _harness("plugins", "--json", env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    names = {p["name"]: p for p in data["plugins"]}
    assert names["qa"]["distribution"] == "harness-qa" and names["qa"]["version"] == "2.0"
    assert names["broken"]["error"].startswith("ModuleNotFoundError")
    assert any(t["name"] == "qa" and t["plugin"] == "qa" for t in data["components"]["task"])
    lora = next(s for s in data["components"]["strategy"] if s["name"] == "lora")
    assert lora["budget_defaults"]["learning_rate"] == 5e-4  # what the README says --json shows
    text = _harness("plugins", env=env)
    assert "qa" in text.stdout and "FAILED: ModuleNotFoundError" in text.stdout
    assert _harness("plugins", "--check", env=env).returncode == 1
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from harness.cli import cli; sys.argv=['harness','plugins'];\n"
         "try:\n  cli()\nexcept SystemExit: pass\n"
         "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'"],
        capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr


@pytest.mark.slow
def test_pip_installed_third_party_package_is_discovered(tmp_path):
    """A real third-party package, built and pip-installed into a temporary path."""
    pkg = tmp_path / "pkg"
    (pkg / "thirdparty_real").mkdir(parents=True)
    (pkg / "thirdparty_real" / "__init__.py").write_text(TASK_MODULE.format(task="real-qa"))
    (pkg / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "harness-real-qa"
        version = "0.4.0"
        [project.entry-points.harness]
        real_qa = "thirdparty_real"
        [tool.setuptools]
        packages = ["thirdparty_real"]
    """))
    target = tmp_path / "target"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--no-index", "--target", str(target), str(pkg)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    out = _harness("plugins", "--json", env={"PYTHONPATH": str(target)})
    data = json.loads(out.stdout)
    real = next(p for p in data["plugins"] if p["name"] == "real_qa")
    assert (real["distribution"], real["version"], real["components"]) == ("harness-real-qa", "0.4.0", {"task": ["real-qa"]})


def _module(name: str, source: str):
    import types

    module = types.ModuleType(name)
    exec(textwrap.dedent(source), module.__dict__)
    return module


def test_bad_api_versions_empty_and_doubled_names_are_one_line_problems(monkeypatch):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "")
    text_version = _module("textversion", TASK_MODULE.format(task="t1") + '\nHARNESS_API_VERSION = "3"\n')
    nameless = _module("nameless", TASK_MODULE.format(task=""))
    twice = _module("twice", TASK_MODULE.format(task="t2").replace("register(QA())", "register(QA())\n    register(QA())"))
    host = PluginHost.load(extra=[("textversion", text_version), ("nameless", nameless), ("twice", twice)])
    assert "plugin 'textversion' refused: HARNESS_API_VERSION must be a positive integer, got '3'" in host.problems
    assert any(p.startswith("plugin 'nameless' registered a task without a name") for p in host.problems)
    assert "plugin 'twice' registers task 't2' twice; the first is kept" in host.problems
    assert host.names("task") == ["t2"] and host.lookup_problem("task", "t2") is None
    assert all("\n" not in p for p in host.problems)


def test_a_wrong_hook_argument_name_is_one_line(monkeypatch):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "")
    wrong = _module("wrongarg", TASK_MODULE.format(task="w").replace("(register):", "(reg):").replace(
        "register(QA())", "reg(QA())"))
    host = PluginHost.load(extra=[("wrongarg", wrong)])
    [problem] = host.problems
    assert problem.startswith("plugin 'wrongarg' failed to register: PluginValidationError") and "\n" not in problem


def test_a_reporter_of_hook_api_1_is_given_the_rows(monkeypatch):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "")
    old = _module("oldreporter", """
        from harness.api.components import Reporter
        from harness.api.hookspecs import hookimpl

        HARNESS_API_VERSION = 1

        class Count(Reporter):
            name = "count"
            description = "how many cells"
            def render(self, rows):
                return f"{len(rows)} cells"

        @hookimpl
        def harness_register_reporters(register):
            register(Count())
    """)
    host = PluginHost.load(extra=[("oldreporter", old)])
    from types import SimpleNamespace

    assert host.problems == []
    reporter = host.reporter("count")
    assert reporter.description == "how many cells"
    assert reporter.render(SimpleNamespace(rows=[{}, {}, {}])) == "3 cells"
