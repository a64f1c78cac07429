"""Options declared with types, defaults and descriptions by the component that owns them.

Every task, strategy, model source and the training budget declare their options as a tuple of :class:`Option`.
:func:`check_options` validates a table from a suite file against them and returns *all* problems at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.api.paths import resolve_path
from harness.errors import Problem


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

#: Option kinds: python scalar types, lists, and paths (a path must exist, relative to the suite file or ``pkg:``).
KINDS = ("str", "int", "float", "bool", "path", "list[str]", "list[int]", "list[float]", "table", "int|list[int]")


@dataclass(frozen=True)
class Option:
    """One declared option.

    :param name: the key users write in the suite file.
    :param kind: one of :data:`KINDS`. ``float`` accepts integers; ``path`` must exist; ``table`` is a free mapping.
    :param default: the value when the key is absent; :data:`REQUIRED` makes the key mandatory; ``None`` is "unset".
    :param help: one line for the suite reference.
    :param choices: allowed values, when the set is closed.
    """

    name: str
    kind: str
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name!r}: unknown kind {self.kind!r}; expected one of {KINDS}")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def did_you_mean(word: str, candidates: Sequence[str]) -> str:
    """``" (did you mean 'x'?)"`` when a close candidate exists, else ``""``."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _initials(name: str) -> str:
    """``"lr"`` for ``"learning_rate"``: the first letter of each ``_``-separated word of a name of two or more."""
    words = [w for w in name.split("_") if w]
    return "".join(w[0] for w in words) if len(words) > 1 else ""


def _close_key(key: str, candidates: Sequence[str]) -> str | None:
    """The candidate ``key`` most likely stands for: a close spelling, else the one whose initials it is
    (``lr`` -> ``learning_rate``, ``bs`` -> ``batch_size``), else ``None``."""
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    if close:
        return close[0]
    abbreviated = [c for c in candidates if len(key) > 1 and _initials(c) == key.lower()]
    return abbreviated[0] if len(abbreviated) == 1 else None


def _unknown_key(key: str, known: Sequence[str], where: str, budget: Sequence[str]) -> str:
    """The problem of an unknown ``key`` of the table at ``where`` (after ``where.key: ``), with a suggestion: a
    declared key, else the budget key (of ``budget``) it is or nearly is and the sub-table it belongs in."""
    listed = ", ".join(sorted(known)) or "none"
    suggestion = _close_key(key, known)
    if budget:
        table = f"[{where}.budget]"
        if key in budget:
            return f"unknown key here: {key!r} is a budget key, it belongs in {table}; known keys: {listed}"
        near = None if suggestion else _close_key(key, budget)
        if near is not None:
            return f"unknown key (did you mean the budget key {near!r}? it belongs in {table}); known keys: {listed}"
    hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
    return f"unknown key{hint}; known keys: {listed}"


def _type_ok(kind: str, value: Any) -> bool:
    if "|" in kind:
        return any(_type_ok(k, value) for k in kind.split("|"))
    if kind == "str" or kind == "path":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "table":
        return isinstance(value, Mapping)
    if kind.startswith("list["):
        item = kind[5:-1]
        return isinstance(value, list) and all(_type_ok(item, v) for v in value)
    return False


_KIND_WORDS = {
    "str": "a string",
    "path": "a path string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "table": "a table",
    "list[str]": "a list of strings",
    "list[int]": "a list of integers",
    "list[float]": "a list of numbers",
    "int|list[int]": "an integer or a list of integers",
}


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def check_options(
    declared: Sequence[Option],
    given: Mapping[str, Any],
    where: str,
    base_dir: Path | None = None,
    ignore: Sequence[str] = (),
    budget_keys: Sequence[str] = (),
) -> tuple[dict[str, Any], list[Problem]]:
    """Validate ``given`` against ``declared``; return the resolved options (defaults filled in) and the problems.

    :param where: the place in the suite file, e.g. ``"tasks.emotion"``; problems name ``where.key``.
    :param base_dir: folder relative paths are resolved against (the suite file's folder).
    :param ignore: keys handled by the caller (e.g. ``type`` or ``budget``) and skipped here.
    :param budget_keys: the keys of the table's ``budget`` sub-table, when it has one: an unknown key that is (or
        nearly is) one of them is pointed there: ``unknown key (did you mean the budget key 'learning_rate'? it
        belongs in [strategies.s.budget])``.
    """
    by_name = {o.name: o for o in declared}
    problems: list[Problem] = []
    resolved: dict[str, Any] = {}
    for key, value in given.items():
        if key in ignore:
            continue
        option = by_name.get(key)
        if option is None:
            problems.append(Problem(f"{where}.{key}", _unknown_key(key, list(by_name), where, budget_keys)))
            continue
        if not _type_ok(option.kind, value):
            problems.append(
                Problem(f"{where}.{key}", f"expected {_KIND_WORDS[option.kind]}, got {_describe(value)}")
            )
            continue
        if option.choices is not None and value not in option.choices:
            choices = ", ".join(repr(c) for c in option.choices)
            problems.append(Problem(f"{where}.{key}", f"expected one of {choices}, got {value!r}"))
            continue
        numbers = value if isinstance(value, list) else [value]
        low = [v for v in numbers if isinstance(v, (int, float)) and option.minimum is not None and v < option.minimum]
        if low:
            problems.append(Problem(f"{where}.{key}", f"must be at least {option.minimum}, got {low[0]!r}"))
            continue
        if option.kind == "path":
            try:
                path = resolve_path(value, base_dir)
            except FileNotFoundError as exc:
                problems.append(Problem(f"{where}.{key}", str(exc)))
                continue
            if not path.exists():
                problems.append(Problem(f"{where}.{key}", f"file not found: {path}"))
                continue
            value = str(path)
        if option.kind == "float" and isinstance(value, int):
            value = float(value)
        resolved[key] = value
    for option in declared:
        if option.name in resolved or option.name in given:
            continue
        if option.required:
            problems.append(Problem(f"{where}.{option.name}", f"missing required key ({option.help})"))
        else:
            resolved[option.name] = option.default
    return resolved, problems
