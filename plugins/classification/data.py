"""Reading classification data into plain examples (no torch): CSV, TSV, JSONL, a text file with a label file, or a
Hugging Face dataset (:mod:`harness_plugins.classification.hub`).

Every cell of a suite sees the same data: carving a validation or test split out of train and capping splits with
the budget (``max_train_examples``, ``eval_size``) use ``data_seed`` only, never the cell seed, so strategies and seeds
are compared on identical examples. Caps draw a uniform random sample without replacement (not stratified) and keep
the examples in file order (:mod:`harness.tasklib.datafiles`, shared with the other tasks).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, Problem
from harness.tasklib import datafiles, datahub
from harness.tasklib.datafiles import (
    SPLITS,
    SplitAccess,
    carve_and_cap,
    count_lines,
    first_line,
    fraction_problems,
    json_error,
    jsonl_records,
    read_text,
    split_lines,
)
from harness.tasklib.datahub import check_hub, source_problem, uses_hub
from harness.tasklib.encodecache import cached_splits, code_identity

from .hub import _Row, read_hub

FORMATS = ("auto", "csv", "tsv", "jsonl", "text-files", "hub")
#: The options that name data files, all read by :func:`load_splits`.
DATA_FILE_KEYS = (*SPLITS, *(f"{split}_labels" for split in SPLITS), "label_map")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "text-files"}


@dataclass(frozen=True)
class Example:
    """One labelled text (or sentence pair). ``id`` is ``<split>-<row index in that split's file or dataset split>``."""

    id: str
    text: str
    label: str
    text_pair: str | None = None


@dataclass(frozen=True)
class Splits(SplitAccess[Example]):
    """The loaded splits, the label set in label-id order, and what makes their scores doubtful
    (:func:`label_warnings`)."""

    train: tuple[Example, ...]
    validation: tuple[Example, ...]
    test: tuple[Example, ...]
    labels: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def detect_format(path: str | Path, fmt: str = "auto") -> str:
    """The file format: ``fmt`` unless it is ``"auto"``, then from the file extension."""
    if fmt != "auto":
        return fmt
    found = _EXTENSIONS.get(Path(path).suffix.lower())
    if found is None:
        known = ", ".join(f"{ext} ({name})" for ext, name in _EXTENSIONS.items())
        raise HarnessError(f"{path}: cannot tell the format from the extension (known: {known}); set format")
    return found


def read_label_map(path: str | Path, encoding: str = "utf-8") -> dict[str, str]:
    """Read ``id<TAB>name`` lines, or one name per line (ids 0, 1, ...); return id -> name in file order."""
    path = Path(path)
    lines = [
        (n, line.strip()) for n, line in enumerate(split_lines(read_text(path, encoding)), start=1) if line.strip()
    ]
    if not lines:
        raise HarnessError(f"{path}: the label map is empty")
    tabbed = ["\t" in line for _, line in lines]
    if any(tabbed) and not all(tabbed):
        n = lines[tabbed.index(False) if tabbed[0] else tabbed.index(True)][0]
        raise HarnessError(f"{path}:{n}: mixes `id<TAB>name` lines and plain names; use one form")
    mapping: dict[str, str] = {}
    for index, (n, line) in enumerate(lines):
        key, name = (part.strip() for part in line.split("\t", 1)) if all(tabbed) else (str(index), line)
        if not key or not name:
            raise HarnessError(f"{path}:{n}: expected `id<TAB>name`, got {line!r}")
        if key in mapping or name in mapping.values():
            raise HarnessError(f"{path}:{n}: duplicate label id or name in {line!r}")
        mapping[key] = name
    return mapping


def _delimited(path: Path, delimiter: str, encoding: str, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(read_text(path, encoding), newline=""), delimiter=delimiter)
    header = reader.fieldnames or []
    for column in columns:
        if column not in header:
            raise HarnessError(f"{path}:1: no column {column!r} in the header (columns: {', '.join(header)})")
    rows = []
    try:
        for record in reader:
            for column in columns:
                if record.get(column) is None:
                    raise HarnessError(f"{path}:{reader.line_num}: missing value for column {column!r}")
            rows.append((reader.line_num, record))
    except csv.Error as exc:
        raise HarnessError(
            f"{path}:{reader.line_num}: malformed {'TSV' if delimiter == chr(9) else 'CSV'}: {exc}"
        ) from None
    return rows


