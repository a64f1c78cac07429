"""Source texts with their reference texts, for generation tasks (translation, summarization); light: no torch.

**Where data comes from.** Either local files per split (options ``train``, ``validation``, ``test``) or a hub
dataset (``dataset``, ``dataset_config`` and the split names ``train_split`` / ``validation_split`` /
``test_split``; the ``datasets`` library is imported only when loading). Only ``train`` is required: a missing
validation or test split is carved out of train, seeded with ``data_seed`` (never the cell seed), and the budget's
caps (``max_train_examples``, ``eval_size``) draw seeded uniform subsamples kept in file order
(:mod:`harness.tasklib.datafiles`, shared with the classification and NER tasks), so every cell of a suite sees the same
examples.

**File formats** (``format = "auto"`` picks ``parallel`` when ``<split>_target`` is given, else by extension):

* ``parallel``: line-aligned plain-text files; the split's file holds the sources, ``<split>_target`` the targets
  (``train = "train.en"``, ``train_target = "train.de"``). Line *n* of one pairs with line *n* of the other.
* ``jsonl``: one JSON object a line; blank lines are skipped.
* ``csv``: a header line, then rows with RFC 4180 quoting.
* ``tsv``: a header line, then one row a line split on tabs, without quoting (a quote is text).
* ``po`` (translation only): a gettext message catalogue read with ``polib``: each translated entry's ``msgid`` is
  the source and its ``msgstr`` the target; the header, untranslated, fuzzy, obsolete and plural entries are left out.

**Columns.** A column is a key of the record; when no key has that exact name, dots address nested objects:
``translation.en`` reads ``{"translation": {"en": ...}}`` (the hub's translation shape), ``summary.challenge``
reads ACLSum. A value is a string, a number, or a list of strings (joined with one space: ACLSum stores a section as
a list of sentences). With several reference columns a row's references are the non-empty values of those columns
it has, in column order (DialogSum: ``summary`` in its dev file, ``summary1``..``summary3`` in its test file); a row
with none is an error, and so is a listed column that no row has (a typo).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.api.options import Option
from harness.errors import HarnessError
from harness.tasklib.datafiles import (
    SPLITS,
    SplitAccess,
    carve_and_cap,
    data_file,
    jsonl_records,
    read_text,
    split_lines,
)
from harness.tasklib.datahub import load_hub_split

FORMATS = ("auto", "parallel", "po", "jsonl", "csv", "tsv")
#: Formats where each file already pairs sources with targets, without columns (translation only).
PAIRED_FORMATS = ("parallel", "po")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}
_MISSING: Any = object()


@dataclass(frozen=True)
class TextPair:
    """One example: a source text and its references (at least one; the first is the training target).

    ``id`` is the id column's value, else ``<split>-<row index in its file or hub split>``.
    """

    id: str
    source: str
    references: tuple[str, ...]

    @property
    def target(self) -> str:
        return self.references[0]


@dataclass(frozen=True)
class PairSplits(SplitAccess[TextPair]):
    """The loaded train, validation and test splits."""

    train: tuple[TextPair, ...]
    validation: tuple[TextPair, ...]
    test: tuple[TextPair, ...]


@dataclass(frozen=True)
class Columns:
    """Where a record keeps the source, the references and (optionally) the example id."""

    source: str
    references: tuple[str, ...]
    id: str | None = None
    #: What the references are called in error messages ("target", "summary").
    what: str = "reference"


def pair_data_options(*, parallel: bool) -> tuple[Option, ...]:
    """The data options of a text-pair task (columns are declared by each task)."""
    targets = [Option(f"{s}_target", "path", None, f"parallel: target-side file of {s}, line-aligned") for s in SPLITS]
    formats = FORMATS if parallel else tuple(f for f in FORMATS if f not in PAIRED_FORMATS)
    return (
        Option("format", "str", "auto", "auto: parallel with <split>_target, else by extension", choices=formats),
        Option("train", "path", None, "training file (required unless dataset is set)"),
        Option("validation", "path", None, "validation file (default: carved from train, validation_fraction)"),
        Option("test", "path", None, "test file (default: carved from train, test_fraction)"),
        *(targets if parallel else ()),
        Option("dataset", "str", None, "Hugging Face dataset id (or folder) instead of files"),
        Option("dataset_config", "str", None, "dataset configuration name (e.g. de-en)"),
        Option("train_split", "str", "train", "dataset split used as train"),
        Option("validation_split", "str", "validation", "dataset split used as validation; empty: carve from train"),
        Option("test_split", "str", "test", "dataset split used as test; empty: carve from train"),
        Option("id_column", "str", None, "column holding example ids (default: <split>-<row index>)"),
        Option("encoding", "str", "utf-8", "text encoding of the data files"),
        Option("validation_fraction", "float", 0.1, "share of train carved out as validation when it is absent"),
        Option("test_fraction", "float", 0.1, "share of train carved out as test when it is absent"),
        Option("data_seed", "int", 0, "seed of carving and subsampling; shared by all cells"),
    )


# -- reading files -------------------------------------------------------------------------------------------------
def detect_format(path: str | Path, fmt: str, has_target: bool) -> str:
    """The format of a split file: ``fmt`` unless ``auto``; then ``parallel`` with a target file, else by extension."""
    if fmt != "auto":
        return fmt
    if has_target:
        return "parallel"
    found = _EXTENSIONS.get(Path(path).suffix.lower())
    if found is None:
        raise HarnessError(
            f"{path}: cannot tell the format from the extension (known: .jsonl, .csv, .tsv); "
            "set format, or give <split>_target for line-aligned parallel files"
        )
    return found


def read_parallel(source: Path, target: Path, encoding: str, split: str) -> list[TextPair]:
    """Pairs from two line-aligned files; files of different lengths are an error naming both and their counts."""
    sources, targets = split_lines(read_text(source, encoding)), split_lines(read_text(target, encoding))
    if len(sources) != len(targets):
        raise HarnessError(
            f"parallel files differ in length: {source} has {len(sources)} lines but {target} has {len(targets)}; "
            "they must match line by line"
        )
    return [TextPair(f"{split}-{i}", s, (t,)) for i, (s, t) in enumerate(zip(sources, targets, strict=True))]


def read_po(path: Path, split: str) -> list[TextPair]:
    """Pairs from a gettext catalogue: translated, current, non-fuzzy singular entries (``msgid`` → ``msgstr``);
    ids carry the entry's line number."""
    import polib

    try:
        catalogue = polib.pofile(str(data_file(path)))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{path}: not a readable gettext catalogue ({exc})") from None
    return [
        TextPair(f"{split}-{entry.linenum}", entry.msgid, (entry.msgstr,))
        for entry in catalogue
        if entry.msgid and entry.msgstr and not entry.fuzzy and not entry.obsolete
    ]


