"""Summarization task ``summarization``: text-to-text on decoder and encoder-decoder models, ROUGE F1 scores.

Data: JSONL / CSV / TSV files with a document column and one or more summary columns (several references per
document, as in DialogSum's test set), or a hub dataset (:mod:`harness.tasklib.textpairs`,
:mod:`harness_plugins.summarization.data`). Documents longer than the prompt's budget (``budget.max_length``) are cut
at a token boundary, never the template (:mod:`harness.tasklib.text2text`); ``max_target_length``, ``max_new_tokens``,
``num_beams`` and ``stop`` set training targets and generation.

Metrics (:mod:`harness_plugins.summarization.scores`): ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F1 from rouge-score's
``RougeScorer(use_stemmer=True)`` (Porter stemmer), the best reference per example and metric, averaged over examples,
reported as fractions in 0..1 (not percentages). Primary: ``rougeL`` unless ``primary_metric`` says otherwise.

This module stays light (no torch); the run lives in :mod:`harness_plugins.summarization.run`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from harness.api.components import CellContext, CheckContext, Task
from harness.api.hookspecs import hookimpl
from harness.api.options import Option
from harness.errors import Problem
from harness.tasklib.paircheck import read_problems
from harness.tasklib.prompts import SUMMARIZATION, text2text_options
from harness.tasklib.textpairs import pair_data_options

from . import data

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.itemstats import ItemStats

    from .run import SummarizationRun

METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


class SummarizationTask(Task):
    """Summarise a document; scored with ROUGE F1 (max over references)."""

    name: ClassVar[str] = "summarization"
    description: ClassVar[str] = "summarization (JSONL/CSV/TSV, hub; several references); ROUGE-1/2/L/Lsum F1"
    families: ClassVar[frozenset[str]] = frozenset({"decoder", "encoder-decoder"})
    options: ClassVar[tuple[Option, ...]] = (
        *pair_data_options(parallel=False),
        Option("document_column", "str", "document", "column of the document (dots address nested keys)"),
        Option(
            "summary_columns",
            "list[str]",
            ["summary"],
            "columns of reference summaries; each row uses those it has (e.g. summary, summary1, summary2)",
        ),
        *text2text_options(SUMMARIZATION, max_target_length=128, max_new_tokens=128, stop=["\n\n"]),
        Option("primary_metric", "str", "rougeL", "metric for early stopping and the comparison", choices=METRICS),
    )

    def check(self, options: Mapping[str, Any], where: str, ctx: CheckContext) -> list[Problem]:
        problems = data.check(options, where, ctx.offline)
        if options.get("prompt") is not None:
            problems += SUMMARIZATION.problems(options["prompt"], f"{where}.prompt")
        if not problems:
            problems += read_problems(self.name, options, data.columns(options), where, ctx)
        return problems

    def setup(self, options: Mapping[str, Any], ctx: CellContext) -> SummarizationRun:
        from .run import SummarizationRun

        budget = ctx.budget
        splits = data.load(options, max_train_examples=budget.max_train_examples, eval_size=budget.eval_size)
        return SummarizationRun(
            splits, options, family=ctx.cell.model_family, max_length=budget.max_length, progress=ctx.progress
        )

    def item_statistics(
        self, predictions: Sequence[Mapping[str, Any]], metric: str, options: Mapping[str, Any]
    ) -> ItemStats | None:
        """Each item's best F1 over its references for ``rouge1``, ``rouge2``, ``rougeL``, ``rougeLsum``
        (:func:`harness_plugins.summarization.scores.item_statistics`); ``None`` for ``n``."""
        from .scores import item_statistics

        return item_statistics(predictions, metric, options)


@hookimpl
def harness_register_tasks(register: Any) -> None:
    register(SummarizationTask())
