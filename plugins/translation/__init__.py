"""Machine translation task ``translation``: text-to-text on decoder and encoder-decoder models, sacreBLEU scores.

Data: line-aligned file pairs (``train = "train.en"``, ``train_target = "train.de"``; Multi30k), JSONL / CSV / TSV
with source and target columns, or a hub dataset in the ``translation: {src: ..., tgt: ...}`` shape
(:mod:`harness.tasklib.textpairs`, :mod:`harness_plugins.translation.data`). ``source_lang`` / ``target_lang`` are language
codes; the prompt uses their names (built-in table, or ``source_lang_name`` / ``target_lang_name``).

Prompts (:data:`harness.tasklib.prompts.TRANSLATION`, replaced by the ``prompt`` option), truncation and generation follow
:mod:`harness.tasklib.text2text`. Metrics: sacreBLEU corpus BLEU (``bleu``, primary by default) and chrF (``chrf``), both
0–100, computed with the library's ``BLEU`` and ``CHRF`` objects (BLEU's tokenizer: ``bleu_tokenize``, else
sacreBLEU's default for the target language — ``13a``, ``zh`` for Chinese, ``ja-mecab`` / ``ko-mecab`` for Japanese /
Korean). The record's ``metric_info`` carries both signature strings and the sacreBLEU version.

This module stays light (no torch); the run lives in :mod:`harness_plugins.translation.run`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from harness.api.components import CellContext, CheckContext, Task
from harness.api.hookspecs import hookimpl
from harness.api.options import REQUIRED, Option
from harness.errors import Problem
from harness.tasklib.paircheck import read_problems
from harness.tasklib.prompts import TRANSLATION, text2text_options
from harness.tasklib.textpairs import pair_data_options

from . import data

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.itemstats import ItemStats

    from .run import TranslationRun

METRICS = ("bleu", "chrf")
#: sacreBLEU's BLEU tokenizers (``sacrebleu.metrics.bleu._TOKENIZERS``).
BLEU_TOKENIZERS = ("13a", "intl", "zh", "ja-mecab", "ko-mecab", "char", "none", "spm", "flores101", "flores200")


class TranslationTask(Task):
    """Translate from ``source_lang`` to ``target_lang``; scored with sacreBLEU BLEU and chrF."""

    name: ClassVar[str] = "translation"
    description: ClassVar[str] = "machine translation (parallel files, JSONL/CSV/TSV, hub); sacreBLEU BLEU and chrF"
    families: ClassVar[frozenset[str]] = frozenset({"decoder", "encoder-decoder"})
    options: ClassVar[tuple[Option, ...]] = (
        Option("source_lang", "str", REQUIRED, "source language code, e.g. en"),
        Option("target_lang", "str", REQUIRED, "target language code, e.g. de"),
        Option("source_lang_name", "str", None, "source language name in prompts (default: from the code)"),
        Option("target_lang_name", "str", None, "target language name in prompts (default: from the code)"),
        *pair_data_options(parallel=True),
        Option("source_column", "str", None, "column of the source text (default translation.<source_lang>)"),
        Option("target_column", "str", None, "column of the target text (default translation.<target_lang>)"),
        *text2text_options(TRANSLATION, max_target_length=128, max_new_tokens=128, stop=["\n"]),
        Option(
            "bleu_tokenize",
            "str",
            None,
            "sacreBLEU tokenizer (default: sacreBLEU's for the target language)",
            choices=BLEU_TOKENIZERS,
        ),
        Option("primary_metric", "str", "bleu", "metric for early stopping and the comparison", choices=METRICS),
    )

    def check(self, options: Mapping[str, Any], where: str, ctx: CheckContext) -> list[Problem]:
        problems = data.check(options, where, ctx.offline)
        if options.get("prompt") is not None:
            problems += TRANSLATION.problems(options["prompt"], f"{where}.prompt")
        if not problems:
            problems += read_problems(self.name, options, data.columns(options), where, ctx)
        return problems

    def setup(self, options: Mapping[str, Any], ctx: CellContext) -> TranslationRun:
        from .run import TranslationRun

        budget = ctx.budget
        splits = data.load(options, max_train_examples=budget.max_train_examples, eval_size=budget.eval_size)
        return TranslationRun(
            splits, options, family=ctx.cell.model_family, max_length=budget.max_length, progress=ctx.progress
        )

    def item_statistics(
        self, predictions: Sequence[Mapping[str, Any]], metric: str, options: Mapping[str, Any]
    ) -> ItemStats | None:
        """sacreBLEU's per-sentence statistics of ``bleu`` and ``chrf``, with the task's tokenizer and every reference
        of a row (:func:`harness_plugins.translation.scores.item_statistics`); ``None`` for ``n``."""
        from .scores import item_statistics

        return item_statistics(predictions, metric, options)


@hookimpl
def harness_register_tasks(register: Any) -> None:
    register(TranslationTask())
