"""The ``tagging`` task: one tag per word (part of speech, chunks) from CoNLL-style files; per-word accuracy.

Encoders get a token-classification head (``AutoModelForTokenClassification``, one output per tag); each word's tag
is learnt on, and predicted from, its first sub-token (:mod:`harness_example.tagging_run`). Data: CoNLL-style files
with a word column and a tag column (:mod:`harness_example.tagging_data`). Metrics: per-word accuracy (primary) and
whole-sentence accuracy (:mod:`harness_example.tagging_scoring`).

This module is imported by ``harness plugins`` and ``harness validate``: it stays light (no torch, no transformers,
no numpy); the heavy run is imported inside :meth:`TaggingTask.setup`, in the cell's worker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from harness.api.components import CellContext, CheckContext, Task
from harness.api.options import REQUIRED, Option
from harness.errors import Problem

from .tagging_data import DELIMITERS, header_problems, load_splits

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.components import TaskRun
    from harness.api.itemstats import ItemStats


class TaggingTask(Task):
    """Word-level tagging with a token-classification head on encoder models."""

    name: ClassVar[str] = "tagging"
    description: ClassVar[str] = "word tagging (part of speech, chunks) from CoNLL-style files; per-word accuracy"
    families: ClassVar[frozenset[str]] = frozenset({"encoder"})
    #: The built-in peft strategies (lora, ia3, ...) wrap the encoder as peft's token-classification task.
    peft_task_type: ClassVar[str] = "TOKEN_CLS"
    options: ClassVar[tuple[Option, ...]] = (
        Option("train", "path", REQUIRED, "training file (CoNLL-style: a word a line, a blank line between sentences)"),
        Option("validation", "path", None, "validation file (default: carved from train, validation_fraction)"),
        Option("test", "path", None, "test file (default: carved from train, test_fraction)"),
        Option("delimiter", "str", "auto", "column separator; auto: tab if the first word line has one", DELIMITERS),
        Option("token_column", "int", 0, "column of the word (0-based; negative counts from the end)"),
        Option("tag_column", "int", -1, "column of the tag (0-based; negative counts from the end)"),
        Option("labels", "list[str]", None, "the tags in label-id order (default: the training file's tags, sorted)"),
        Option("encoding", "str", "utf-8", "text encoding of the files"),
        Option("validation_fraction", "float", 0.1, "share of train carved out as validation when no file is given"),
        Option("test_fraction", "float", 0.1, "share of train carved out as test when no file is given"),
        Option("data_seed", "int", 0, "seed of carving and subsampling, shared by every cell (never the cell seed)"),
    )

    def check(self, options: Mapping[str, Any], where: str, ctx: CheckContext) -> list[Problem]:
        """Each file's first word line, the labels and the carving fractions; the rows are read by the cell."""
        return header_problems(options, where)

    def setup(self, options: Mapping[str, Any], ctx: CellContext) -> TaskRun:
        """Load the splits (capped by the budget's ``max_train_examples`` and ``eval_size``) and return the run."""
        from .tagging_run import TaggingRun  # torch and transformers: in the worker only

        budget = ctx.budget
        splits = load_splits(options, max_train_examples=budget.max_train_examples, eval_size=budget.eval_size)
        return TaggingRun(splits, max_length=budget.max_length, progress=ctx.progress)

    def item_statistics(
        self, predictions: Sequence[Mapping[str, Any]], metric: str, options: Mapping[str, Any]
    ) -> ItemStats | None:
        """Per sentence: ``accuracy`` ``[correct words, words]`` (the sums' ratio is the micro accuracy),
        ``sentence_accuracy`` ``[all correct, 1]``; ``None`` for the counts and for rows that cannot be read. See
        :mod:`harness_example.tagging_scoring`."""
        from .tagging_scoring import item_statistics  # numpy: only when a report asks

        return item_statistics(predictions, metric)
