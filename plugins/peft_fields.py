"""The fields of the installed peft's config dataclasses, read from peft's source with :mod:`ast` — never imported,
so ``harness validate`` and ``harness plugins`` check the ``peft`` table of a strategy without loading torch."""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PeftField:
    """A field of a peft config as its source declares it: the value kinds it takes and its Literal choices."""

    name: str
    annotation: str
    kinds: frozenset[str]
    choices: tuple[Any, ...] = ()

    def accepts(self, value: Any) -> bool:
        """Whether a suite value (TOML: no null) fits the annotation."""
        return _fits(self.kinds, value) or (not isinstance(value, (list, dict)) and value in self.choices)


def _fits(kinds: frozenset[str] | set[str], value: Any) -> bool:
    if "any" in kinds:
        return True
    if isinstance(value, bool):
        return "bool" in kinds
    if isinstance(value, int):
        return bool({"int", "float"} & kinds)
    if isinstance(value, float):
        return "float" in kinds
    if isinstance(value, str):
        return "str" in kinds
    if isinstance(value, Mapping):
        return "dict" in kinds
    if isinstance(value, list):
        items = [k[5:-1] for k in kinds if k.startswith("list[")]
        return "list" in kinds or any(all(_fits({item}, v) for v in value) for item in items)
    return False


def _kinds(node: ast.expr, enums: set[str]) -> tuple[set[str], list[Any]]:
    """Value kinds (and Literal choices) an annotation admits; unknown names admit anything."""
    if isinstance(node, ast.Constant):
        if node.value is None:
            return set(), []
        return _kinds(ast.parse(node.value, mode="eval").body, enums) if isinstance(node.value, str) else ({"any"}, [])
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        (a, ca), (b, cb) = _kinds(node.left, enums), _kinds(node.right, enums)
        return a | b, ca + cb
    if isinstance(node, ast.Name) or isinstance(node, ast.Attribute):
        name = node.id if isinstance(node, ast.Name) else node.attr
        simple = {"int": "int", "float": "float", "bool": "bool", "str": "str", "dict": "dict", "list": "list"}
        if name in simple:
            return {simple[name]}, []
        if name in enums:
            return {"str"}, []
        return ({"dict"} if name.endswith("Config") else {"any"}), []
    if isinstance(node, ast.Subscript):
        outer = node.value.id if isinstance(node.value, ast.Name) else getattr(node.value, "attr", "")
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if outer in ("Optional", "Union"):
            kinds: set[str] = set()
            choices: list[Any] = []
            for arg in args:
                k, c = _kinds(arg, enums)
                kinds, choices = kinds | k, choices + c
            return kinds, choices
        if outer == "Literal":
            return set(), [a.value for a in args if isinstance(a, ast.Constant)]
        if outer in ("list", "List", "tuple", "Tuple", "Sequence"):
            item, _ = _kinds(args[0], enums)
            return (
                {f"list[{next(iter(item))}]"} if len(item) == 1 and item <= {"int", "str", "float"} else {"list"}
            ), []
        if outer in ("dict", "Dict", "Mapping"):
            return {"dict"}, []
    return {"any"}, []


def peft_root() -> Path | None:
    try:
        spec = importlib.util.find_spec("peft")  # finds the package without importing it (or torch)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=None)
def peft_fields(chain: tuple[tuple[str, str], ...]) -> dict[str, PeftField] | None:
    """The fields of the installed peft's config classes ``chain`` ((file in the package, class), base first), read
    from their source; ``None`` when peft or a class cannot be found (keys are then checked in the worker)."""
    root = peft_root()
    if root is None:
        return None
    fields: dict[str, PeftField] = {}
    try:
        for relative, class_name in chain:
            tree = ast.parse((root / relative).read_text(encoding="utf-8"))
            classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
            enums = {n.name for n in classes if any("Enum" in ast.unparse(b) for b in n.bases)}
            body = next(n for n in classes if n.name == class_name)
            for stmt in body.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    kinds, choices = _kinds(stmt.annotation, enums)
                    name = stmt.target.id
                    fields[name] = PeftField(name, ast.unparse(stmt.annotation), frozenset(kinds), tuple(choices))
    except (OSError, SyntaxError, ValueError, TypeError, AttributeError, IndexError, StopIteration):
        return None  # another peft layout: the worker checks the keys against the real dataclass
    return fields
