"""Reading the ``tagging`` task's data into sentences of words and tags (light: no torch).

CoNLL-style files: one word a line, its columns separated by tabs (or by runs of white space when the first word
line has no tab; ``delimiter``), the word and the tag in ``token_column`` and ``tag_column`` (0-based, negative from
the end; default the first and the last column, so ``word<TAB>tag`` and CoNLL-2000's ``word POS chunk`` both read).
Blank (or white-space-only) lines end a sentence; ``-DOCSTART-`` lines are skipped. Every word line of a file must
have as many columns as its first one. Errors are :class:`~harness.errors.HarnessError` naming the file and line.

The label set is the ``labels`` option, else the tags of the training file, sorted; a tag outside it anywhere is an
error at its line (the head could never predict it). Missing validation and test splits are carved from train and
every split is capped by the budget with :func:`harness.tasklib.datafiles.carve_and_cap`, seeded by ``data_seed``
only, so every cell of a suite (each strategy, model and seed) sees the same sentences.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, Problem
from harness.tasklib.datafiles import SPLITS, SplitAccess, carve_and_cap, fraction_problems, read_text, split_lines

DELIMITERS = ("auto", "tab", "space")
#: Lines :func:`header_problems` reads at most looking for a file's first word line.
_CHECK_LINES = 1000


@dataclass(frozen=True)
class Sentence:
    """One tagged sentence; ``id`` is ``<split>-<sentence index in that split's file>`` (a sentence carved out of
    train keeps its ``train-N`` id)."""

    id: str
    words: tuple[str, ...]
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Splits(SplitAccess[Sentence]):
    """The three loaded splits (``splits["test"]`` reads one) and the label set, in label-id order."""

    train: tuple[Sentence, ...]
    validation: tuple[Sentence, ...]
    test: tuple[Sentence, ...]
    labels: tuple[str, ...]


@dataclass(frozen=True)
class _Raw:
    words: tuple[str, ...]
    tags: tuple[str, ...]
    lines: tuple[int, ...]


def _is_separator(line: str) -> bool:
    return not line.strip() or line.lstrip().startswith("-DOCSTART-")


def _columns_problem(path: Path, n: int, line: str, fields: list[str], options: Mapping[str, Any]) -> str | None:
    """Why the first word line cannot give the word and the tag columns, or ``None``."""
    token, tag, count = options["token_column"], options["tag_column"], len(fields)
    if -count <= token < count and -count <= tag < count and token % count != tag % count:
        return None
    return (
        f"{path}:{n}: token_column {token} and tag_column {tag} must be two different columns of the {count} "
        f"found here: {line!r}"
    )


def _split(line: str, tabbed: bool) -> list[str]:
    return [f.strip(" \r") for f in line.split("\t")] if tabbed else line.split()


def read_conll(path: str | Path, lines: Sequence[str], options: Mapping[str, Any]) -> list[_Raw]:
    """The sentences of a CoNLL-style file given as its ``lines``."""
    path = Path(path)
    sentences: list[_Raw] = []
    words: list[str] = []
    tags: list[str] = []
    places: list[int] = []
    tabbed: bool | None = None
    columns = first = 0
    for n, line in enumerate(lines, start=1):
        if _is_separator(line):
            if words:
                sentences.append(_Raw(tuple(words), tuple(tags), tuple(places)))
                words, tags, places = [], [], []
            continue
        if tabbed is None:
            tabbed = options["delimiter"] == "tab" or (options["delimiter"] == "auto" and "\t" in line)
        fields = _split(line, tabbed)
        if not columns:
            problem = _columns_problem(path, n, line, fields, options)
            if problem:
                raise HarnessError(problem)
            columns, first = len(fields), n
        elif len(fields) != columns:
            kind = "tab" if tabbed else "space"
            raise HarnessError(
                f"{path}:{n}: expected {columns} {kind}-separated columns (as on line {first}), got {len(fields)}: "
                f"{line!r}"
            )
        word, tag = fields[options["token_column"]], fields[options["tag_column"]]
        if not word or not tag:
            raise HarnessError(f"{path}:{n}: empty {'word' if not word else 'tag'}: {line!r}")
        words.append(word)
        tags.append(tag)
        places.append(n)
    if words:
        sentences.append(_Raw(tuple(words), tuple(tags), tuple(places)))
    if not sentences:
        raise HarnessError(f"{path}: no sentences")
    return sentences


def label_set(options: Mapping[str, Any], train: Sequence[_Raw]) -> tuple[str, ...]:
    """The ``labels`` option, else the training file's tags, sorted."""
    if options.get("labels"):
        return tuple(options["labels"])
    return tuple(sorted({tag for sentence in train for tag in sentence.tags}))


