"""Reading data files and carving splits, shared by the task data layers (classification, NER, text pairs); light:
no torch, no ``datasets``.

* :func:`data_file`, :func:`read_text`, :func:`head_text`, :func:`first_line`, :func:`split_lines`,
  :func:`count_lines`: a file's text and lines. Only regular files are read (a directory, FIFO or device is refused before anything is read); an empty
  file, an undecodable byte or a line longer than :data:`MAX_LINE_BYTES` is one :class:`~harness.errors.HarnessError`
  naming the file and line. A byte-order mark is dropped, and named in the hint when the declared encoding fails.
* :func:`parse_json_object`, :func:`jsonl_records`: JSON Lines, errors naming file and line.
* :func:`seeded_indices`, :func:`subsample`, :func:`carve`, :func:`carve_and_cap`: every cell of a suite sees the
  same examples: carving a validation or test split out of train and capping splits with the budget
  (``max_train_examples``, ``eval_size``) are seeded with ``data_seed`` only, never the cell seed. Caps draw a
  uniform random sample without replacement (not stratified) and keep the examples in file order.
* :func:`fraction_problems`: the validate-time check of the carving fractions.
"""

from __future__ import annotations

import codecs
import json
import random
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from harness.errors import HarnessError, Problem

T = TypeVar("T")

#: The splits every task loads, and the order in which missing ones are carved out of train.
SPLITS = ("train", "validation", "test")
CARVE_ORDER = ("test", "validation")


class SplitAccess(Generic[T]):
    """Base of a splits dataclass with fields ``train``, ``validation`` and ``test``: ``splits["test"]`` reads one."""

    def __getitem__(self, split: str) -> tuple[T, ...]:
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, split)


#: The longest line a data file may have (bytes); a longer one is refused instead of read (a file without newlines is
#: most likely not text data).
MAX_LINE_BYTES = 16 * 1024 * 1024
#: What validation reads of a file to check its first lines (headers, first records).
HEAD_BYTES = 64 * 1024

