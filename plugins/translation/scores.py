"""Scoring of the translation task, for its runs and for reports (light: sacreBLEU, no torch).

:func:`bleu_chrf` gives a cell's metrics: sacreBLEU corpus BLEU and chrF (0–100). :func:`item_statistics` gives
their per-sentence sufficient statistics from saved prediction rows (``id``, ``prediction``, ``reference`` and, with
several references, ``references``), for paired significance tests in reports. They are sacreBLEU's own: the
metric objects' ``_extract_corpus_statistics`` (per-sentence n-gram match counts and lengths, the statistics its
``corpus_score`` sums and its paired bootstrap and approximate-randomisation tests in ``sacrebleu.significance``
resample) and ``_compute_score_from_stats`` on their sums, with the task's tokenizer and references.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

from ..item_stats import row_ids, row_references

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.itemstats import ItemStats


def reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-example reference lists as sacreBLEU's reference streams (``None`` where an example has fewer)."""
    width = max((len(r) for r in references), default=1)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


def bleu_chrf(
    predictions: Sequence[str], references: Sequence[Sequence[str]], *, target_lang: str, tokenize: str | None = None
) -> dict[str, float]:
    """sacreBLEU corpus BLEU and chrF (0–100) of ``predictions`` against all references of each example; BLEU's
    tokenizer is ``tokenize``, else sacreBLEU's default for ``target_lang``."""
    streams = reference_streams(references)
    bleu = BLEU(tokenize=tokenize, trg_lang=target_lang).corpus_score(list(predictions), streams)
    chrf = CHRF().corpus_score(list(predictions), streams)
    return {"bleu": float(bleu.score), "chrf": float(chrf.score)}


def item_statistics(rows: Sequence[Mapping[str, Any]], metric: str, options: Mapping[str, Any]) -> ItemStats | None:
    """Per-sentence sacreBLEU statistics of ``bleu`` (BLEU with the ``bleu_tokenize`` option, else sacreBLEU's
    tokenizer for ``target_lang``) or ``chrf``; the metric of their sums is the corpus score, as :func:`bleu_chrf`
    computes it. ``None`` for other metrics, for rows without ``id``, a string ``prediction`` or references, and
    when sacreBLEU cannot tokenize for the language here (a missing optional dependency)."""
    from harness.api.itemstats import ItemStats

    if metric not in ("bleu", "chrf") or (metric == "bleu" and not options.get("target_lang")):
        return None
    ids = row_ids(rows)
    if ids is None or not rows:
        return None
    hypotheses = [row.get("prediction") for row in rows]
    references = [row_references(row) for row in rows]
    if not all(isinstance(h, str) for h in hypotheses) or any(r is None for r in references):
        return None
    try:
        scorer = (
            BLEU(tokenize=options.get("bleu_tokenize"), trg_lang=options["target_lang"]) if metric == "bleu" else CHRF()
        )
    except (ImportError, RuntimeError):  # e.g. ja-mecab without its optional dependency
        return None
    stats = scorer._extract_corpus_statistics(hypotheses, reference_streams(references))  # type: ignore[arg-type]
    values = np.array(stats, dtype=np.float64).reshape(len(rows), -1)

    def corpus_score(sums: np.ndarray) -> float:
        # on a copy: BLEU's add-k smoothing would add to the sums in place
        return float(scorer._compute_score_from_stats(np.array(sums, dtype=np.float64)).score)

    return ItemStats(ids=ids, values=values, metric=corpus_score)
