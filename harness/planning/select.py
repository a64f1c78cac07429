"""Running or reporting part of a suite without writing another file: ``--only`` and ``--exclude``.

Each option takes one rule, ``KEY=PATTERN[,KEY=PATTERN...]`` with the keys of ``[[exclude]]`` (``task``,
``strategy``, ``model``, ``seed``) and its matching rules (:func:`harness.planning.plan.matches_any`: names are
globs, a strategy pattern matches the declared name or a variant's); a key written twice in one rule matches either
value (``--only task=ner,task=sentiment``). A cell is selected when it matches one of the ``--only`` rules (every
cell when there are none) and none of the ``--exclude`` rules. ``harness run`` runs and prints only the selected
cells (``plan.json`` keeps the whole plan, so a later report sees the rest as pending); ``harness report`` reports
only them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from harness.api.options import did_you_mean
from harness.errors import HarnessError
from harness.planning.plan import matches_any

KEYS = ("task", "strategy", "model", "seed")
T = TypeVar("T")


def parse_rule(text: str, option: str) -> dict[str, list[Any]]:
    """One ``--only`` / ``--exclude`` value as a rule: key -> the patterns (seeds as integers).

    :raises HarnessError: (exit 2) a part without ``=``, an unknown key, an empty pattern or a seed that is no
        integer; the message names the option and the value."""
    rule: dict[str, list[Any]] = {}
    for part in text.split(","):
        key, sep, value = (x.strip() for x in part.partition("="))
        if not sep or not key or not value:
            raise HarnessError(f"{option} {text!r}: expected KEY=PATTERN[,KEY=PATTERN...] with KEY one of "
                               f"{', '.join(KEYS)}, e.g. {option} task=ner,strategy='lora*'")  # fmt: skip
        if key not in KEYS:
            raise HarnessError(f"{option} {text!r}: unknown key {key!r}{did_you_mean(key, KEYS)}; expected one of "
                               f"{', '.join(KEYS)}")  # fmt: skip
        if key == "seed":
            try:
                rule.setdefault(key, []).append(int(value))
            except ValueError:
                raise HarnessError(f"{option} {text!r}: seed must be an integer, got {value!r}") from None
        else:
            rule.setdefault(key, []).append(value)
    return rule


@dataclass(frozen=True)
class Selection:
    """The ``--only`` and ``--exclude`` rules of one command (none: everything is selected)."""

    only: tuple[Mapping[str, Any], ...] = ()
    exclude: tuple[Mapping[str, Any], ...] = ()
    #: The options as written, for messages (``--only task=ner --exclude seed=2``).
    text: str = ""

    @classmethod
    def parse(cls, only: Sequence[str] = (), exclude: Sequence[str] = ()) -> Selection:
        words = [f"--only {v}" for v in only] + [f"--exclude {v}" for v in exclude]
        return cls(tuple(parse_rule(v, "--only") for v in only), tuple(parse_rule(v, "--exclude") for v in exclude),
                   " ".join(words))  # fmt: skip

    def __bool__(self) -> bool:
        return bool(self.only or self.exclude)

    def keeps(self, task: str, strategy: str, model: str, seed: int) -> bool:
        """Whether the cell named so is selected; ``strategy`` is the cell's (``few_shot@k=4``)."""
        strategies = tuple(dict.fromkeys((strategy.split("@", 1)[0], strategy)))
        if self.only and not matches_any(self.only, task, strategies, model, seed):
            return False
        return not matches_any(self.exclude, task, strategies, model, seed)

    def cells(self, cells: Sequence[T], what: str) -> list[T]:
        """The selected ones of ``cells`` (anything with ``task``, ``strategy``, ``model`` and ``seed``).

        :raises HarnessError: (exit 2) the options select none of them; ``what`` names them in the message."""
        kept = [c for c in cells if self.keeps(c.task, c.strategy, c.model, c.seed)]  # type: ignore[attr-defined]
        if self and not kept:
            raise HarnessError(f"{self.text}: selects none of the {len(cells)} cells of {what}")
        return kept
