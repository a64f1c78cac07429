"""Tagging schemes: recognise IOB1 / IOB2 / BIOES / BILOU tags and normalise them to IOB2 (no torch).

Every scheme is decoded into chunks by one lenient rule, the one seqeval's default (non-strict) mode and conlleval
use: a chunk begins at ``B-`` (``S-``/``U-``), and also at ``I-`` (``E-``/``L-``) when the previous tag is ``O``, of
another type, or closes a chunk (``E``/``S``/``L``/``U``). IOB1 and IOB2 therefore decode identically; the scheme only
decides which prefixes are valid. The decoded chunks are written back as IOB2: ``B-`` on the first token of each
chunk, ``I-`` on the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from harness.errors import HarnessError

SCHEMES = ("auto", "IOB1", "IOB2", "BIOES", "BILOU")
#: The prefixes each scheme allows (besides the tag ``O``).
PREFIXES = {"IOB1": "BI", "IOB2": "BI", "BIOES": "BIES", "BILOU": "BILU"}
_BEGINS = frozenset("BSU")
_CLOSES = frozenset("OESLU")
_EXPECTED = {
    "IOB1": "O, B-TYPE or I-TYPE",
    "IOB2": "O, B-TYPE or I-TYPE",
    "BIOES": "O, B-TYPE, I-TYPE, E-TYPE or S-TYPE",
    "BILOU": "O, B-TYPE, I-TYPE, L-TYPE or U-TYPE",
}


def split_tag(tag: str) -> tuple[str, str] | None:
    """``("O", "")`` for ``O``, ``(prefix, type)`` for ``B-PER`` and the like, ``None`` when ``tag`` is not a tag."""
    if tag == "O":
        return "O", ""
    prefix, dash, kind = tag.partition("-")
    if dash and len(prefix) == 1 and prefix in "BIESLU" and kind:
        return prefix, kind
    return None


def check_tag(tag: str, scheme: str, place: str) -> tuple[str, str]:
    """The split ``tag``; raises :class:`HarnessError` at ``place`` when it is no tag, or one ``scheme`` does not
    allow (``auto`` allows every prefix)."""
    parts = split_tag(tag)
    if parts is None:
        raise HarnessError(
            f"{place}: {tag!r} is not a tag (expected {_EXPECTED.get(scheme, 'O or PREFIX-TYPE, e.g. B-PER')})"
        )
    if parts[0] != "O" and parts[0] not in PREFIXES.get(scheme, "BIESLU"):
        raise HarnessError(
            f"{place}: tag {tag!r} is not a valid {scheme} tag (expected {_EXPECTED[scheme]}); "
            "set scheme to the data's tagging scheme"
        )
    return parts


def detect_scheme(sentences: Iterable[tuple[Sequence[str], Sequence[str]]]) -> str:
    """The scheme of tagged sentences, given as ``(tags, places)`` pairs.

    ``E-``/``S-`` tags mean BIOES, ``L-``/``U-`` BILOU (both at once is an error). Otherwise IOB1 when chunks begin with
    ``I-`` more often than with ``B-`` (IOB1 uses ``B-`` only between two adjacent chunks of one type), else IOB2.
    Tags that are no tag at all raise :class:`HarnessError` naming their place.
    """
    first: dict[str, str] = {}
    i_starts = b_starts = 0
    for tags, places in sentences:
        prev_prefix, prev_kind = "O", ""
        for tag, place in zip(tags, places, strict=True):
            prefix, kind = check_tag(tag, "auto", place)
            family = "BIOES" if prefix in "ES" else "BILOU" if prefix in "LU" else None
            if family is not None:
                first.setdefault(family, place)
            starts_chunk = prev_prefix in _CLOSES or prev_kind != kind
            if prefix == "I" and starts_chunk:
                i_starts += 1
            elif prefix == "B" and starts_chunk:
                b_starts += 1
            prev_prefix, prev_kind = prefix, kind
    if len(first) == 2:
        later = list(first.values())[1]  # where the second family first appears
        raise HarnessError(
            f"{later}: BIOES tags (E-, S-, first at {first['BIOES']}) and BILOU tags (L-, U-, first at "
            f"{first['BILOU']}) are mixed; use one scheme"
        )
    if first:
        return next(iter(first))
    return "IOB1" if i_starts > b_starts else "IOB2"


def to_iob2(tags: Sequence[str]) -> list[str]:
    """Rewrite valid tags of any scheme as IOB2 (chunks decoded by the lenient rule of this module's docstring)."""
    out: list[str] = []
    prev_prefix, prev_kind = "O", ""
    for tag in tags:
        parts = split_tag(tag)
        if parts is None:
            raise ValueError(f"not a tag: {tag!r}")
        prefix, kind = parts
        if prefix == "O":
            out.append("O")
        else:
            begins = prefix in _BEGINS or prev_prefix in _CLOSES or prev_kind != kind
            out.append(f"{'B' if begins else 'I'}-{kind}")
        prev_prefix, prev_kind = prefix, kind
    return out


def entity_type(tag: str) -> str:
    """The entity type of an IOB2 tag (``""`` for ``O``)."""
    return tag[2:] if tag != "O" else ""


def inside(tag: str) -> str:
    """The ``I-`` version of an IOB2 tag (``O`` stays ``O``): the label of a word's later sub-tokens."""
    return tag if tag == "O" else f"I-{tag[2:]}"


def label_set(types: Iterable[str]) -> tuple[str, ...]:
    """``O`` first, then ``B-`` and ``I-`` of every type, types sorted."""
    return ("O", *(f"{prefix}-{kind}" for kind in sorted(set(types)) for prefix in "BI"))
