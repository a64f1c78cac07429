"""Meta-tests: every hook is typed, documented and exercised by a test (datasette's test_plugin_hooks_*)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from harness.api import hookspecs
from harness.api.host import HOOK_KINDS

HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("harness_"))
TESTS = Path(__file__).resolve().parent


def test_every_hookspec_registers_a_component_kind():
    assert set(HOOKS) == set(HOOK_KINDS)


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_typed_and_documented(name):
    function = getattr(hookspecs, name)
    signature = inspect.signature(function)
    assert list(signature.parameters) == ["register"]
    assert signature.parameters["register"].annotation != inspect.Parameter.empty
    doc = inspect.getdoc(function) or ""
    assert len(doc.splitlines()[0]) > 20, f"{name} needs a one-line summary"
    assert ":param register:" in doc, f"{name} must document its parameter"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_implemented_by_a_builtin_plugin_and_exercised_by_a_test(name):
    from harness.api.host import PluginHost

    host = PluginHost.load()
    kind = HOOK_KINDS[name].kind
    assert host.names(kind), f"no built-in plugin implements {name}"
    sources = "\n".join(p.read_text() for p in TESTS.rglob("test_*.py") if p.name != Path(__file__).name)
    sources += "\n".join(p.read_text() for p in TESTS.rglob("*plugin*.py"))
    assert name in sources, f"no test module implements or calls {name}"