def load_splits(options: Mapping[str, Any], max_train_examples: int | None, eval_size: int | None) -> Splits:
    """The given files (every tag checked against the label set), validation and test carved from train when not
    given, then every split capped by the budget."""
    raw = {
        split: read_conll(options[split], split_lines(read_text(options[split], options["encoding"])), options)
        for split in SPLITS
        if options.get(split)
    }
    labels = label_set(options, raw["train"])
    known = set(labels)
    loaded: dict[str, list[Sentence]] = {}
    for split, sentences in raw.items():
        for sentence in sentences:
            for tag, n in zip(sentence.tags, sentence.lines, strict=True):
                if tag not in known:
                    where = "the labels option" if options.get("labels") else f"the tags of {options['train']}"
                    raise HarnessError(f"{options[split]}:{n}: tag {tag!r} is not among {where} ({', '.join(labels)})")
        loaded[split] = [Sentence(f"{split}-{i}", s.words, s.tags) for i, s in enumerate(sentences)]
    splits = carve_and_cap(
        loaded, options, max_train_examples, eval_size, source=str(options["train"]), what="sentences"
    )
    return Splits(**splits, labels=labels)


def _first_word_line(path: Path, encoding: str) -> tuple[int, str] | None:
    """The first line that is a word line (number and text), read line by line, at most :data:`_CHECK_LINES`."""
    with open(path, encoding=encoding, newline="") as fh:
        for n, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            line = line.removeprefix("\ufeff") if n == 1 else line
            if not _is_separator(line):
                return n, line
            if n >= _CHECK_LINES:
                break
    return None


def header_problems(options: Mapping[str, Any], where: str) -> list[Problem]:
    """Cheap validate-time checks: each file's first word line has the word and tag columns; the labels are unique;
    the carving fractions are sensible for the splits that will be carved. The rows themselves are read by the
    cell."""
    problems: list[Problem] = []
    for split in SPLITS:
        path = options.get(split)
        if not path:
            continue
        path = Path(path)
        if not path.is_file():
            problems.append(Problem(f"{where}.{split}", f"{path}: not a regular file"))
            continue
        try:
            first = _first_word_line(path, options["encoding"])
        except (OSError, UnicodeDecodeError, LookupError) as exc:
            reason = f"{path}: cannot read it with encoding {options['encoding']!r} ({exc})"
            problems.append(Problem(f"{where}.{split}", reason))
            continue
        if first is None:
            problems.append(Problem(f"{where}.{split}", f"{path}: no word line in its first {_CHECK_LINES} lines"))
            continue
        n, line = first
        tabbed = options["delimiter"] == "tab" or (options["delimiter"] == "auto" and "\t" in line)
        problem = _columns_problem(path, n, line, _split(line, tabbed), options)
        if problem:
            problems.append(Problem(f"{where}.{split}", problem))
    labels = options.get("labels") or []
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        problems.append(Problem(f"{where}.labels", f"repeated: {', '.join(repeated)}"))
    problems += fraction_problems(options, [s for s in ("validation", "test") if not options.get(s)], where)
    return problems
