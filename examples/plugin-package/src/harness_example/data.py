"""The example dataset: short sentences whose score is a rule a tiny model can learn (light: no torch).

Each sentence has two to five filler words and zero to three sentiment words; its **score** is the number of positive
words minus the number of negative words (-3 to 3), its **label** ``positive``, ``negative`` or ``neutral`` by the
score's sign. So one file serves the ``regression`` task (``score``) and the built-in ``classification`` task
(``label``). Every word is in the tokenizer that ships with the harness (``pkg:harness/testdata/tokenizer``).

The package ships the files :func:`write_dataset` writes with its defaults (``harness_example/data/train.csv``,
``validation.csv``, ``test.csv``; regenerate them with ``python -m harness_example.data DIR``). Sentence pairs
(``text_pair``, for the ``text_pair_column`` option) are written with ``pairs=True``: the score then counts both
sentences' words.
"""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path
from typing import Any

FILLER = "the a movie film story plot actor scene music ending book song show day was is very quite and with".split()
POSITIVE = ("good", "great", "fine", "nice")
NEGATIVE = ("bad", "awful", "poor", "dull")
#: Rows per split written by default (the shipped files).
SIZES = {"train": 256, "validation": 64, "test": 64}
#: Where the shipped files are, as a suite path (resolved without importing the package).
PACKAGE_DATA = "pkg:harness_example/data"


def sentence(rng: random.Random) -> tuple[str, int]:
    """One sentence and its score (positive minus negative words)."""
    words = [rng.choice(FILLER) for _ in range(rng.randint(2, 5))]
    score = 0
    for _ in range(rng.randint(0, 3)):
        positive = rng.random() < 0.5
        score += 1 if positive else -1
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if positive else NEGATIVE))
    return " ".join(words), score


def label(score: float) -> str:
    """The class of a score: its sign."""
    return "positive" if score > 0 else "negative" if score < 0 else "neutral"


def write_dataset(
    directory: str | Path,
    sizes: dict[str, int] | None = None,
    *,
    seed: int = 0,
    pairs: bool = False,
) -> dict[str, Path]:
    """Write ``train.csv``, ``validation.csv`` and ``test.csv`` (columns ``text``, [``text_pair``,] ``score``,
    ``label``) into ``directory`` (created); return each split's path. The same arguments always write the same
    bytes."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"harness-example:{seed}")
    paths: dict[str, Path] = {}
    for split, size in (sizes or SIZES).items():
        path = folder / f"{split}.csv"
        with open(path, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["text", "text_pair", "score", "label"] if pairs else ["text", "score", "label"])
            for _ in range(size):
                text, score = sentence(rng)
                if pairs:
                    text_pair, pair_score = sentence(rng)
                    score += pair_score
                    writer.writerow([text, text_pair, score, label(score)])
                else:
                    writer.writerow([text, score, label(score)])
        paths[split] = path
    return paths


def task_table(paths: dict[str, Path], pairs: bool = False, **options: Any) -> dict[str, Any]:
    """The ``[tasks.NAME]`` table of the ``regression`` task over files written by :func:`write_dataset`."""
    table: dict[str, Any] = {"type": "regression", **{split: str(path) for split, path in paths.items()}}
    if pairs:
        table["text_pair_column"] = "text_pair"
    table.update(options)
    return table


def main(argv: list[str] | None = None) -> int:
    """``python -m harness_example.data DIR``: write the default dataset (the shipped files) into ``DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m harness_example.data DIR", file=sys.stderr)
        return 2
    for path in write_dataset(args[0]).values():
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
