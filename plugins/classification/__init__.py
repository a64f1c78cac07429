"""Text classification task ``classification``: a sequence-classification head on an encoder, accuracy and macro-F1.

Data comes from CSV, TSV, JSONL, a text file with a parallel label file (the TweetEval layout), or a Hugging Face
dataset: a hub id (``dataset``) or a local dataset folder (``dataset_path``, see
:mod:`harness_plugins.classification.hub`). Every cell of a suite uses the same split and the same subsample: carving and capping are seeded with ``data_seed``, never with the
cell seed, so strategies and seeds are compared on identical data (see :mod:`harness_plugins.classification.data`).

This module stays light (no torch); the run itself lives in :mod:`harness_plugins.classification.run`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from harness.components import CellContext, CheckContext, Task
from harness.errors import Problem
from harness.hookspecs import hookimpl
from harness.options import Option

from .data import FORMATS, check_files, load_splits

if TYPE_CHECKING:  # pragma: no cover
    from .run import ClassificationRun

METRICS = ("accuracy", "macro_f1")


class ClassificationTask(Task):
    """Single-label text (or sentence-pair) classification with a sequence-classification head."""

    name: ClassVar[str] = "classification"
    description: ClassVar[str] = "text classification (CSV/TSV/JSONL/text files, hub datasets); accuracy, macro-F1"
    families: ClassVar[frozenset[str]] = frozenset({"encoder"})
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "format",
            "str",
            "auto",
            "data format; auto: hub when dataset or dataset_path is given, else from each file's extension",
            choices=FORMATS,
        ),
        Option("train", "path", None, "training data file (exactly one of train, dataset, dataset_path)"),
        Option(
            "dataset",
            "str",
            None,
            "Hugging Face Hub dataset id (e.g. dair-ai/emotion); offline, validate checks the local datasets cache, "
            "online it is first fetched when a cell loads it",
        ),
        Option(
            "dataset_path",
            "path",
            None,
            "local dataset folder: Parquet/JSONL/CSV/Arrow files named by split (train.parquet, test.jsonl, ...) "
            "or a save_to_disk folder",
        ),
        Option("dataset_config", "str", None, "config (subset) name of the dataset"),
        Option("train_split", "str", "train", "split of the dataset used for training"),
        Option("validation_split", "str", "validation", "dataset split for validation (absent: carved from train)"),
        Option("test_split", "str", "test", "dataset split for testing (absent: carved from train)"),
        Option("validation", "path", None, "validation file (default: carved from train, validation_fraction)"),
        Option("test", "path", None, "test file (default: carved from train, test_fraction)"),
        Option("train_labels", "path", None, "text-files: one label per line of train"),
        Option("validation_labels", "path", None, "text-files: one label per line of validation"),
        Option("test_labels", "path", None, "text-files: one label per line of test"),
        Option(
            "label_map",
            "path",
            None,
            "`id<TAB>name` lines or one name per line (ids 0, 1, ...); maps ids to names, its order is the label order",
        ),
        Option("text_column", "str", "text", "column (CSV/TSV/dataset) or key (JSONL) of the text"),
        Option("text_pair_column", "str", None, "column or key of the second text, for sentence pairs"),
        Option("label_column", "str", "label", "column or key of the label (a ClassLabel column gives names)"),
        Option(
            "labels",
            "list[str]",
            None,
            "the label set in id order (default: label_map, else a ClassLabel's names, else sorted train labels)",
        ),
        Option("encoding", "str", "utf-8", "text encoding of the data files (e.g. latin-1)"),
        Option("validation_fraction", "float", 0.1, "share of train carved out as validation when no file is given"),
        Option("test_fraction", "float", 0.1, "share of train carved out as test when no file is given"),
        Option(
            "data_seed",
            "int",
            0,
            "seed of carving and subsampling; shared by all cells (the cell seed never changes the data)",
        ),
        Option("primary_metric", "str", "accuracy", "metric for early stopping and the comparison", choices=METRICS),
    )

    def check(self, options: Mapping[str, Any], where: str, ctx: CheckContext) -> list[Problem]:
        return check_files(options, where)

    def setup(self, options: Mapping[str, Any], ctx: CellContext) -> ClassificationRun:
        from .run import ClassificationRun

        budget = ctx.budget
        splits = load_splits(options, max_train_examples=budget.max_train_examples, eval_size=budget.eval_size)
        return ClassificationRun(
            splits, primary_metric=options["primary_metric"], max_length=budget.max_length, progress=ctx.progress
        )


@hookimpl
def harness_register_tasks(register: Any) -> None:
    register(ClassificationTask())
