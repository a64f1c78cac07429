"""Reading the ``regression`` task's data into plain examples (light: no torch): CSV, TSV or JSON Lines with a text
column, an optional second text column (sentence pairs, as in STS-B) and a real-valued score column.

Splits are carved and capped with the harness's own helpers
(:func:`harness.tasklib.datafiles.carve_and_cap`), seeded by the task's ``data_seed`` only, so every cell of a suite
(every strategy, model and seed) sees the same examples.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, Problem
from harness.tasklib.datafiles import (
    SPLITS,
    SplitAccess,
    carve_and_cap,
    fraction_problems,
    jsonl_records,
    read_text,
    split_lines,
)

FORMATS = ("auto", "csv", "tsv", "jsonl")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass(frozen=True)
class Example:
    """One scored text (or sentence pair); ``id`` is ``<split>-<row index in that split's file>``."""

    id: str
    text: str
    score: float
    text_pair: str | None = None


@dataclass(frozen=True)
class Splits(SplitAccess[Example]):
    """The three loaded splits (``splits["test"]`` reads one)."""

    train: tuple[Example, ...]
    validation: tuple[Example, ...]
    test: tuple[Example, ...]


def detect_format(path: str | Path, fmt: str = "auto") -> str:
    """``fmt`` unless it is ``"auto"``; then the format its extension names."""
    if fmt != "auto":
        return fmt
    found = _EXTENSIONS.get(Path(path).suffix.lower())
    if found is None:
        raise HarnessError(f"{path}: cannot tell the format from the extension (.csv, .tsv, .jsonl); set format")
    return found


def columns(options: Mapping[str, Any]) -> list[str]:
    """The columns (or JSON keys) every row must have."""
    names = [options["text_column"], options["score_column"]]
    return names + ([options["text_pair_column"]] if options.get("text_pair_column") else [])


def _score(value: Any, place: str) -> float:
    if isinstance(value, bool):
        raise HarnessError(f"{place}: the score must be a number, got {value!r}")
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise HarnessError(f"{place}: the score must be a number, got {value!r}") from None
    if not math.isfinite(score):
        raise HarnessError(f"{place}: the score must be finite, got {value!r}")
    return score


def _text(value: Any, place: str, column: str) -> str:
    if not isinstance(value, str):
        raise HarnessError(f"{place}: {column!r} must be a string, got {value!r}")
    return value


def read_file(path: str | Path, split: str, options: Mapping[str, Any]) -> list[Example]:
    """The examples of one file; every error names the file and line."""
    path = Path(path)
    fmt = detect_format(path, options["format"])
    text_column, score_column = options["text_column"], options["score_column"]
    pair_column = options.get("text_pair_column")
    rows: list[tuple[int, Mapping[str, Any]]]
    if fmt == "jsonl":
        rows = jsonl_records(split_lines(read_text(path, options["encoding"])), path)
    else:
        reader = csv.DictReader(
            io.StringIO(read_text(path, options["encoding"]), newline=""), delimiter="\t" if fmt == "tsv" else ","
        )
        header = reader.fieldnames or []
        missing = [c for c in columns(options) if c not in header]
        if missing:
            raise HarnessError(f"{path}:1: no column {missing[0]!r} in the header ({', '.join(header)})")
        try:
            rows = [(reader.line_num, row) for row in reader]
        except csv.Error as exc:
            raise HarnessError(f"{path}:{reader.line_num}: malformed {fmt.upper()}: {exc}") from None
    examples = []
    for index, (line, row) in enumerate(rows):
        place = f"{path}:{line}"
        for column in columns(options):
            if row.get(column) is None:
                raise HarnessError(f"{place}: missing {column!r}")
        examples.append(
            Example(
                id=f"{split}-{index}",
                text=_text(row[text_column], place, text_column),
                score=_score(row[score_column], place),
                text_pair=_text(row[pair_column], place, pair_column) if pair_column else None,
            )
        )
    if not examples:
        raise HarnessError(f"{path}: no examples")
    return examples


def load_splits(options: Mapping[str, Any], max_train_examples: int | None, eval_size: int | None) -> Splits:
    """The given files, validation and test carved from train when not given, then capped by the budget."""
    loaded = {split: read_file(options[split], split, options) for split in SPLITS if options.get(split)}
    splits = carve_and_cap(loaded, options, max_train_examples, eval_size, source=str(options["train"]))
    return Splits(**splits)


def header_problems(options: Mapping[str, Any], where: str) -> list[Problem]:
    """Cheap validate-time checks: each file's format is known and its first row has the needed columns; the carving
    fractions are sensible for the splits that will be carved."""
    problems: list[Problem] = []
    for split in SPLITS:
        path = options.get(split)
        if not path:
            continue
        try:
            fmt = detect_format(path, options["format"])
            first = _first_line(Path(path), options["encoding"])
        except HarnessError as exc:
            problems.append(Problem(f"{where}.{split}", str(exc)))
            continue
        if first is None:
            problems.append(Problem(f"{where}.{split}", f"{path}: the file is empty"))
            continue
        try:
            if fmt == "jsonl":
                keys = set(jsonl_records([first], path)[0][1])
            else:
                keys = set(next(csv.reader([first], delimiter="\t" if fmt == "tsv" else ",")))
        except (HarnessError, csv.Error, IndexError) as exc:
            problems.append(Problem(f"{where}.{split}", f"{path}:1: {exc}"))
            continue
        for column in columns(options):
            if column not in keys:
                found = ", ".join(sorted(keys))
                problems.append(Problem(f"{where}.{split}", f"{path}:1: no column {column!r} (found: {found})"))
    problems += fraction_problems(options, [s for s in ("validation", "test") if not options.get(s)], where)
    return problems


def _first_line(path: Path, encoding: str) -> str | None:
    with open(path, "rb") as fh:
        head = fh.readline()
    lines = split_lines(read_text(path, encoding, data=head))
    return lines[0] if lines and lines[0].strip() else None