def _jsonl(path: Path, encoding: str, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    rows = []
    for n, record in jsonl_records(split_lines(read_text(path, encoding)), path):
        values = {}
        for column in columns:
            if column not in record:
                raise HarnessError(f"{path}:{n}: missing key {column!r} (keys: {', '.join(record)})")
            value = record[column]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise HarnessError(f"{path}:{n}: key {column!r} must be a string or an integer, got {value!r}")
            values[column] = str(value)
        rows.append((n, values))
    return rows


def _read_file(options: Mapping[str, Any], split: str) -> tuple[Path, list[_Row]]:
    path = Path(options[split])
    fmt = detect_format(path, options["format"])
    encoding = options["encoding"]
    if fmt == "text-files":
        labels_option = options.get(f"{split}_labels")
        if not labels_option:
            raise HarnessError(f"{path}: format text-files needs {split}_labels (one label per line)")
        labels_path = Path(labels_option)
        texts, labels = split_lines(read_text(path, encoding)), split_lines(read_text(labels_path, encoding))
        if len(texts) != len(labels):
            raise HarnessError(
                f"{path} has {len(texts)} lines but {labels_path} has {len(labels)}; they must match line by line"
            )
        rows = [
            _Row(t, None, lab.strip(), f"{labels_path}:{n}")
            for n, (t, lab) in enumerate(zip(texts, labels, strict=True), 1)
        ]
    else:
        text_col, pair_col, label_col = options["text_column"], options.get("text_pair_column"), options["label_column"]
        columns = [text_col, label_col] + ([pair_col] if pair_col else [])
        records = (
            _jsonl(path, encoding, columns)
            if fmt == "jsonl"
            else _delimited(path, "\t" if fmt == "tsv" else ",", encoding, columns)
        )
        rows = [
            _Row(r[text_col], r[pair_col] if pair_col else None, r[label_col].strip(), f"{path}:{n}")
            for n, r in records
        ]
    if not rows:
        raise HarnessError(f"{path}: no examples (the {split} split is empty)")
    for row in rows:
        if not row.label:
            raise HarnessError(f"{row.place}: empty label")
    return path, rows


def _natural(labels: set[str]) -> list[str]:
    return sorted(labels, key=lambda s: (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s))


def load_splits(
    options: Mapping[str, Any], max_train_examples: int | None = None, eval_size: int | None = None
) -> Splits:
    """Load train, validation and test as the task's (resolved) options describe, carve missing splits from train,
    check every label against the label set, and apply the caps. Raises :class:`HarnessError` naming file and line.

    Files (not hub datasets) are read once: the splits are remembered by the files' content, the options and the caps
    (:func:`harness.tasklib.encodecache.cached_splits`), so the other cells of a suite read the remembered copy."""
    files = None if uses_hub(options) else [options.get(key) for key in DATA_FILE_KEYS]
    code = code_identity(__name__, f"{__package__}.hub", datafiles, datahub)
    caps = (max_train_examples, eval_size)
    return cached_splits(
        "classification-splits", options, files, caps, code,
        lambda: _read_splits(options, max_train_examples, eval_size), Splits, Example,
    )  # fmt: skip


def _read_splits(options: Mapping[str, Any], max_train_examples: int | None, eval_size: int | None) -> Splits:
    problem = source_problem(options)
    if problem is not None:
        raise HarnessError(problem[1])
    label_map = read_label_map(options["label_map"], options["encoding"]) if options.get("label_map") else None
    class_names: tuple[str, ...] | None = None
    loaded: dict[str, tuple[str | Path, list[_Row]]]
    if uses_hub(options):
        loaded, class_names = read_hub(options)
    else:
        loaded = {s: _read_file(options, s) for s in SPLITS if options.get(s)}

    def name_of(row: _Row) -> str:
        if label_map is None or row.label in label_map.values():
            return row.label
        if row.label in label_map:
            return label_map[row.label]
        raise HarnessError(
            f"{row.place}: label {row.label!r} is neither an id nor a name in the label map {options['label_map']}"
        )

    named = {split: [name_of(row) for row in rows] for split, (_, rows) in loaded.items()}
    if options.get("labels"):
        labels, source = tuple(options["labels"]), "the labels option"
    elif label_map is not None:
        labels, source = tuple(label_map.values()), f"the label map {options['label_map']}"
    elif class_names is not None:
        labels, source = class_names, f"the ClassLabel names of {loaded['train'][0]}"
    else:
        labels, source = tuple(_natural(set(named["train"]))), f"the labels found in {loaded['train'][0]}"
    known = set(labels)
    examples: dict[str, list[Example]] = {}
    for split, (_, rows) in loaded.items():
        for row, name in zip(rows, named[split], strict=True):
            if name not in known:
                raise HarnessError(f"{row.place}: label {name!r} is not in {source} ({', '.join(labels)})")
        examples[split] = [
            Example(f"{split}-{i}", row.text, name, row.text_pair)
            for i, (row, name) in enumerate(zip(rows, named[split], strict=True))
        ]

    splits = carve_and_cap(examples, options, max_train_examples, eval_size, str(loaded["train"][0]))
    return Splits(
        train=splits["train"], validation=splits["validation"], test=splits["test"], labels=labels,
        warnings=tuple(label_warnings(splits, labels)),
    )


def label_warnings(splits: Mapping[str, Sequence[Example]], labels: Sequence[str]) -> list[str]:
    """What makes scores on these splits doubtful though nothing is malformed: a split whose examples all carry one
    label (accuracy 1.0 by predicting it), labels of validation or test that train never shows (no model learns them)."""
    warnings = []
    found = {split: {e.label for e in splits[split]} for split in SPLITS}
    single: dict[str, list[str]] = {}
    for split in SPLITS:
        if len(found[split]) == 1:
            single.setdefault(next(iter(found[split])), []).append(f"{split} ({len(splits[split])})")
    for label, where in single.items():
        warnings.append(f"every example of {', '.join(where)} has the label {label!r}: accuracy is trivial there; "
                        "check label_column")  # fmt: skip
    for split in ("validation", "test"):
        if unseen := [label for label in labels if label in found[split] - found["train"]]:
            warnings.append(f"{split} has labels that train never shows: {', '.join(unseen)}")
    return warnings


def _header_problems(options: Mapping[str, Any], where: str, split: str, fmt: str) -> list[Problem]:
    """Check the first line of a CSV/TSV/JSONL file for the configured columns, without reading the rest."""
    path, encoding = Path(options[split]), options["encoding"]
    try:
        line = first_line(path, encoding)
    except HarnessError as exc:
        return [Problem(f"{where}.{split}", str(exc))]
    if fmt == "jsonl":
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            return [Problem(f"{where}.{split}", f"{path}:1: not valid JSON ({json_error(exc)})")]
        if not isinstance(record, dict):
            return [Problem(f"{where}.{split}", f"{path}:1: expected a JSON object per line")]
        found, what = list(record), "keys"
    else:
        found, what = next(csv.reader([line], delimiter="\t" if fmt == "tsv" else ",")), "columns"
    problems = []
    for key in ("text_column", "text_pair_column", "label_column"):
        column = options.get(key)
        if column and column not in found:
            problems.append(
                Problem(
                    f"{where}.{key}",
                    f"{path}: no {what[:-1]} {column!r} in the first line ({what}: {', '.join(found)})",
                )
            )
    return problems


def check_files(options: Mapping[str, Any], where: str) -> list[Problem]:
    """Cheap checks at validate time: the data source, formats, headers or first JSONL lines, label-file line counts,
    label map; for a Hugging Face dataset, :func:`harness.tasklib.datahub.check_hub`."""
    problem = source_problem(options)
    if problem is not None:
        return [Problem(f"{where}.{problem[0]}", problem[1])]
    hub = uses_hub(options)
    problems = check_hub(options, where) if hub else []
    try:
        codecs.lookup(options["encoding"])
    except LookupError:
        return [Problem(f"{where}.encoding", f"unknown encoding {options['encoding']!r}")]
    problems += fraction_problems(options, [s for s in ("validation", "test") if not options.get(s)], where)
    labels = options.get("labels")
    if labels is not None and (not labels or len(set(labels)) != len(labels)):
        problems.append(Problem(f"{where}.labels", "expected a non-empty list of distinct label names"))
    if options.get("label_map"):
        try:
            read_label_map(options["label_map"], options["encoding"])
        except HarnessError as exc:
            problems.append(Problem(f"{where}.label_map", str(exc)))
    for split in () if hub else SPLITS:
        labels_key = f"{split}_labels"
        if not options.get(split):
            if options.get(labels_key):
                problems.append(Problem(f"{where}.{labels_key}", f"given without {split}"))
            continue
        try:
            fmt = detect_format(options[split], options["format"])
        except HarnessError as exc:
            problems.append(Problem(f"{where}.format", str(exc)))
            continue
        if fmt != "text-files":
            if options.get(labels_key):
                problems.append(
                    Problem(f"{where}.{labels_key}", f"only used with format text-files ({split} is {fmt})")
                )
            problems += _header_problems(options, where, split, fmt)
            continue
        if options.get("text_pair_column"):
            problems.append(Problem(f"{where}.text_pair_column", "sentence pairs need a csv, tsv or jsonl file"))
        if not options.get(labels_key):
            problems.append(
                Problem(f"{where}.{labels_key}", f"required with format text-files (one label per line of {split})")
            )
            continue
        try:
            texts, labels_count = (count_lines(options[key], options["encoding"]) for key in (split, labels_key))
        except HarnessError as exc:
            problems.append(Problem(f"{where}.{split}", str(exc)))
            continue
        if texts != labels_count:
            problems.append(
                Problem(
                    f"{where}.{labels_key}",
                    f"{options[split]} has {texts} lines but {options[labels_key]} has {labels_count}; "
                    "they must match line by line",
                )
            )
    return problems
