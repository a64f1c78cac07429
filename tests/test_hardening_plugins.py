"""Plugins that would load without a word yet do nothing: hook functions without ``@hookimpl``, plugins that register
no component. Both are host problems, listed by ``harness plugins`` and failing ``harness plugins --check``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from harness.api.hookspecs import hookimpl
from harness.api.host import HOOK_KINDS, PluginHost

ROOT = Path(__file__).resolve().parents[1]

TASK = """
from harness.api.components import Task
from harness.api.hookspecs import hookimpl

class QA(Task):
    name = "qa"
    description = "question answering"
    def setup(self, options, ctx):
        raise AssertionError
"""
UNMARKED = TASK + "\ndef harness_register_tasks(register):\n    register(QA())\n"
MARKED = TASK + "\n@hookimpl\ndef harness_register_tasks(register):\n    register(QA())\n"
FIX = "decorate it with @hookimpl from harness.api.hookspecs"


@pytest.fixture(autouse=True)
def bare_host_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No entry points, no extra plugins from the environment: only what a test passes to ``load(extra=...)``."""
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "")
    monkeypatch.delenv("HARNESS_BLOCK_PLUGINS", raising=False)
    monkeypatch.delenv("HARNESS_EXTRA_PLUGINS", raising=False)


def module(name: str, source: str) -> types.ModuleType:
    made = types.ModuleType(name)
    exec(textwrap.dedent(source), made.__dict__)
    return made


def problems_of(*plugins: tuple[str, object]) -> list[str]:
    problems = PluginHost.load(extra=list(plugins)).problems
    assert all("\n" not in p for p in problems), problems
    return problems


def test_a_hook_without_hookimpl_is_one_problem_naming_plugin_module_function_and_fix():
    host = PluginHost.load(extra=[("qa", module("my_qa", UNMARKED))])
    assert host.problems == [
        "plugin 'qa' (module my_qa) defines 'harness_register_tasks' without the @hookimpl marker, so it is never "
        f"called; {FIX}"
    ]  # and no second line "registers nothing": the first says why
    assert host.names("task") == []


def test_an_unmarked_hook_beside_marked_ones_is_reported_and_the_others_still_count():
    source = MARKED + "\ndef harness_register_reporters(register):\n    pass\n"
    host = PluginHost.load(extra=[("mixed", module("my_mixed", source))])
    assert host.names("task") == ["qa"]
    assert host.problems == [
        "plugin 'mixed' (module my_mixed) defines 'harness_register_reporters' without the @hookimpl marker, so it is "
        f"never called; {FIX}"
    ]


@pytest.mark.parametrize("hook", sorted(HOOK_KINDS))
def test_every_hook_name_is_checked(hook):
    [problem] = problems_of(("p", module("my_p", f"def {hook}(register):\n    pass\n")))
    assert f"defines '{hook}' without the @hookimpl marker" in problem


def test_class_and_instance_plugins_are_checked_like_modules():
    class Unmarked:
        def harness_register_tasks(self, register):  # pragma: no cover - never called
            raise AssertionError

    class Marked:
        @hookimpl
        def harness_register_tasks(self, register):
            from harness.api.components import Task

            class T(Task):
                name = "t"
                description = "a task"

                def setup(self, options, ctx):  # pragma: no cover
                    raise AssertionError

            register(T())

    [problem] = problems_of(("inst", Unmarked()))
    assert problem.startswith("plugin 'inst' (module ") and "'harness_register_tasks' without the @hookimpl" in problem
    assert problem.endswith(FIX)
    assert problems_of(("marked", Marked())) == []


def test_helpers_and_non_callables_named_harness_are_not_reported():
    source = MARKED + "\nharness_register_strategies = None\ndef harness_helper():\n    pass\n"
    assert problems_of(("qa", module("my_qa", source))) == []


def test_a_plugin_with_no_hook_registers_nothing_and_says_how_to_fix_it():
    [problem] = problems_of(("empty", module("my_empty", "X = 1\n")))
    assert problem == (
        "plugin 'empty' (module my_empty) registers nothing: it implements no harness hook; define one "
        "(e.g. harness_register_tasks) decorated with @hookimpl from harness.api.hookspecs"
    )


def test_a_plugin_whose_hooks_never_call_register_registers_nothing():
    source = TASK + "\n@hookimpl\ndef harness_register_tasks(register):\n    return QA()  # forgot register\n"
    [problem] = problems_of(("lazy", module("my_lazy", source)))
    assert problem == (
        "plugin 'lazy' (module my_lazy) registers nothing: its harness_register_tasks never called register; "
        "call register(component) for each component"
    )


def test_no_registers_nothing_line_when_another_problem_explains_it():
    typo = TASK + "\n@hookimpl\ndef harness_register_task(register):\n    register(QA())\n"
    [problem] = problems_of(("typo", module("my_typo", typo)))
    assert "which is not a harness hook (did you mean 'harness_register_tasks'?)" in problem
    raising = TASK + "\n@hookimpl\ndef harness_register_tasks(register):\n    raise ValueError('no')\n"
    [problem] = problems_of(("raising", module("my_raising", raising)))
    assert problem.startswith("plugin 'raising' failed to register: ValueError")


def test_the_installed_plugins_have_none_of_these_problems(monkeypatch):
    monkeypatch.delenv("HARNESS_LOAD_PLUGINS")
    host = PluginHost.load()
    found = [p for p in host.problems if "@hookimpl" in p or "registers nothing" in p]
    assert not found, found


def test_an_entry_point_plugin_is_named_by_entry_point_and_module(tmp_path, monkeypatch):
    site = tmp_path / "site"
    info = site / "harness_unmarked-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-unmarked\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[harness]\nunmarked = thirdparty_unmarked\n")
    (site / "thirdparty_unmarked.py").write_text(textwrap.dedent(UNMARKED))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "unmarked")
    try:
        host = PluginHost.load()
    finally:
        sys.modules.pop("thirdparty_unmarked", None)
    assert host.problems == [
        "plugin 'unmarked' (module thirdparty_unmarked) defines 'harness_register_tasks' without the @hookimpl "
        f"marker, so it is never called; {FIX}"
    ]


def _harness(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=300)


def test_plugins_lists_them_and_check_exits_1(tmp_path):
    (tmp_path / "cli_unmarked.py").write_text(textwrap.dedent(UNMARKED))
    (tmp_path / "cli_empty.py").write_text("X = 1\n")
    env = {
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "HARNESS_LOAD_PLUGINS": "",
        "HARNESS_EXTRA_PLUGINS": "unmarked=cli_unmarked,empty=cli_empty",
    }
    listed = _harness("plugins", env=env)
    assert listed.returncode == 0, listed.stderr
    problems = listed.stdout.split("problems:\n", 1)[1].splitlines()
    assert problems == [
        "  plugin 'unmarked' (module cli_unmarked) defines 'harness_register_tasks' without the @hookimpl marker, "
        f"so it is never called; {FIX}",
        "  plugin 'empty' (module cli_empty) registers nothing: it implements no harness hook; define one "
        "(e.g. harness_register_tasks) decorated with @hookimpl from harness.api.hookspecs",
    ]
    checked = _harness("plugins", "--check", "--json", env=env)
    assert checked.returncode == 1, checked.stderr
    assert "Traceback" not in checked.stderr
    assert [p.split(" ", 2)[1] for p in json.loads(checked.stdout)["problems"]] == ["'unmarked'", "'empty'"]
