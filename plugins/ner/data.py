"""Reading NER data into sentences of words with IOB2 tags (no torch): CoNLL files, span JSONL, hub datasets.

* CoNLL-style files: one token a line, columns separated by tabs (or runs of spaces when the first token line has no
  tab; ``delimiter``), any number of columns (``token_column`` / ``tag_column``, 0-based, negative from the end;
  default first and last), blank (or whitespace-only) lines between sentences, ``-DOCSTART-`` lines skipped.
  Every token line must have as many columns as the first one.
* Span-annotated JSON lines (``spans``) and the CLUENER2020 layout (``cluener``): see :mod:`.spans`.
* Hub datasets with a tokens column and a tags column (``ClassLabel`` names used), through ``datasets.load_dataset``
  (a hub id or a local dataset folder); offline, a dataset that is not cached fails at once with a clear message.

Tags of any scheme (IOB1 / IOB2 / BIOES / BILOU, ``scheme = "auto"`` detects it from train) are normalised to IOB2
(:mod:`.tags`). The entity types come from ``entity_types``, else a hub dataset's ``ClassLabel`` names, else the
training data; a type in validation or test that is not among them is an error naming file and line (the model
could never predict it). The label set is ``O`` then ``B-``/``I-`` of each type, types sorted.

Splits: a missing validation or test split is carved from train, and caps (``max_train_examples``, ``eval_size``)
draw seeded subsamples; both use ``data_seed`` only (as the classification task does), never the cell seed.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, Problem
from harness.tasklib import datafiles, datahub
from harness.tasklib.datafiles import (
    HEAD_BYTES,
    SPLITS,
    SplitAccess,
    carve_and_cap,
    fraction_problems,
    head_text,
    jsonl_records,
    parse_json_object,
    read_text,
    split_lines,
)
from harness.tasklib.datahub import check_hub, hub_splits, source_problem, uses_hub
from harness.tasklib.encodecache import cached_splits, code_identity

from . import spans as span_io
from .tags import check_tag, detect_scheme, entity_type, label_set, split_tag, to_iob2

FORMATS = ("auto", "conll", *span_io.JSON_FORMATS, "hub")
DELIMITERS = ("auto", "tab", "space")
_CONLL_EXTENSIONS = frozenset({".conll", ".conll03", ".txt", ".tsv", ".tab", ".iob", ".iob2", ".bio", ".bioes", ".ner"})
_JSON_EXTENSIONS = frozenset({".jsonl", ".json", ".ndjson"})


@dataclass(frozen=True)
class Sentence:
    """One sentence: words and their IOB2 tags. ``id`` is ``<file split>-<sentence index in that file>``."""

    id: str
    tokens: tuple[str, ...]
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Splits(SplitAccess[Sentence]):
    """The loaded splits, the label set (``O`` first), and how the data was read.

    :param scheme: the tagging scheme of the source data (``IOB2`` for character spans).
    :param tokenization: ``word`` or ``char`` for span data, ``None`` when the data came as tokens.
    :param widened: entities widened to whole words (span data with word tokens), over all splits.
    """

    train: tuple[Sentence, ...]
    validation: tuple[Sentence, ...]
    test: tuple[Sentence, ...]
    labels: tuple[str, ...]
    scheme: str
    tokenization: str | None = None
    widened: int = 0
    #: What makes scores on these splits doubtful though nothing is malformed (:func:`entity_warnings`).
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Raw:
    """A sentence as read, before normalisation; ``places`` says where each token came from (``file:line``)."""

    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    places: tuple[str, ...]


def detect_format(path: str | Path, fmt: str, first_line: str | None, entities_key: str | None) -> str:
    """``fmt`` unless ``auto``; then CoNLL for text extensions, the JSON layout (from the first line) for JSON ones."""
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix in _CONLL_EXTENSIONS:
        return "conll"
    if suffix not in _JSON_EXTENSIONS:
        known = ", ".join(sorted(_CONLL_EXTENSIONS | _JSON_EXTENSIONS))
        raise HarnessError(f"{path}: cannot tell the format from the extension (known: {known}); set format")
    if first_line is None:
        raise HarnessError(f"{path}: no sentences (the file is empty)")
    return span_io.detect_json_layout(parse_json_object(first_line, f"{path}:1"), entities_key, f"{path}:1")


def read_conll(
    path: Path, lines: Sequence[str], delimiter: str = "auto", token_column: int = 0, tag_column: int = -1
) -> list[_Raw]:
    """Sentences of a CoNLL-style file given as ``lines``; :class:`HarnessError` names the line of any problem."""
    sentences: list[_Raw] = []
    tokens: list[str] = []
    tags: list[str] = []
    places: list[str] = []
    tabbed: bool | None = None
    columns = first = 0
    for n, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("-DOCSTART-"):
            if tokens:
                sentences.append(_Raw(tuple(tokens), tuple(tags), tuple(places)))
                tokens, tags, places = [], [], []
            continue
        if tabbed is None:
            tabbed = delimiter == "tab" or (delimiter == "auto" and "\t" in line)
        fields = [f.strip(" \r") for f in line.split("\t")] if tabbed else line.split()
        if not columns:
            columns, first = len(fields), n
            if not (-columns <= token_column < columns and -columns <= tag_column < columns) or (
                token_column % columns == tag_column % columns
            ):
                raise HarnessError(
                    f"{path}:{n}: token_column {token_column} and tag_column {tag_column} must be two different "
                    f"columns of the {columns} found here ({'tab' if tabbed else 'space'}-separated: {line!r})"
                )
        elif len(fields) != columns:
            raise HarnessError(
                f"{path}:{n}: expected {columns} {'tab' if tabbed else 'space'}-separated columns (as on line "
                f"{first}), got {len(fields)}: {line!r}"
            )
        if not fields[token_column]:
            raise HarnessError(f"{path}:{n}: empty token in column {token_column}: {line!r}")
        tokens.append(fields[token_column])
        tags.append(fields[tag_column])
        places.append(f"{path}:{n}")
    if tokens:
        sentences.append(_Raw(tuple(tokens), tuple(tags), tuple(places)))
    return sentences


def _json_records(path: Path, lines: Sequence[str], fmt: str, options: Mapping[str, Any]) -> list[span_io.SpanRecord]:
    key = options.get("entities_key") or span_io.DEFAULT_ENTITIES_KEY[fmt]
    return [
        span_io.parse_record(record, fmt, f"{path}:{n}", options["text_key"], key, options["span_keys"])
        for n, record in jsonl_records(lines, path)
    ]


def _read_files(options: Mapping[str, Any]) -> tuple[dict[str, tuple[str, list[_Raw]]], str | None, int]:
    """Read the split files; return split -> (file, sentences), the tokenization of span data, widened entities."""
    texts = {s: split_lines(read_text(Path(options[s]), options["encoding"])) for s in SPLITS if options.get(s)}
    formats = {
        s: detect_format(
            options[s], options["format"], next((x for x in t if x.strip()), None), options["entities_key"]
        )
        for s, t in texts.items()
    }
    raw: dict[str, tuple[str, list[_Raw]]] = {}
    records: dict[str, list[span_io.SpanRecord]] = {}
    for split, lines in texts.items():
        path = Path(options[split])
        if formats[split] == "conll":
            raw[split] = (str(path), read_conll(path, lines, options["delimiter"], *_columns(options)))
        else:
            records[split] = _json_records(path, lines, formats[split], options)
    if not records:
        return raw, None, 0
    tokenization = options["tokenization"]
    if tokenization == "auto":
        basis = records.get("train") or next(iter(records.values()))
        tokenization = span_io.choose_tokenization([r.text for r in basis])
    pattern = re.compile(options["word_pattern"])
    widened = 0
    for split, found in records.items():
        sentences = []
        for record in found:
            tokens, tags, count = span_io.tokenize(record, tokenization, pattern)
            widened += count
            sentences.append(_Raw(tuple(tokens), tuple(tags), (record.place,) * len(tokens)))
        raw[split] = (options[split], sentences)
    return raw, tokenization, widened


def _columns(options: Mapping[str, Any]) -> tuple[int, int]:
    return options["token_column"], options["tag_column"]


def _read_hub(options: Mapping[str, Any]) -> tuple[dict[str, tuple[str, list[_Raw]]], list[str] | None]:
    """Sentences of each split of a Hugging Face dataset (a missing validation or test split under its default name is
    left out, to be carved from train) and the ClassLabel names of the tags column (``None`` for string tags)."""
    import datasets

    _, found = hub_splits(options)
    columns = (options["tokens_column"], options["tags_column"])
    names: list[str] | None = None
    raw: dict[str, tuple[str, list[_Raw]]] = {}
    for split, (where, part) in found.items():
        for key, column in zip(("tokens_column", "tags_column"), columns, strict=True):
            if column not in part.column_names:
                raise HarnessError(
                    f"{where}: no column {column!r} (columns: {', '.join(part.column_names)}); set {key}"
                )
        feature = getattr(part.features[columns[1]], "feature", None)
        split_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        names = names or split_names
        sentences = []
        # part[column][:] is a list in every datasets version (datasets 4+ returns a lazy Column, slow to iterate).
        for i, (tokens, tags) in enumerate(zip(part[columns[0]][:], part[columns[1]][:], strict=True)):
            place = f"{where} row {i}"
            if split_names is not None:
                tags = [split_names[t] if 0 <= t < len(split_names) else str(t) for t in tags]
            elif not all(isinstance(t, str) for t in tags):
                raise HarnessError(f"{place}: column {columns[1]!r} holds {tags[:3]!r}: integers need ClassLabel names")
            if len(tokens) != len(tags):
                raise HarnessError(f"{place}: {len(tokens)} tokens but {len(tags)} tags")
            if tokens:
                sentences.append(_Raw(tuple(map(str, tokens)), tuple(tags), (place,) * len(tokens)))
        raw[split] = (where, sentences)
    return raw, names


def load_splits(
    options: Mapping[str, Any], max_train_examples: int | None = None, eval_size: int | None = None
) -> Splits:
    """Load, check and normalise the splits the task's (resolved) options describe, carve missing splits from train
    and apply the caps. Raises :class:`HarnessError` naming the file and line of any problem.

    Files (not hub datasets) are read once: the splits are remembered by the files' content, the options and the caps
    (:func:`harness.tasklib.encodecache.cached_splits`), so the other cells of a suite read the remembered copy."""
    files = None if uses_hub(options) else [options.get(split) for split in SPLITS]
    code = code_identity(__name__, span_io, f"{__package__}.tags", datafiles, datahub)
    caps = (max_train_examples, eval_size)
    return cached_splits(
        "ner-splits", options, files, caps, code,
        lambda: _read_splits(options, max_train_examples, eval_size), Splits, Sentence,
    )  # fmt: skip


def _read_splits(options: Mapping[str, Any], max_train_examples: int | None, eval_size: int | None) -> Splits:
    tokenization, widened, hub_names = None, 0, None
    problem = source_problem(options)
    if problem is not None:
        raise HarnessError(problem[1])
    if uses_hub(options):
        raw, hub_names = _read_hub(options)
    else:
        raw, tokenization, widened = _read_files(options)
    for split, (source, sentences) in raw.items():
        if not sentences:
            raise HarnessError(f"{source}: no sentences (the {split} split is empty)")
    train_source, train_raw = raw["train"]
    scheme = options["scheme"]
    if scheme == "auto":
        scheme = detect_scheme((r.tags, r.places) for r in train_raw)
    if options.get("entity_types"):
        types, origin = set(options["entity_types"]), "entity_types"
    elif hub_names is not None:
        kinds = [split_tag(name) for name in hub_names]
        types, origin = {k[1] for k in kinds if k is not None and k[0] != "O"}, "the dataset's ClassLabel names"
    else:
        types, origin = {entity_type(t) for r in train_raw for t in r.tags if t != "O"}, train_source
    examples: dict[str, list[Sentence]] = {}
    for split, (_, sentences) in raw.items():
        examples[split] = []
        for i, sentence in enumerate(sentences):
            for tag, place in zip(sentence.tags, sentence.places, strict=True):
                prefix, kind = check_tag(tag, scheme, place)
                if prefix != "O" and kind not in types:
                    raise HarnessError(
                        f"{place}: entity type {kind!r} (tag {tag!r}) does not occur in {origin}; known types: "
                        f"{', '.join(sorted(types)) or 'none'} (list every type in entity_types to add it)"
                    )
            examples[split].append(Sentence(f"{split}-{i}", sentence.tokens, tuple(to_iob2(sentence.tags))))
    splits = carve_and_cap(examples, options, max_train_examples, eval_size, train_source, "sentences")
    return Splits(
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        labels=label_set(types),
        scheme=scheme,
        tokenization=tokenization,
        widened=widened,
        warnings=tuple(entity_warnings(splits)),
    )


def entity_warnings(splits: Mapping[str, Sequence[Sentence]]) -> list[str]:
    """A split without a single entity (entity F1 is 0 or undefined there; train teaches only ``O``), and entity types
    of validation or test that train never shows."""
    types = {split: {tag[2:] for s in splits[split] for tag in s.tags if tag != "O"} for split in SPLITS}
    empty = [split for split in SPLITS if splits[split] and not types[split]]
    warnings = [f"no sentence of {', '.join(empty)} has an entity: every tag is O"] if empty else []
    for split in ("validation", "test"):
        if unseen := sorted(types[split] - types["train"]):
            warnings.append(f"{split} has entity types that train never shows: {', '.join(unseen)}")
    return warnings


def _head_lines(path: Path, encoding: str) -> list[str]:
    """The lines in the first 64 KiB of ``path`` (the last, possibly cut, line dropped when more follows)."""
    return split_lines(head_text(path, encoding))


def check_files(options: Mapping[str, Any], where: str) -> list[Problem]:
    """Cheap checks at validate time (never the whole file): the data source, encoding, pattern, fractions, and the
    first sentence or record of each file (format, columns, tags, keys)."""
    problem = source_problem(options)
    if problem is not None:
        return [Problem(f"{where}.{problem[0]}", problem[1])]
    hub = uses_hub(options)
    problems = check_hub(options, where) if hub else []
    try:
        codecs.lookup(options["encoding"])
    except LookupError:
        return [*problems, Problem(f"{where}.encoding", f"unknown encoding {options['encoding']!r}")]
    try:
        re.compile(options["word_pattern"])
    except re.error as exc:
        problems.append(Problem(f"{where}.word_pattern", f"not a regular expression: {exc}"))
    if len(options["span_keys"]) != 3:
        problems.append(Problem(f"{where}.span_keys", "expected three keys: start, end and label"))
    types = options.get("entity_types")
    if types is not None and (not types or len(set(types)) != len(types) or "" in types):
        problems.append(Problem(f"{where}.entity_types", "expected a non-empty list of distinct type names"))
    problems += fraction_problems(options, [s for s in ("validation", "test") if not options.get(s)], where)
    if problems:
        return problems
    scheme = options["scheme"]
    for split in [] if hub else [s for s in SPLITS if options.get(s)]:
        path = Path(options[split])
        try:
            lines = _head_lines(path, options["encoding"])
            first = next((n for n, line in enumerate(lines) if line.strip()), None)
            fmt = detect_format(
                path, options["format"], None if first is None else lines[first], options["entities_key"]
            )
            if first is None:
                raise HarnessError(f"{path}: no sentences (the {split} split is empty)")
            if fmt != "conll":
                _json_records(path, lines[: first + 1], fmt, options)
                continue
            sentences = read_conll(path, lines, options["delimiter"], *_columns(options))
            if not sentences:
                raise HarnessError(f"{path}: no sentences in its first {HEAD_BYTES // 1024} KiB")
            for tag, place in zip(sentences[0].tags, sentences[0].places, strict=True):
                check_tag(tag, scheme, place)
        except HarnessError as exc:
            problems.append(Problem(f"{where}.{split}", str(exc)))
    return problems
