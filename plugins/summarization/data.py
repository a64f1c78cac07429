"""Summarization data (no torch): the task's columns, loading and validate-time checks.

Files and hub datasets are read by :mod:`harness.tasklib.textpairs`. ``document_column`` holds the text to summarise,
``summary_columns`` its reference summaries: a row's references are the non-empty values of the listed columns it
has, so one list serves files with different layouts (DialogSum: ``["summary", "summary1", "summary2",
"summary3"]`` reads one reference per dev row and three per test row). Columns may be dotted paths into nested
objects and lists of sentences are joined with a space (ACLSum: ``sentences.abstract`` and ``summary.challenge``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.errors import Problem
from harness.tasklib import datafiles, datahub, textpairs
from harness.tasklib.datafiles import SPLITS
from harness.tasklib.encodecache import cached_splits, code_identity
from harness.tasklib.paircheck import check_pairs
from harness.tasklib.textpairs import Columns, PairSplits, TextPair, load_pairs


def columns(options: Mapping[str, Any]) -> Columns:
    """The document, summary and id columns the options name."""
    return Columns(
        source=options["document_column"],
        references=tuple(options["summary_columns"]),
        id=options.get("id_column"),
        what="summary",
    )


def load(options: Mapping[str, Any], max_train_examples: int | None = None, eval_size: int | None = None) -> PairSplits:
    """Load the splits the (resolved) options describe (see :func:`harness.tasklib.textpairs.load_pairs`).

    Files (not hub datasets) are read once: the splits are remembered by the files' content, the options and the caps
    (:func:`harness.tasklib.encodecache.cached_splits`), so the other cells of a suite read the remembered copy."""
    files = None if options.get("dataset") else [options.get(f"{s}{side}") for s in SPLITS for side in ("", "_target")]
    code = code_identity(__name__, textpairs, datafiles, datahub)
    return cached_splits(
        "summarization-splits", options, files, (max_train_examples, eval_size), code,
        lambda: load_pairs(options, columns(options), max_train_examples, eval_size), PairSplits, TextPair,
    )  # fmt: skip


def check(options: Mapping[str, Any], where: str, offline: bool) -> list[Problem]:
    """Validate-time checks: the summary columns, the data files and their first rows."""
    listed = options["summary_columns"]
    if not listed or len(set(listed)) != len(listed):
        return [Problem(f"{where}.summary_columns", "expected a non-empty list of distinct column names")]
    return check_pairs(options, columns(options), where, offline)
