"""Meta-tests of the plugin-author reference: docs/hooks.md and docs/components.md against the code.

* every hook of :mod:`harness.api.hookspecs` appears in docs/hooks.md with its exact signature (rendered from
  ``inspect.signature``), with a section saying whether its first result wins, and the document defines no hook that
  does not exist; every example plugin module in it loads and registers a component;
* every hook has a test here: a tiny in-memory plugin implementing only that hook registers a dummy component that
  ``PluginHost.get`` then finds (plus the duplicate-name and wrong-type rules), parametrized over the hookspecs, so a
  new hook without an entry in :data:`DUMMIES` fails;
* every public method and class attribute of the classes a plugin author uses (:mod:`harness.api.components`, the errors,
  :class:`harness.api.options.Option`) appears in docs/components.md's class stubs with its exact signature, and the stubs
  document nothing that does not exist.
"""

from __future__ import annotations

import ast
import copy
import inspect
import re
import textwrap
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import errors
from harness.api import components, hookspecs, options
from harness.api.components import Component, Executor, ModelSource, Reporter, Strategy, Task
from harness.api.host import HOOK_KINDS, PluginHost
from harness.errors import HarnessError

ROOT = Path(__file__).resolve().parents[1]
HOOKS_MD = ROOT / "docs" / "hooks.md"
COMPONENTS_MD = ROOT / "docs" / "components.md"

HOOKS = sorted(name for name, value in vars(hookspecs).items() if name.startswith("harness_") and callable(value))