def read_records(path: Path, fmt: str, encoding: str) -> list[tuple[str, Mapping[str, Any]]]:
    """``(place, record)`` for every row of a JSONL, CSV or TSV file; ``place`` is ``file:line``."""
    text = read_text(path, encoding)
    rows: list[tuple[str, Mapping[str, Any]]] = []
    if fmt == "jsonl":
        rows += [(f"{path}:{n}", record) for n, record in jsonl_records(split_lines(text), path)]
    elif fmt == "tsv":
        lines = split_lines(text)
        header = lines[0].split("\t") if lines else []
        for n, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            values = line.split("\t")
            if len(values) != len(header):
                raise HarnessError(
                    f"{path}:{n}: expected {len(header)} tab-separated fields as in the header, got {len(values)}"
                )
            rows.append((f"{path}:{n}", dict(zip(header, values, strict=True))))
    elif fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            for record in reader:
                rows.append((f"{path}:{reader.line_num}", record))
        except csv.Error as exc:
            raise HarnessError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from None
    else:
        raise ValueError(f"not a record format: {fmt!r}")
    return rows


def lookup(record: Mapping[str, Any], column: str) -> Any:
    """The value of ``column`` in ``record``: the exact key, else a dotted path into nested objects; or a sentinel
    (tested with :func:`found`) when absent."""
    if column in record:
        return record[column]
    value: Any = record
    for part in column.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def found(value: Any) -> bool:
    """Whether a :func:`lookup` result is a value (JSON null and CSV's missing cells count as absent)."""
    return value is not _MISSING and value is not None


