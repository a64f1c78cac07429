"""The labels as text on the text-to-text path: the *verbaliser* (each label's text: the ``verbalizer`` table's, else
the label name), the checks of a ``verbalizer`` table, and the default prompt templates for a cell's options.

Shared by the task (:mod:`harness_plugins.classification`, which checks the options at validate time) and its
text-to-text run (:mod:`harness_plugins.classification.text2text`); light (no torch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.api.options import did_you_mean
from harness.errors import HarnessError, Problem
from harness.tasklib.prompts import CLASSIFICATION, CLASSIFICATION_PAIRS, TaskPrompts


def task_prompts(options: Mapping[str, Any]) -> TaskPrompts:
    """The default templates for these options: :data:`~harness.tasklib.prompts.CLASSIFICATION_PAIRS` with sentence pairs."""
    return CLASSIFICATION_PAIRS if options.get("text_pair_column") else CLASSIFICATION


def verbalise(labels: Sequence[str], table: Mapping[str, str] | None) -> dict[str, str]:
    """Each label's text, in label order: the ``verbalizer`` table's value, else the label name itself.

    Raises :class:`HarnessError` when the table names a label outside ``labels`` or the texts are not usable."""
    problems = verbalizer_problems(table or {}, labels, "verbalizer")
    if problems:
        raise HarnessError(f"task option {problems[0]}")
    table = table or {}
    return {label: table.get(label, label) for label in labels}


def verbalizer_problems(table: Mapping[str, Any], labels: Sequence[str] | None, where: str) -> list[Problem]:
    """What is wrong with a ``verbalizer`` table: a label outside ``labels`` (when known), a text that is not a
    non-empty string, or two labels whose texts are equal once stripped and casefolded (answers could not tell them
    apart)."""
    problems = []
    for label, text in table.items():
        if labels is not None and label not in labels:
            hint = did_you_mean(label, list(labels))
            problems.append(Problem(f"{where}.{label}", f"unknown label {label!r}{hint}; labels: {', '.join(labels)}"))
        if not isinstance(text, str) or not text.strip():
            problems.append(Problem(f"{where}.{label}", "expected a non-empty string (the label's text)"))
    if not problems:
        seen: dict[str, str] = {}
        for label in labels if labels is not None else list(table):
            key = str(table.get(label, label)).strip().casefold()
            if key in seen:
                problems.append(Problem(f"{where}.{label}", f"same text as label {seen[key]!r}; texts must differ"))
            seen.setdefault(key, label)
    return problems