_BOMS = (  # longest first: UTF-32 LE's mark begins with UTF-16 LE's
    (codecs.BOM_UTF32_LE, "UTF-32 LE", "utf-32"),
    (codecs.BOM_UTF32_BE, "UTF-32 BE", "utf-32"),
    (codecs.BOM_UTF8, "UTF-8", "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "UTF-16 LE", "utf-16"),
    (codecs.BOM_UTF16_BE, "UTF-16 BE", "utf-16"),
)
_NOT_REGULAR = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"))  # fmt: skip


def data_file(path: str | Path) -> Path:
    """``path`` when it is a regular file; else a :class:`HarnessError` saying what it is (missing, a directory, a
    FIFO or device: those are never opened, so reading cannot hang or run without end)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise HarnessError(f"{path}: no such file") from None
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise HarnessError(f"{path}: is a directory; expected a data file")
    if not stat.S_ISREG(mode):
        what = next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")
        raise HarnessError(f"{path}: is {what}, not a regular file; expected a data file")
    return path


def _read_bytes(path: Path, limit: int | None = None) -> bytes:
    try:
        with open(data_file(path), "rb") as handle:
            return handle.read() if limit is None else handle.read(limit)
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _decode_error(path: Path, raw: bytes, encoding: str, exc: UnicodeDecodeError) -> HarnessError:
    line = raw.count(b"\n", 0, exc.start) + 1
    bom = next(((name, codec) for mark, name, codec in _BOMS if raw.startswith(mark)), None)
    declared = codecs.lookup(encoding).name
    if bom is not None and codecs.lookup(bom[1]).name != declared and not (bom[1] == "utf-8-sig" and declared == "utf-8"):
        hint = f'the file starts with a {bom[0]} byte-order mark: set encoding = "{bom[1]}"'
    else:
        hint = 'set encoding to the file\'s encoding (e.g. "latin-1")'
    return HarnessError(
        f"{path}:{line}: cannot decode byte 0x{raw[exc.start]:02x} with encoding {encoding!r}; {hint}"
    )


def _check_line_length(path: Path, raw: bytes) -> None:
    if len(raw) <= MAX_LINE_BYTES:
        return
    start, n = 0, 1
    while start < len(raw):
        end = raw.find(b"\n", start)
        end = len(raw) if end < 0 else end
        if end - start > MAX_LINE_BYTES:
            raise HarnessError(
                f"{path}:{n}: line longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB; is this a text data file?"
            )
        start, n = end + 1, n + 1


def read_text(path: str | Path, encoding: str, data: bytes | None = None) -> str:
    """The text of ``path`` (or of ``data``, bytes read from it), a leading byte-order mark dropped.

    Raises :class:`HarnessError` naming the file (and line) when it is not a regular file, is empty (nothing but
    white space), has a line longer than :data:`MAX_LINE_BYTES`, an undecodable byte, or an unknown encoding."""
    path = Path(path)
    raw = _read_bytes(path) if data is None else data
    _check_line_length(path, raw)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise _decode_error(path, raw, encoding, exc) from None
    except LookupError:
        raise HarnessError(f"{path}: unknown encoding {encoding!r}") from None
    text = text[1:] if text.startswith("\ufeff") else text
    if not text.strip():
        raise HarnessError(f"{path}: empty file")
    return text


def head_text(path: str | Path, encoding: str, limit: int = HEAD_BYTES) -> str:
    """The text of the first ``limit`` bytes of ``path`` (when the file goes on past them, the last, possibly cut,
    line is dropped). Decoded incrementally, so a character or a UTF-16 newline cut at the limit is no
    error; the errors are :func:`read_text`'s."""
    path = Path(path)
    raw = _read_bytes(path, limit + 1)
    more = len(raw) > limit
    raw = raw[:limit]
    try:
        text = codecs.getincrementaldecoder(encoding)().decode(raw, final=not more)
    except UnicodeDecodeError as exc:
        raise _decode_error(path, raw, encoding, exc) from None
    except LookupError:
        raise HarnessError(f"{path}: unknown encoding {encoding!r}") from None
    text = text[1:] if text.startswith("\ufeff") else text
    if more:
        if "\n" not in text:
            raise HarnessError(f"{path}:1: no line end in its first {limit // 1024} KiB; is this a text data file?")
        text = text[: text.rfind("\n") + 1]
    if not text.strip():
        raise HarnessError(f"{path}: empty file")
    return text


def first_line(path: str | Path, encoding: str) -> str:
    """The first non-blank line of ``path`` (a header, a first record), read with :func:`head_text`."""
    return next(line for line in split_lines(head_text(path, encoding)) if line.strip())


def split_lines(text: str) -> list[str]:
    """Lines split on ``\\n`` only (texts may hold other Unicode line separators), ``\\r`` endings dropped; a final
    newline does not start another line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def count_lines(path: str | Path, encoding: str = "utf-8") -> int:
    """Lines of a file as :func:`split_lines` counts them (a last line without a newline counts), decoded with
    ``encoding`` (in UTF-16 a byte 0x0a is not always a newline)."""
    return len(split_lines(read_text(path, encoding)))


def parse_json_object(line: str, place: str) -> dict[str, Any]:
    """One line of JSON Lines as a JSON object; anything else is a :class:`HarnessError` at ``place``."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{place}: not valid JSON ({json_error(exc)})") from None
    if not isinstance(record, dict):
        raise HarnessError(f"{place}: expected a JSON object, got {type(record).__name__}")
    return record


def json_error(exc: json.JSONDecodeError) -> str:
    """What went wrong and where in a line: ``Expecting value at column 5``, ``Unterminated string starting at
    column 9`` (json's message for that one already ends in "at")."""
    return f"{exc.msg}{'' if exc.msg.endswith(' at') else ' at'} column {exc.colno}"


