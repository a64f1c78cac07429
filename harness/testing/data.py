"""Tiny CPU models and tasks for plugin tests (part of :mod:`harness.testing`; light: no torch).

:func:`tiny_model` gives a ``[models.NAME]`` table of the built-in ``tiny`` source: a small random BERT, GPT-2 or T5
built from a config, with the tokenizer this package ships (``harness/testdata/tokenizer``: a 178-entry WordPiece
vocabulary of the toy data's words, the prompt templates' words and every single character, so any lowercase text
tokenizes), so nothing is downloaded and the text-to-text output layer stays small.

:func:`tiny_task` writes a tiny synthetic dataset with a learnable rule into a folder and returns the
``[tasks.NAME]`` table of a built-in task over it:

``classification``
    CSV files (``text,label``): a few filler words and one keyword; the label is ``positive`` when the keyword is one
    of ``good great fine nice``, ``negative`` when it is one of ``bad awful poor dull``.
``ner``
    CoNLL files (``word<TAB>IOB2 tag``): filler words and zero to two entities, names (``alice bob carol dave``:
    ``PER``) and cities (``paris rome oslo lima``: ``LOC``).

Every split has its own file (``train``, ``validation``, ``test``), so nothing is carved; the data depend only on
``n``, ``n_eval`` and ``data_seed``.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

#: The tokenizer shipped with harness, as a suite path (see :func:`harness.api.paths.resolve_path`).
TOKENIZER = "pkg:harness/testdata/tokenizer"
#: ``family`` -> the ``tiny`` source's ``architecture``.
ARCHITECTURES = {"encoder": "bert", "decoder": "gpt2", "encoder-decoder": "t5"}
KINDS = ("classification", "ner")

FILLER = "the a movie film story plot actor scene music ending book song show day was is very quite and with".split()
POSITIVE = ("good", "great", "fine", "nice")
NEGATIVE = ("bad", "awful", "poor", "dull")
ENTITIES = {"PER": ("alice", "bob", "carol", "dave"), "LOC": ("paris", "rome", "oslo", "lima")}


def tiny_model(family: str = "encoder", **options: Any) -> dict[str, Any]:
    """A ``[models.NAME]`` table of the ``tiny`` source: 2 layers, hidden 32, 2 heads, feed-forward 64, the shipped
    tokenizer. ``family`` is ``encoder`` (BERT), ``decoder`` (GPT-2) or ``encoder-decoder`` (T5); ``options``
    override or add any option of the ``tiny`` source (``layers``, ``hidden``, ``heads``, ``intermediate``,
    ``tokenizer``, or ``architecture`` directly)."""
    if family not in ARCHITECTURES:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(ARCHITECTURES)}")
    table: dict[str, Any] = {
        "source": "tiny",
        "architecture": ARCHITECTURES[family],
        "layers": 2,
        "hidden": 32,
        "heads": 2,
        "intermediate": 64,
        "tokenizer": TOKENIZER,
    }
    table.update(options)
    return table


def tiny_task(
    directory: str | Path,
    kind: str = "classification",
    n: int = 64,
    *,
    n_eval: int = 32,
    data_seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """Write a tiny dataset of ``kind`` (``classification`` or ``ner``) into ``directory`` (created) and return the
    ``[tasks.NAME]`` table of the built-in task over it (``type`` and the file paths); ``options`` add or override
    task options (e.g. ``decision = "generate"``).

    :param n: training examples; validation and test have ``n_eval`` each.
    :param data_seed: seed of the generator (the same arguments always write the same files).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown tiny task kind {kind!r}; expected one of {', '.join(KINDS)}")
    if n < 1 or n_eval < 1:
        raise ValueError("n and n_eval must be at least 1")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(data_seed)
    sizes = {"train": n, "validation": n_eval, "test": n_eval}
    table: dict[str, Any] = {"type": kind}
    for split, size in sizes.items():
        if kind == "classification":
            path = folder / f"{split}.csv"
            _write_classification(path, size, rng)
        else:
            path = folder / f"{split}.conll"
            _write_ner(path, size, rng)
        table[split] = str(path)
    if kind == "classification":
        table.update(format="csv", labels=["negative", "positive"])
    else:
        table.update(format="conll")
    table.update(options)
    return table


def _filler(rng: random.Random, low: int = 2, high: int = 6) -> list[str]:
    return [rng.choice(FILLER) for _ in range(rng.randint(low, high))]


def _write_classification(path: Path, size: int, rng: random.Random) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for index in range(size):
            positive = index % 2 == 1  # balanced labels
            words = _filler(rng)
            words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if positive else NEGATIVE))
            writer.writerow([" ".join(words), "positive" if positive else "negative"])


def _write_ner(path: Path, size: int, rng: random.Random) -> None:
    lines: list[str] = []
    for index in range(size):
        words = [(w, "O") for w in _filler(rng)]
        for _ in range(index % 3):  # 0, 1 or 2 entities
            kind = rng.choice(sorted(ENTITIES))
            words.insert(rng.randint(0, len(words)), (rng.choice(ENTITIES[kind]), f"B-{kind}"))
        lines += [f"{word}\t{tag}" for word, tag in words]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
