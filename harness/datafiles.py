"""Reading data files and carving splits, shared by the task data layers (classification, NER, text pairs); light:
no torch, no ``datasets``.

* :func:`read_text`, :func:`split_lines`, :func:`count_lines`: a file's text and lines, with undecodable bytes
  reported as one :class:`~harness.errors.HarnessError` naming the file and line.
* :func:`parse_json_object`, :func:`jsonl_records`: JSON Lines, errors naming file and line.
* :func:`seeded_indices`, :func:`subsample`, :func:`carve`, :func:`carve_and_cap`: every cell of a suite sees the
  same examples: carving a validation or test split out of train and capping splits with the budget
  (``max_train_examples``, ``eval_size``) are seeded with ``data_seed`` only, never the cell seed. Caps draw a
  uniform random sample without replacement (not stratified) and keep the examples in file order.
* :func:`fraction_problems`: the validate-time check of the carving fractions.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from .errors import HarnessError, Problem

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


def read_text(path: str | Path, encoding: str, data: bytes | None = None) -> str:
    """The text of ``path`` (or of ``data``, bytes read from it), a leading byte-order mark dropped.

    Raises :class:`HarnessError` naming the file and line of an undecodable byte, or an unknown encoding."""
    path = Path(path)
    raw = path.read_bytes() if data is None else data
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise HarnessError(
            f"{path}:{line}: cannot decode byte 0x{raw[exc.start]:02x} with encoding {encoding!r}; "
            'set encoding to the file\'s encoding (e.g. "latin-1")'
        ) from None
    except LookupError:
        raise HarnessError(f"{path}: unknown encoding {encoding!r}") from None
    return text[1:] if text.startswith("\ufeff") else text


def split_lines(text: str) -> list[str]:
    """Lines split on ``\\n`` only (texts may hold other Unicode line separators), ``\\r`` endings dropped; a final
    newline does not start another line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def count_lines(path: str | Path) -> int:
    """Lines of a file as :func:`split_lines` counts them (a last line without a newline counts), without decoding."""
    raw = Path(path).read_bytes()
    return raw.count(b"\n") + (1 if raw and not raw.endswith(b"\n") else 0)


def parse_json_object(line: str, place: str) -> dict[str, Any]:
    """One line of JSON Lines as a JSON object; anything else is a :class:`HarnessError` at ``place``."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{place}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise HarnessError(f"{place}: expected a JSON object, got {type(record).__name__}")
    return record


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