def as_text(value: Any, place: str, column: str) -> str:
    """A column value as text: strings as they are, numbers formatted, lists of strings joined with a space."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return " ".join(value)
    raise HarnessError(
        f"{place}: column {column!r} must be a string, a number or a list of strings, got {type(value).__name__}"
    )


def _keys(record: Mapping[str, Any]) -> str:
    return ", ".join(map(str, record)) or "none"


def pairs_from_records(
    records: Iterable[tuple[str, Mapping[str, Any]]], columns: Columns, split: str, seen: set[str]
) -> list[TextPair]:
    """Pairs from ``(place, record)`` rows; adds the reference columns met to ``seen``."""
    pairs = []
    for index, (place, record) in enumerate(records):
        source = lookup(record, columns.source)
        if not found(source):
            raise HarnessError(f"{place}: missing column {columns.source!r} (the source; columns: {_keys(record)})")
        references = []
        for column in columns.references:
            value = lookup(record, column)
            if found(value):
                seen.add(column)
                text = as_text(value, place, column)
                if text.strip():
                    references.append(text)
        if not references:
            listed = ", ".join(repr(c) for c in columns.references)
            raise HarnessError(f"{place}: no {columns.what}: no value in column(s) {listed} (columns: {_keys(record)})")
        if columns.id is None:
            example_id = f"{split}-{index}"
        else:
            value = lookup(record, columns.id)
            if not found(value):
                raise HarnessError(f"{place}: missing id column {columns.id!r} (columns: {_keys(record)})")
            example_id = as_text(value, place, columns.id)
        pairs.append(TextPair(example_id, as_text(source, place, columns.source), tuple(references)))
    return pairs


# -- splits ------------------------------------------------------------------------------------------------------
def _read_split(
    options: Mapping[str, Any], split: str, columns: Columns, seen: set[str]
) -> tuple[str, list[TextPair], bool]:
    """``(origin, pairs, whether records with columns were read)`` of one split."""
    from_records = True
    if options.get("dataset"):
        name = options[f"{split}_split"]
        origin = f"{options['dataset']}[{name}]"
        pairs = pairs_from_records(
            load_hub_split(options["dataset"], options.get("dataset_config"), name), columns, split, seen
        )
    else:
        path, target = Path(options[split]), options.get(f"{split}_target")
        fmt = detect_format(path, options["format"], bool(target))
        origin = str(path)
        if fmt == "parallel":
            if not target:
                raise HarnessError(f"{path}: format parallel needs {split}_target (the target-side file)")
            pairs, from_records = read_parallel(path, Path(target), options["encoding"], split), False
        elif fmt == "po":
            pairs, from_records = read_po(path, split), False
        else:
            pairs = pairs_from_records(read_records(path, fmt, options["encoding"]), columns, split, seen)
    if not pairs:
        raise HarnessError(f"{origin}: no examples (the {split} split is empty)")
    return origin, pairs, from_records


def split_present(options: Mapping[str, Any], split: str) -> bool:
    """Whether the options give ``split``: a file, or a hub split name when a dataset is given."""
    if options.get("dataset"):
        return bool(options.get(f"{split}_split"))
    return bool(options.get(split))


def load_pairs(
    options: Mapping[str, Any], columns: Columns, max_train_examples: int | None = None, eval_size: int | None = None
) -> PairSplits:
    """Load the splits the (resolved) options describe, carve the missing ones from train and apply the caps.

    Raises :class:`HarnessError` naming the file and line (or hub split and row) of any bad data."""
    if not split_present(options, "train"):
        raise HarnessError("no training data: set train (a file) or dataset")
    seen: set[str] = set()
    loaded = {s: _read_split(options, s, columns, seen) for s in SPLITS if split_present(options, s)}
    unseen = [c for c in columns.references if c not in seen]
    if unseen and any(from_records for _, _, from_records in loaded.values()):
        origins = ", ".join(origin for origin, _, _ in loaded.values())
        raise HarnessError(f"no row of {origins} has column(s) {', '.join(map(repr, unseen))}")
    examples = {split: pairs for split, (_, pairs, _) in loaded.items()}
    splits = carve_and_cap(examples, options, max_train_examples, eval_size, loaded["train"][0])
    return PairSplits(train=splits["train"], validation=splits["validation"], test=splits["test"])
