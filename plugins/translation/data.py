"""Translation data (no torch): language names for prompts, the task's columns, loading and validate-time checks.

Files and hub datasets are read by :mod:`harness.tasklib.textpairs`. The default columns, ``translation.<source_lang>`` and
``translation.<target_lang>``, read the hub's ``{"translation": {"en": ..., "de": ...}}`` shape (in JSONL files
too); set ``source_column`` / ``target_column`` for flat columns such as ``en`` / ``de``. Line-aligned file pairs
(``train = "train.en"``, ``train_target = "train.de"``) need no columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.errors import HarnessError, Problem
from harness.tasklib import datafiles, datahub, textpairs
from harness.tasklib.datafiles import SPLITS
from harness.tasklib.encodecache import cached_splits, code_identity
from harness.tasklib.paircheck import check_pairs
from harness.tasklib.textpairs import Columns, PairSplits, TextPair, load_pairs

#: Language names used in prompts, by ISO 639-1 code; ``source_lang_name`` / ``target_lang_name`` override them.
# fmt: off
LANGUAGES: Mapping[str, str] = {
    "ar": "Arabic", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek", "en": "English", "es": "Spanish",
    "et": "Estonian", "fi": "Finnish", "fr": "French", "gu": "Gujarati", "he": "Hebrew", "hi": "Hindi",
    "id": "Indonesian", "it": "Italian", "ja": "Japanese", "kk": "Kazakh", "ko": "Korean", "lt": "Lithuanian",
    "lv": "Latvian", "nl": "Dutch", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian",
    "sv": "Swedish", "tr": "Turkish", "uk": "Ukrainian", "vi": "Vietnamese", "zh": "Chinese",
}
# fmt: on


def columns(options: Mapping[str, Any]) -> Columns:
    """The source and target columns the options name (defaults: the hub's translation shape)."""
    return Columns(
        source=options.get("source_column") or f"translation.{options['source_lang']}",
        references=(options.get("target_column") or f"translation.{options['target_lang']}",),
        id=options.get("id_column"),
        what="target",
    )


def language_name(options: Mapping[str, Any], side: str) -> str | None:
    """The name of the ``source`` or ``target`` language: the ``<side>_lang_name`` option, else from the table."""
    return options.get(f"{side}_lang_name") or LANGUAGES.get(options[f"{side}_lang"])


def prompt_values(options: Mapping[str, Any]) -> dict[str, str]:
    """The template fields besides the source text: ``source_lang`` and ``target_lang`` (names)."""
    values = {}
    for side in ("source", "target"):
        name = language_name(options, side)
        if name is None:
            raise HarnessError(f"no name for language code {options[f'{side}_lang']!r}; set {side}_lang_name")
        values[f"{side}_lang"] = name
    return values


def load(options: Mapping[str, Any], max_train_examples: int | None = None, eval_size: int | None = None) -> PairSplits:
    """Load the splits the (resolved) options describe (see :func:`harness.tasklib.textpairs.load_pairs`).

    Files (not hub datasets) are read once: the splits are remembered by the files' content, the options and the caps
    (:func:`harness.tasklib.encodecache.cached_splits`), so the other cells of a suite read the remembered copy."""
    files = None if options.get("dataset") else [options.get(f"{s}{side}") for s in SPLITS for side in ("", "_target")]
    code = code_identity(__name__, textpairs, datafiles, datahub)
    return cached_splits(
        "translation-splits", options, files, (max_train_examples, eval_size), code,
        lambda: load_pairs(options, columns(options), max_train_examples, eval_size), PairSplits, TextPair,
    )  # fmt: skip


def check(options: Mapping[str, Any], where: str, offline: bool) -> list[Problem]:
    """Validate-time checks: data files and columns, and a name for each language code."""
    problems = check_pairs(options, columns(options), where, offline)
    for side in ("source", "target"):
        if language_name(options, side) is None:
            code = options[f"{side}_lang"]
            problems.append(
                Problem(f"{where}.{side}_lang", f"no built-in name for language code {code!r}; set {side}_lang_name")
            )
    return problems
