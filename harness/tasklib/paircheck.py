"""Validate-time checks of a text-pair task's data (:mod:`harness.tasklib.textpairs`): cheap checks of sources,
formats, first rows and parallel line counts (:func:`check_pairs`), then the whole read the cells do, remembered per
file identity (:func:`read_problems`). Light: no torch, no ``datasets``."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.api.components import CheckContext
from harness.errors import HarnessError, Problem
from harness.tasklib.datacheck import check_by_reading
from harness.tasklib.datafiles import SPLITS, count_lines, first_line, fraction_problems, json_error
from harness.tasklib.datahub import dataset_cached, datasets_offline
from harness.tasklib.textpairs import Columns, detect_format, found, load_pairs, lookup, split_present


def _first_record(path: Path, fmt: str, encoding: str) -> Mapping[str, Any] | str:
    """The first record of a JSONL file or the header of a CSV/TSV file (as empty-valued columns), else a message."""
    try:
        line = first_line(path, encoding)
    except HarnessError as exc:
        return str(exc)
    if fmt == "jsonl":
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            return f"{path}:1: not valid JSON ({json_error(exc)})"
        return record if isinstance(record, dict) else f"{path}:1: expected a JSON object per line"
    header = line.split("\t") if fmt == "tsv" else next(csv.reader([line]), [])
    return {name: "" for name in header}


def read_problems(reader: str, options: Mapping[str, Any], columns: Columns, where: str, ctx: CheckContext) -> list[Problem]:
    """The first problem :func:`load_pairs` meets reading every local file of the options (none for a hub dataset),
    remembered per file identity (:func:`harness.tasklib.datacheck.check_by_reading`); ``reader`` names the task."""
    if options.get("dataset"):
        return []
    files = [options[key] for split in SPLITS for key in (split, f"{split}_target") if options.get(key)]

    def read() -> tuple[str, ...]:
        load_pairs(options, columns)
        return ()  # text pairs have nothing to warn about yet

    return check_by_reading(reader, options, files, read, where, ctx)


def check_pairs(options: Mapping[str, Any], columns: Columns, where: str, offline: bool) -> list[Problem]:
    """Cheap checks at validate time: one data source, formats, columns in first lines, parallel line counts."""
    problems: list[Problem] = []

    def add(key: str, message: str) -> None:
        problems.append(Problem(f"{where}.{key}", message))

    given = [s for s in SPLITS if options.get(s)]
    if options.get("dataset"):
        if given:
            add(given[0], "give either dataset or files, not both")
        if not options.get("train_split"):
            add("train_split", "a training split is required")
        if (offline or datasets_offline()) and not dataset_cached(options["dataset"]):
            add("dataset", f"dataset {options['dataset']!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE "
                "is set; download it first or give local files")  # fmt: skip
    elif not options.get("train"):
        add("train", "missing: set train (a file) or dataset")
    problems += fraction_problems(options, [s for s in ("validation", "test") if not split_present(options, s)], where)
    for split in SPLITS:
        path, target = options.get(split), options.get(f"{split}_target")
        if not path:
            if target:
                add(f"{split}_target", f"given without {split}")
            continue
        try:
            fmt = detect_format(path, options["format"], bool(target))
        except HarnessError as exc:
            add("format", str(exc))
            continue
        if fmt == "parallel":
            if not target:
                add(f"{split}_target", f"required with format parallel ({split})")
                continue
            try:
                n, m = (count_lines(p, options["encoding"]) for p in (path, target))
            except HarnessError as exc:
                add(split, str(exc))
                continue
            if n != m:
                add(f"{split}_target", f"parallel files differ in length: {path} has {n} lines but {target} has {m}")
            continue
        if target:
            add(f"{split}_target", f"only used with format parallel ({split} is {fmt})")
        if fmt == "po":
            continue
        first = _first_record(Path(path), fmt, options["encoding"])
        if isinstance(first, str):
            add(split, first)
            continue
        keys = ", ".join(first) or "none"
        if not found(lookup(first, columns.source)):
            add(split, f"{path}: no column {columns.source!r} in the first row (columns: {keys})")
        if not any(found(lookup(first, c)) for c in columns.references):
            listed = ", ".join(repr(c) for c in columns.references)
            add(split, f"{path}: none of the {columns.what} column(s) {listed} in the first row (columns: {keys})")
    return problems
