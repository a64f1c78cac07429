"""The ``regression`` task: a sentence (or sentence pair) to a real number, as in STS-B; Pearson, Spearman and MSE.

Encoders get a one-output sequence-classification head trained with mean squared error
(``AutoModelForSequenceClassification`` with ``num_labels=1, problem_type="regression"``); see
:mod:`harness_example.regression_run`. Data: CSV, TSV or JSON Lines files with a text column, an optional second text
column and a score column (:mod:`harness_example.regression_data`). Metrics: :mod:`harness_example.scoring`.

This module is imported by ``harness plugins`` and ``harness validate``: it stays light (no torch, no transformers,
no scipy); the heavy run is imported inside :meth:`RegressionTask.setup`, in the cell's worker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from harness.api.components import CellContext, CheckContext, Task
from harness.api.options import REQUIRED, Option
from harness.errors import Problem

from .regression_data import FORMATS, header_problems, load_splits

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.components import TaskRun
    from harness.api.itemstats import ItemStats

METRICS = ("pearson", "spearman", "mse")


class RegressionTask(Task):
    """Sentence (or sentence-pair) regression with a one-output head on encoder models."""

    name: ClassVar[str] = "regression"
    description: ClassVar[str] = "sentence (pair) regression, STS-B style (CSV/TSV/JSONL); Pearson, Spearman, MSE"
    families: ClassVar[frozenset[str]] = frozenset({"encoder"})
    #: The built-in peft strategies (lora, ia3, ...) wrap encoders of tasks that name peft's task type; the head is a
    #: sequence-classification head, so LoRA and friends run this task too.
    peft_task_type: ClassVar[str] = "SEQ_CLS"
    options: ClassVar[tuple[Option, ...]] = (
        Option("train", "path", REQUIRED, "training file (CSV, TSV or JSON Lines)"),
        Option("validation", "path", None, "validation file (default: carved from train, validation_fraction)"),
        Option("test", "path", None, "test file (default: carved from train, test_fraction)"),
        Option("format", "str", "auto", "file format; auto: from each file's extension", choices=FORMATS),
        Option("text_column", "str", "text", "column (CSV/TSV) or key (JSONL) of the text"),
        Option("text_pair_column", "str", None, "column or key of the second text, for sentence pairs"),
        Option("score_column", "str", "score", "column or key of the real-valued score"),
        Option("encoding", "str", "utf-8", "text encoding of the files"),
        Option("validation_fraction", "float", 0.1, "share of train carved out as validation when no file is given"),
        Option("test_fraction", "float", 0.1, "share of train carved out as test when no file is given"),
        Option("data_seed", "int", 0, "seed of carving and subsampling, shared by every cell (never the cell seed)"),
        Option(
            "primary_metric",
            "str",
            "pearson",
            "metric for early stopping and comparisons (mse: lower is better)",
            choices=METRICS,
        ),
    )

    def check(self, options: Mapping[str, Any], where: str, ctx: CheckContext) -> list[Problem]:
        """Each file's format and header (its first line only) and the carving fractions; the rows themselves are
        read when a cell loads them."""
        return header_problems(options, where)

    def setup(self, options: Mapping[str, Any], ctx: CellContext) -> TaskRun:
        """Load the splits (capped by the budget's ``max_train_examples`` and ``eval_size``) and return the run."""
        from .regression_run import RegressionRun  # torch and transformers: in the worker only

        budget = ctx.budget
        splits = load_splits(options, max_train_examples=budget.max_train_examples, eval_size=budget.eval_size)
        return RegressionRun(
            splits, primary_metric=options["primary_metric"], max_length=budget.max_length, progress=ctx.progress
        )

    def item_statistics(
        self, predictions: Sequence[Mapping[str, Any]], metric: str, options: Mapping[str, Any]
    ) -> ItemStats | None:
        """``mse``: ``[squared error, 1]`` per item. ``pearson``: ``[x, y, x², y², xy, 1]`` per item (prediction x,
        reference y), whose sums give Pearson's r exactly. ``None`` for ``spearman`` (ranks are not additive), ``n``
        and rows that cannot be read. See :mod:`harness_example.scoring`."""
        from .scoring import item_statistics  # numpy: only when a report asks

        return item_statistics(predictions, metric)