# -- rendering signatures ----------------------------------------------------------------------------------------
class _Text:
    """An annotation string that ``inspect`` prints as it is (no quotes)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _unquoted(annotation: Any) -> Any:
    return _Text(annotation) if isinstance(annotation, str) else annotation


def signature_text(name: str, function: Callable[..., Any]) -> str:
    """``def name(params) -> ret`` as written in source under ``from __future__ import annotations``."""
    signature = inspect.signature(function)
    parameters = [p.replace(annotation=_unquoted(p.annotation)) for p in signature.parameters.values()]
    signature = signature.replace(parameters=parameters, return_annotation=_unquoted(signature.return_annotation))
    return f"def {name}{signature}"


def python_blocks(path: Path) -> list[str]:
    """The ```python blocks of a Markdown file (none when it is missing: the tests using them then fail)."""
    if not path.is_file():
        return []
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def section(text: str, hook: str) -> str:
    """The part of hooks.md under the heading naming ``hook`` (up to the next heading of that level or above)."""
    match = re.search(rf"^(#+) `{hook}`\s*$", text, flags=re.M)
    assert match, f"docs/hooks.md has no heading `{hook}`"
    level = len(match.group(1))
    end = re.search(rf"^#{{1,{level}}} ", text[match.end() :], flags=re.M)
    return text[match.end() : match.end() + end.start()] if end else text[match.end() :]


@pytest.fixture
def bare_host_env(monkeypatch):
    """No entry points, no extra plugins from the environment: only what a test passes to ``load(extra=...)``."""
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "")
    monkeypatch.delenv("HARNESS_BLOCK_PLUGINS", raising=False)
    monkeypatch.delenv("HARNESS_EXTRA_PLUGINS", raising=False)


# -- (a) docs/hooks.md -------------------------------------------------------------------------------------------
def test_hooks_are_found():
    assert HOOKS and set(HOOKS) == set(HOOK_KINDS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_reference_has_the_exact_signature(hook):
    expected = signature_text(hook, getattr(hookspecs, hook))
    blocks = "\n".join(python_blocks(HOOKS_MD))
    assert expected in blocks, f"docs/hooks.md must show `{expected}` in a python code block"
    assert expected in section(HOOKS_MD.read_text(encoding="utf-8"), hook), f"put `{expected}` in the {hook} section"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_reference_says_whether_the_first_result_wins(hook):
    spec_options = getattr(getattr(hookspecs, hook), f"{hookspecs.PROJECT}_spec")
    expected = "**First result wins:** " + ("yes" if spec_options.get("firstresult") else "no")
    assert expected in section(HOOKS_MD.read_text(encoding="utf-8"), hook)


def test_hook_reference_defines_no_unknown_hook():
    text = HOOKS_MD.read_text(encoding="utf-8")
    documented = set(re.findall(r"^#+ `(harness_\w+)`", text, flags=re.M))
    documented |= set(re.findall(r"\bdef (harness_\w+)\(", "\n".join(python_blocks(HOOKS_MD))))
    unknown = documented - set(HOOKS)
    assert not unknown, f"docs/hooks.md documents hooks that harness.api.hookspecs lacks: {sorted(unknown)}"
    assert set(HOOKS) <= documented


def test_hook_reference_states_the_current_api_version():
    assert f"API_VERSION = {hookspecs.API_VERSION}" in HOOKS_MD.read_text(encoding="utf-8")


def _example_modules() -> list[tuple[str, str]]:
    """The example plugin modules of docs/hooks.md: its python blocks using ``@hookimpl``."""
    blocks = [b for b in python_blocks(HOOKS_MD) if "@hookimpl" in b]
    return [(f"hooks_md_example_{i}", block) for i, block in enumerate(blocks)]


@pytest.mark.parametrize(("name", "source"), _example_modules(), ids=[name for name, _ in _example_modules()])
def test_hook_reference_examples_load_and_register(name, source, bare_host_env):
    module = types.ModuleType(name)
    exec(compile(source, f"docs/hooks.md:{name}", "exec"), module.__dict__)
    host = PluginHost.load(extra=[(name, module)])
    assert not host.problems, host.problems
    [info] = host.plugins
    assert info.error is None and info.components, f"{name} registers nothing"
    for kind, names in info.components.items():
        for component_name in names:
            assert host.get(kind, component_name).name == component_name


def test_every_hook_has_an_example():
    hooks_in_examples = {h for _, source in _example_modules() for h in re.findall(r"def (harness_\w+)\(", source)}
    assert set(HOOKS) <= hooks_in_examples, f"hooks without an example: {sorted(set(HOOKS) - hooks_in_examples)}"


# -- (b) every hook has a test: an in-memory plugin implementing only that hook ----------------------------------
def _dummy(base: type[Component], **methods: Callable[..., Any]) -> Callable[[str], Component]:
    def make(name: str) -> Component:
        cls = type(f"Dummy{base.__name__}", (base,), {"name": name, "description": f"a dummy {base.kind}", **methods})
        return cls()

    return make


def _never(*args: Any, **kwargs: Any) -> Any:  # pragma: no cover - heavy methods are never called here
    raise AssertionError("a heavy method was called while loading plugins")


#: Hook name -> factory of a minimal component of the kind it registers. A new hook needs an entry here.
DUMMIES: dict[str, Callable[[str], Component]] = {
    "harness_register_tasks": _dummy(Task, setup=_never),
    "harness_register_strategies": _dummy(Strategy, apply=_never),
    "harness_register_model_sources": _dummy(ModelSource, family=lambda self, options, ctx: "encoder", open=_never),
    "harness_register_executors": _dummy(Executor, execute=_never),
    "harness_register_reporters": _dummy(Reporter, render=lambda self, report: "dummy"),
}


def plugin_module(hook: str, *registered: Component, calls: list[str] | None = None) -> types.ModuleType:
    """A plugin module implementing only ``hook``, registering ``registered``."""
    module = types.ModuleType(f"hookref_{hook}")

    def implementation(register: Callable[[Component], None]) -> None:
        if calls is not None:
            calls.append(hook)
        for component in registered:
            register(component)

    implementation.__name__ = hook
    setattr(module, hook, hookspecs.hookimpl(implementation))
    return module


def _factory(hook: str) -> Callable[[str], Component]:
    assert hook in HOOK_KINDS, f"{hook} is a hookspec but harness.api.host.HOOK_KINDS does not map it to a component class"
    assert hook in DUMMIES, (
        f"add a factory of a minimal {HOOK_KINDS[hook].__name__} for {hook} to DUMMIES in tests/test_hook_reference.py"
    )
    return DUMMIES[hook]


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_registers_a_component_found_by_the_host(hook, bare_host_env):
    component = _factory(hook)(f"dummy-{hook}")
    base = HOOK_KINDS[hook]
    assert isinstance(component, base)
    calls: list[str] = []
    host = PluginHost.load(extra=[("dummy", plugin_module(hook, component, calls=calls))])
    assert not host.problems, host.problems
    assert calls == [hook], "each implementation is called exactly once per load"
    assert host.get(base.kind, component.name) is component
    assert host.names(base.kind) == [component.name]
    assert host.plugins[0].components == {base.kind: [component.name]}
    assert all(host.names(other.kind) == [] for other in HOOK_KINDS.values() if other is not base)
    PluginHost.load(extra=[("dummy", plugin_module(hook, component, calls=calls))])
    assert calls == [hook, hook], "every load (main process, each worker) calls the implementation again"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_duplicate_names_are_a_conflict(hook, bare_host_env):
    make, kind = _factory(hook), HOOK_KINDS[hook].kind
    host = PluginHost.load(
        extra=[("one", plugin_module(hook, make("same"))), ("two", plugin_module(hook, make("same")))]
    )
    assert any(f"{kind} 'same' is registered by plugin 'one' and by plugin 'two'" in p for p in host.problems)
    with pytest.raises(HarnessError, match="registered by plugins 'one' and 'two'"):
        host.get(kind, "same")


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_refuses_a_component_of_another_kind(hook, bare_host_env):
    other = next(h for h in HOOKS if HOOK_KINDS[h] is not HOOK_KINDS[hook])
    good, wrong = _factory(hook)("good"), _factory(other)("wrong")
    host = PluginHost.load(extra=[("mixed", plugin_module(hook, good, wrong))])
    expected = f"plugin 'mixed' failed to register: TypeError in {hook}"
    assert any(p.startswith(expected) for p in host.problems), host.problems
    assert host.names(HOOK_KINDS[hook].kind) == [], "a plugin that fails to register registers nothing"


# -- (c) docs/components.md --------------------------------------------------------------------------------------
#: Module -> the classes plugin authors use from it, each documented by a class stub in docs/components.md.
DOCUMENTED: dict[types.ModuleType, list[str]] = {
    components: sorted(
        name
        for name, value in vars(components).items()
        if inspect.isclass(value) and value.__module__ == components.__name__
    ),
    errors: ["Problem", "HarnessError", "ValidationError"],
    options: ["Option"],
}


def _public(name: str) -> bool:
    return not name.startswith("_") or name == "__init__"


def _decorators(node: ast.FunctionDef) -> set[str]:
    names = {ast.unparse(d).split("(")[0].rsplit(".", 1)[-1] for d in node.decorator_list}
    return names & {"property", "abstractmethod", "classmethod", "staticmethod"}


def _function_from_stub(node: ast.FunctionDef) -> Callable[..., Any]:
    """A function with the stub's signature (annotations kept as strings; defaults evaluated)."""
    bare = copy.copy(node)
    bare.body, bare.decorator_list = [ast.Pass()], []
    source = "from __future__ import annotations\n" + ast.unparse(ast.fix_missing_locations(bare))
    namespace: dict[str, Any] = {}
    exec(compile(source, "docs/components.md", "exec", dont_inherit=True), namespace)
    return namespace[node.name]


def _attributes(body: list[ast.stmt]) -> dict[str, str]:
    """Class-level ``name: annotation = value`` lines as written (normalised by ``ast.unparse``)."""
    found = {}
    for stmt in body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and _public(stmt.target.id):
            value = f" = {ast.unparse(stmt.value)}" if stmt.value is not None else ""
            found[stmt.target.id] = f"{stmt.target.id}: {ast.unparse(stmt.annotation)}{value}"
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name) and _public(target.id):
                    found[target.id] = f"{target.id} = {ast.unparse(stmt.value)}"
    return found


def _stubs() -> dict[str, ast.ClassDef]:
    """Class stubs of docs/components.md by name (only names of documented classes; examples are ignored)."""
    wanted = {name for names in DOCUMENTED.values() for name in names}
    stubs: dict[str, ast.ClassDef] = {}
    for block in python_blocks(COMPONENTS_MD):
        for node in ast.parse(block).body:
            if isinstance(node, ast.ClassDef) and node.name in wanted:
                assert node.name not in stubs, f"docs/components.md has two stubs of class {node.name}"
                stubs[node.name] = node
    return stubs


def _documented_classes() -> list[tuple[types.ModuleType, str]]:
    return [(module, name) for module, names in DOCUMENTED.items() for name in names]


@pytest.mark.parametrize(("module", "name"), _documented_classes(), ids=lambda v: getattr(v, "__name__", v))
def test_component_reference_matches_the_class(module, name):
    cls = getattr(module, name)
    stub = _stubs().get(name)
    assert stub is not None, f"docs/components.md needs a python class stub `class {name}`"
    source = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    assert isinstance(source, ast.ClassDef)
    assert [ast.unparse(b) for b in stub.bases] == [ast.unparse(b) for b in source.bases], f"{name}: base classes"
    decorators = [[ast.unparse(d) for d in node.decorator_list] for node in (stub, source)]
    assert decorators[0] == decorators[1], f"{name}: class decorators (dataclass)"

    real = {n.name: n for n in source.body if isinstance(n, ast.FunctionDef) and _public(n.name)}
    documented = {n.name: n for n in stub.body if isinstance(n, ast.FunctionDef)}
    assert set(documented) - set(real) == set(), f"docs/components.md documents methods {name} lacks"
    assert set(real) - set(documented) == set(), f"docs/components.md lacks methods of {name}"
    for method, node in real.items():
        attribute = inspect.getattr_static(cls, method)
        function = attribute.fget if isinstance(attribute, property) else getattr(attribute, "__func__", attribute)
        expected = signature_text(method, function)
        assert signature_text(method, _function_from_stub(documented[method])) == expected, f"{name}.{method}"
        assert _decorators(documented[method]) == _decorators(node), f"{name}.{method}: decorators (abstract, property)"

    assert _attributes(stub.body) == _attributes(source.body), f"{name}: class attributes and their defaults"


def test_component_reference_names_the_report_fields():
    from dataclasses import fields

    from harness.report.reporting import Report

    text = COMPONENTS_MD.read_text(encoding="utf-8")
    missing = [f.name for f in fields(Report) if f"`{f.name}`" not in text]
    assert not missing, f"docs/components.md does not describe Report fields {missing}"