def jsonl_records(lines: Iterable[str], path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSON Lines file given as its ``lines``."""
    return [(n, parse_json_object(line, f"{path}:{n}")) for n, line in enumerate(lines, start=1) if line.strip()]


def seeded_indices(n: int, k: int, data_seed: int, purpose: str) -> list[int]:
    """``k`` of ``range(n)``, sorted, drawn with a generator seeded by ``data_seed`` and ``purpose`` (never the cell
    seed), so every cell draws the same ones."""
    return sorted(random.Random(f"harness:{purpose}:{data_seed}").sample(range(n), k))


def subsample(items: Sequence[T], cap: int | None, data_seed: int, split: str) -> tuple[T, ...]:
    """At most ``cap`` items: a seeded uniform sample without replacement, kept in their original order."""
    if cap is None or len(items) <= cap:
        return tuple(items)
    return tuple(items[i] for i in seeded_indices(len(items), cap, data_seed, f"subsample-{split}"))


def carve(
    train: Sequence[T], fractions: Mapping[str, float], data_seed: int, source: str, what: str = "examples"
) -> tuple[tuple[T, ...], dict[str, tuple[T, ...]]]:
    """Cut seeded random ``fractions`` of ``train`` out as new splits, in the order of ``fractions``; return what is
    left of train and the new splits, each kept in file order.

    Each new split gets ``max(1, round(fraction * len(train)))`` items. Raises :class:`HarnessError` naming
    ``source`` when nothing would be left for training."""
    order = random.Random(f"harness:carve:{data_seed}").sample(range(len(train)), len(train))
    carved: dict[str, tuple[T, ...]] = {}
    start = 0
    for split, fraction in fractions.items():
        size = max(1, round(fraction * len(train)))
        carved[split] = tuple(train[i] for i in sorted(order[start : start + size]))
        start += size
    if start >= len(train):
        raise HarnessError(
            f"{source}: {len(train)} {what} are too few to carve {' and '.join(fractions)} splits from; "
            "give those splits or more training data"
        )
    kept = set(order[start:])
    return tuple(item for i, item in enumerate(train) if i in kept), carved


def carve_and_cap(
    examples: Mapping[str, Sequence[T]],
    options: Mapping[str, Any],
    max_train_examples: int | None,
    eval_size: int | None,
    source: str,
    what: str = "examples",
) -> dict[str, tuple[T, ...]]:
    """All three splits from the loaded ones (``train`` required): a missing validation or test split is carved from
    train with the ``<split>_fraction`` option (:func:`carve`), then train is capped at ``max_train_examples`` and
    validation and test at ``eval_size`` (:func:`subsample`); ``options["data_seed"]`` seeds both."""
    data_seed = options["data_seed"]
    splits = {split: tuple(items) for split, items in examples.items()}
    fractions = {split: options[f"{split}_fraction"] for split in CARVE_ORDER if split not in splits}
    if fractions:
        splits["train"], carved = carve(splits["train"], fractions, data_seed, source, what)
        splits.update(carved)
    caps = {"train": max_train_examples, "validation": eval_size, "test": eval_size}
    return {split: subsample(splits[split], caps[split], data_seed, split) for split in SPLITS}


def fraction_problems(options: Mapping[str, Any], carved: Iterable[str], where: str) -> list[Problem]:
    """Problems with the ``<split>_fraction`` options of the ``carved`` splits (each must lie in (0, 1), and two
    together must stay below 1)."""
    carved = list(carved)
    problems = [
        Problem(f"{where}.{split}_fraction", "must be between 0 and 1 (exclusive)")
        for split in carved
        if not 0 < options[f"{split}_fraction"] < 1
    ]
    if len(carved) == 2 and options["validation_fraction"] + options["test_fraction"] >= 1:
        problems.append(Problem(f"{where}.test_fraction", "validation_fraction + test_fraction must be below 1"))
    return problems
