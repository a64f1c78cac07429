"""The text-to-text output format of NER: gold entities rendered as text, generations parsed back to tags (no torch).

**Format.** The entities of a sentence, in sentence order, as ``type: surface text`` joined by ``"; "``, e.g.
``PER: Peter Blackburn; LOC: Lebanon``, or the empty answer (option ``empty_answer``, default ``none``) when there are
none. The type is the entity type as the data writes it; the surface is the entity's tokens joined by single spaces.
The training target of a sentence is that rendering of its gold entities (decoded from its IOB2 tags).

**Parsing** (:func:`parse_entities`), never raising: an answer that is the empty answer (case-insensitive) or blank
has no entities. Otherwise it is split on ``;``; blank parts are skipped and every other part must read
``type: surface``, split at its first ``:``. The type must be one of the data's types, compared casefolded. The
surface, split on whitespace, is matched to the sentence's tokens: the first exact token subsequence none of whose
tokens an earlier part already took, starting at or after the previous match's start (so repeated surfaces map to
repeated mentions left to right); when there is none, the first one that matches casefolded with whitespace ignored
(the surface ``u. s.`` or ``U.S.`` matches the token ``U.S.``: uncased tokenizers and ones whose decoding moves
spaces), under the same rule. Parts with an unknown type, no ``:``, an empty type or surface, or a surface matching
nowhere are dropped and counted (``unparsed``). Matched spans become IOB2 tags over the words (:func:`spans_to_tags`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: The answer meaning "no entities", unless the ``empty_answer`` option says otherwise.
EMPTY_ANSWER = "none"
SEPARATOR = "; "


@dataclass(frozen=True)
class Span:
    """An entity over the words ``start`` (inclusive) to ``end`` (exclusive) of a sentence."""

    type: str
    start: int
    end: int


@dataclass(frozen=True)
class Parsed:
    """Spans parsed from an answer, and how many of its parts were dropped."""

    spans: tuple[Span, ...]
    unparsed: int


def spans_from_tags(tags: Sequence[str]) -> list[Span]:
    """The entities of IOB2 ``tags``; an ``I-`` after ``O`` or another type starts one (seqeval's default rule)."""
    spans: list[Span] = []
    start, kind = -1, ""
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, tag_kind = tag.partition("-")
        if kind and (prefix != "I" or tag_kind != kind):
            spans.append(Span(kind, start, i))
            kind = ""
        if prefix in ("B", "I") and not kind:
            start, kind = i, tag_kind
    return spans


def render_entities(tokens: Sequence[str], tags: Sequence[str], empty_answer: str = EMPTY_ANSWER) -> str:
    """The answer for a sentence: ``type: surface`` of each entity in order, joined by ``"; "``, or ``empty_answer``."""
    parts = [f"{s.type}: {' '.join(tokens[s.start : s.end])}" for s in spans_from_tags(tags)]
    return SEPARATOR.join(parts) if parts else empty_answer


def _exact(tokens: Sequence[str], used: Sequence[bool], start: int, words: Sequence[str]) -> int | None:
    """The first ``i >= start`` where ``words`` equals ``tokens[i:]``'s prefix, over unused tokens only."""
    n = len(words)
    for i in range(start, len(tokens) - n + 1):
        if list(tokens[i : i + n]) == list(words) and not any(used[i : i + n]):
            return i
    return None


def _loose(tokens: Sequence[str], used: Sequence[bool], start: int, surface: str) -> tuple[int, int] | None:
    """The first unused token run from ``start`` on whose concatenation equals ``surface`` casefolded, whitespace
    ignored."""
    target = "".join(surface.split()).casefold()
    for i in range(start, len(tokens)):
        joined = ""
        for j in range(i, len(tokens)):
            if used[j]:
                break
            joined += tokens[j].casefold()
            if joined == target:
                return i, j + 1
            if not target.startswith(joined):
                break
    return None


def parse_entities(
    answer: str, tokens: Sequence[str], types: Iterable[str], empty_answer: str = EMPTY_ANSWER
) -> Parsed:
    """The entity spans an answer names in a sentence of ``tokens`` (rules in the module docstring)."""
    text = answer.strip()
    if not text or text.casefold() == empty_answer.strip().casefold():
        return Parsed((), 0)
    known: dict[str, str] = {}
    for kind in types:
        known.setdefault(kind.casefold(), kind)
    used = [False] * len(tokens)
    spans: list[Span] = []
    unparsed = cursor = 0
    for part in text.split(";"):
        if not part.strip():
            continue
        kind, colon, surface = part.partition(":")
        kind, surface = kind.strip().casefold(), surface.strip()
        if not colon or kind not in known or not surface:
            unparsed += 1
            continue
        words = surface.split()
        start = _exact(tokens, used, cursor, words)
        found = (start, start + len(words)) if start is not None else _loose(tokens, used, cursor, surface)
        if found is None:
            unparsed += 1
            continue
        used[found[0] : found[1]] = [True] * (found[1] - found[0])
        spans.append(Span(known[kind], *found))
        cursor = found[0]
    return Parsed(tuple(spans), unparsed)


def spans_to_tags(length: int, spans: Iterable[Span]) -> list[str]:
    """IOB2 tags over ``length`` words: ``B-`` on the first word of each span, ``I-`` on the others."""
    tags = ["O"] * length
    for span in spans:
        tags[span.start] = f"B-{span.type}"
        for i in range(span.start + 1, span.end):
            tags[i] = f"I-{span.type}"
    return tags
