"""Span-annotated JSON lines turned into word or character tokens with IOB2 tags (no torch).

Two layouts, one JSON object a line:

* ``spans`` -- ``{"text": ..., "entities": [{"start": s, "end": e, "label": L}, ...]}`` with character offsets, ``end``
  exclusive (what doccano, Prodigy and spaCy export). An entity may also be a ``[start, end, label]`` list (doccano's
  older export). The key names are options (``text_key``, ``entities_key``, ``span_keys``).
* ``cluener`` -- the CLUENER2020 layout ``{"text": ..., "label": {TYPE: {surface: [[s, e], ...]}}}``, ``e`` inclusive;
  each surface string is checked against the text at its offsets.

Tokenisation (``tokenization``):

* ``word`` -- tokens are the matches of ``word_pattern`` (default ``\\S+``: whitespace-separated words), offsets kept.
  An entity whose boundary falls inside a word is widened to the whole word (spaCy's ``alignment_mode="expand"``:
  ``Paris,`` becomes the entity when only ``Paris`` was marked); the number widened is reported. Two entities
  inside one word cannot be represented and are an error; a finer ``word_pattern`` (e.g. ``\\w+|[^\\w\\s]``, which
  splits punctuation off) or character tokens avoid it.
* ``char`` -- every non-whitespace character is a token (text written without spaces, such as Chinese).
* ``auto`` -- ``char`` when most texts of the training file contain no whitespace, else ``word``.

Entities must not overlap (flat NER) and must lie inside the text; exact duplicates are merged.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError

JSON_FORMATS = ("spans", "cluener")
TOKENIZATIONS = ("auto", "word", "char")
DEFAULT_ENTITIES_KEY = {"spans": "entities", "cluener": "label"}


@dataclass(frozen=True)
class SpanRecord:
    """A text and its entities as ``(start, end exclusive, type)`` character spans, sorted and non-overlapping."""

    text: str
    spans: tuple[tuple[int, int, str], ...]
    place: str


def _key(record: Mapping[str, Any], key: str, place: str) -> Any:
    if key not in record:
        raise HarnessError(f"{place}: missing key {key!r} (keys: {', '.join(record) or 'none'})")
    return record[key]


def _offset(value: Any, what: str, place: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HarnessError(f"{place}: {what} must be an integer character offset, got {value!r}")
    return value


def _label(value: Any, place: str) -> str:
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise HarnessError(f"{place}: an entity label must be a non-empty string without outer spaces, got {value!r}")
    return value


def _plain_spans(entities: Any, key: str, span_keys: Sequence[str], place: str) -> list[tuple[int, int, str]]:
    if not isinstance(entities, list):
        raise HarnessError(f"{place}: {key!r} must be a list of entities, got {type(entities).__name__}")
    start_key, end_key, label_key = span_keys
    spans = []
    for entity in entities:
        if isinstance(entity, dict):
            values = [_key(entity, k, f"{place}: entity {entity}") for k in (start_key, end_key, label_key)]
        elif isinstance(entity, list) and len(entity) == 3:
            values = entity
        else:
            raise HarnessError(
                f"{place}: an entity must be an object with keys {start_key!r}, {end_key!r}, {label_key!r} "
                f"or a [start, end, label] list, got {entity!r}"
            )
        start, end = _offset(values[0], "start", place), _offset(values[1], "end", place)
        spans.append((start, end, _label(values[2], place)))
    return spans


def _cluener_spans(text: str, label: Any, key: str, place: str) -> list[tuple[int, int, str]]:
    expected = f"{key!r} must map each type to {{surface: [[start, end], ...]}} (CLUENER, end inclusive)"
    if not isinstance(label, dict):
        raise HarnessError(f"{place}: {expected}, got {type(label).__name__}")
    spans = []
    for kind, surfaces in label.items():
        if not isinstance(surfaces, dict):
            raise HarnessError(f"{place}: {expected}; type {kind!r} has {surfaces!r}")
        for surface, positions in surfaces.items():
            if not isinstance(positions, list) or not all(isinstance(p, list) and len(p) == 2 for p in positions):
                raise HarnessError(f"{place}: {expected}; {surface!r} has {positions!r}")
            for start, last in positions:
                start, last = _offset(start, "start", place), _offset(last, "end", place)
                if not 0 <= start <= last < len(text):
                    raise HarnessError(
                        f"{place}: entity {surface!r} ({kind}) at [{start}, {last}] is out of range for a text "
                        f"of {len(text)} characters"
                    )
                if text[start : last + 1] != surface:
                    raise HarnessError(
                        f"{place}: entity {surface!r} ({kind}) at [{start}, {last}] does not match the text there "
                        f"({text[start : last + 1]!r}); CLUENER offsets are 0-based with an inclusive end"
                    )
                spans.append((start, last + 1, _label(kind, place)))
    return spans


def parse_record(
    record: Mapping[str, Any], fmt: str, place: str, text_key: str, entities_key: str, span_keys: Sequence[str]
) -> SpanRecord:
    """Check one JSON record of ``fmt`` (``spans`` or ``cluener``) and return its sorted, checked spans."""
    text = _key(record, text_key, place)
    if not isinstance(text, str):
        raise HarnessError(f"{place}: {text_key!r} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise HarnessError(f"{place}: empty text")
    entities = _key(record, entities_key, place)
    if fmt == "cluener":
        found = _cluener_spans(text, entities, entities_key, place)
    else:
        found = _plain_spans(entities, entities_key, span_keys, place)
        for start, end, kind in found:
            if not 0 <= start < end <= len(text):
                raise HarnessError(
                    f"{place}: entity {kind!r} at [{start}, {end}) is out of range for a text of {len(text)} "
                    "characters (offsets are 0-based, end exclusive, start < end)"
                )
    spans = sorted(set(found))
    for (s1, e1, k1), (s2, e2, k2) in zip(spans, spans[1:], strict=False):
        if s2 < e1:
            raise HarnessError(
                f"{place}: entities {k1!r} {text[s1:e1]!r} [{s1}, {e1}) and {k2!r} {text[s2:e2]!r} [{s2}, {e2}) "
                "overlap; flat NER needs non-overlapping entities"
            )
    return SpanRecord(text, tuple(spans), place)


def choose_tokenization(texts: Sequence[str]) -> str:
    """``char`` when most ``texts`` contain no whitespace at all, else ``word`` (the rule of ``auto``)."""
    unspaced = sum(1 for t in texts if not any(ch.isspace() for ch in t))
    return "char" if unspaced * 2 > len(texts) else "word"


def tokenize(record: SpanRecord, tokenization: str, word_pattern: re.Pattern[str]) -> tuple[list[str], list[str], int]:
    """Tokens, their IOB2 tags, and how many entities were widened to whole words."""
    text = record.text
    if tokenization == "char":
        offsets = [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]
    else:
        offsets = [m.span() for m in word_pattern.finditer(text) if m.end() > m.start()]
    if not offsets:
        raise HarnessError(f"{record.place}: the text has no tokens under tokenization {tokenization!r}")
    starts, ends = [s for s, _ in offsets], [e for _, e in offsets]
    tags = ["O"] * len(offsets)
    owner: list[str | None] = [None] * len(offsets)
    widened = 0
    for start, end, kind in record.spans:
        first, last = bisect.bisect_right(ends, start), bisect.bisect_left(starts, end) - 1
        if first > last:
            raise HarnessError(
                f"{record.place}: entity {kind!r} {text[start:end]!r} [{start}, {end}) covers no token "
                f"under tokenization {tokenization!r}"
            )
        taken = next((o for o in owner[first : last + 1] if o is not None), None)
        if taken is not None:
            raise HarnessError(
                f"{record.place}: entities {taken} and {kind!r} {text[start:end]!r} fall in the same word "
                f"{text[starts[first] : ends[last]]!r}; use a finer word_pattern (e.g. \\w+|[^\\w\\s]) or "
                'tokenization = "char"'
            )
        widened += starts[first] < start or ends[last] > end
        for i in range(first, last + 1):
            tags[i] = f"{'B' if i == first else 'I'}-{kind}"
            owner[i] = f"{kind!r} {text[start:end]!r}"
    return [text[s:e] for s, e in offsets], tags, widened


def detect_json_layout(record: Mapping[str, Any], entities_key: str | None, place: str) -> str:
    """``spans`` or ``cluener`` from the shape of the first record."""
    for fmt in JSON_FORMATS:
        key = entities_key or DEFAULT_ENTITIES_KEY[fmt]
        value = record.get(key)
        if fmt == "spans" and isinstance(value, list) or fmt == "cluener" and isinstance(value, dict):
            return fmt
    raise HarnessError(
        f"{place}: cannot tell the JSON layout: expected a list of entities under {entities_key or 'entities'!r} "
        f"(spans) or a {{TYPE: {{surface: [[s, e]]}}}} object under {entities_key or 'label'!r} (cluener); "
        f"keys: {', '.join(record) or 'none'}; set format and entities_key"
    )
