"""The example tagging corpus: short sentences from a toy grammar, one part-of-speech tag per word (light: no torch).

Each sentence is a noun phrase, a verb phrase and sometimes a second clause after ``and`` / ``or``::

    sentence    := clause [CCONJ clause]
    clause      := noun_phrase VERB [ADV] [ADJ | noun_phrase | ADP noun_phrase]
    noun_phrase := DET [ADJ] NOUN | PRON

Every word has one tag (:data:`LEXICON`, Universal Dependencies tag names), so a per-word accuracy of 1 is reachable,
yet the tags still follow word order. About half the words are in the vocabulary of the tokenizer the harness ships
for tests (``pkg:harness/testdata/tokenizer``: one sub-token each); the others (``garden``, ``watched``, ``slowly``,
...) are not, and that tokenizer splits them, mostly into characters (``g ##a ##r ##d ##e ##n``), so the files
exercise the sub-word alignment of :mod:`harness_example.tagging_run`: only a word's first sub-token carries its tag.

The package ships the files :func:`write_corpus` writes with its defaults (``harness_example/data/tagging/train.conll``,
``validation.conll``, ``test.conll``: CoNLL-style, ``word<TAB>tag`` a line, a blank line after each sentence);
``python -m harness_example.tagging_corpus DIR`` writes them again.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

#: Tag -> its words. Words of the shipped test tokenizer's vocabulary first, then words it splits into characters.
LEXICON: dict[str, tuple[str, ...]] = {
    "DET": ("the", "a", "this", "that"),
    "PRON": ("it", "she", "they"),
    "ADJ": ("good", "great", "nice", "bad", "dull", "green", "quiet", "small", "happy"),
    "NOUN": ("movie", "film", "book", "song", "actor", "scene", "cat", "dog", "garden", "river", "window"),
    "VERB": ("was", "is", "liked", "watched", "found", "reads", "sings"),
    "ADV": ("very", "quite", "not", "slowly", "often"),
    "ADP": ("with", "in", "on", "of", "to"),
    "CCONJ": ("and", "or"),
}
#: The tag set, sorted: the labels of the ``tagging`` task on these files.
TAGS = tuple(sorted(LEXICON))
#: Sentences per split written by default (the shipped files).
SIZES = {"train": 256, "validation": 64, "test": 64}
#: Where the shipped files are, as a suite path (resolved without importing the package).
PACKAGE_DATA = "pkg:harness_example/data/tagging"

Tagged = list[tuple[str, str]]


def _word(rng: random.Random, tag: str) -> tuple[str, str]:
    return rng.choice(LEXICON[tag]), tag


def noun_phrase(rng: random.Random) -> Tagged:
    """``DET [ADJ] NOUN`` (five times in six) or ``PRON``."""
    if rng.random() < 1 / 6:
        return [_word(rng, "PRON")]
    words = [_word(rng, "DET")]
    if rng.random() < 0.4:
        words.append(_word(rng, "ADJ"))
    return [*words, _word(rng, "NOUN")]


def clause(rng: random.Random) -> Tagged:
    """A noun phrase, a verb, an optional adverb, then an adjective, a noun phrase, a prepositional phrase or
    nothing."""
    words = [*noun_phrase(rng), _word(rng, "VERB")]
    if rng.random() < 0.3:
        words.append(_word(rng, "ADV"))
    rest = rng.choice(("adj", "object", "prepositional", "none"))
    if rest == "adj":
        words.append(_word(rng, "ADJ"))
    elif rest == "object":
        words += noun_phrase(rng)
    elif rest == "prepositional":
        words += [_word(rng, "ADP"), *noun_phrase(rng)]
    return words


def sentence(rng: random.Random) -> Tagged:
    """One sentence as ``(word, tag)`` pairs: a clause, and a second one after a conjunction one time in four."""
    words = clause(rng)
    if rng.random() < 0.25:
        words += [_word(rng, "CCONJ"), *clause(rng)]
    return words


def conll(sentences: list[Tagged]) -> str:
    """CoNLL-style text: ``word<TAB>tag`` a line, a blank line after each sentence."""
    return "".join("".join(f"{word}\t{tag}\n" for word, tag in s) + "\n" for s in sentences)


def write_corpus(directory: str | Path, sizes: dict[str, int] | None = None, *, seed: int = 0) -> dict[str, Path]:
    """Write ``train.conll``, ``validation.conll`` and ``test.conll`` into ``directory`` (created); return each
    split's path. The same arguments always write the same bytes."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"harness-example-tagging:{seed}")
    paths: dict[str, Path] = {}
    for split, size in (sizes or SIZES).items():
        path = folder / f"{split}.conll"
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(conll([sentence(rng) for _ in range(size)]))
        paths[split] = path
    return paths


def task_table(paths: dict[str, Path], **options: Any) -> dict[str, Any]:
    """The ``[tasks.NAME]`` table of the ``tagging`` task over files written by :func:`write_corpus`."""
    return {"type": "tagging", **{split: str(path) for split, path in paths.items()}, **options}


def main(argv: list[str] | None = None) -> int:
    """``python -m harness_example.tagging_corpus DIR``: write the default corpus (the shipped files) into ``DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m harness_example.tagging_corpus DIR", file=sys.stderr)
        return 2
    for path in write_corpus(args[0]).values():
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
