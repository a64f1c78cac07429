"""Text classification task ``classification``: accuracy and macro-F1 on encoder, decoder and encoder-decoder models.

Encoders get a sequence-classification head (:mod:`harness_plugins.classification.run`). Decoders (causal LMs) and
encoder-decoders run it as text-to-text (:mod:`harness_plugins.classification.text2text`): each label is rendered as a
string by the *verbaliser* (the label name, or the ``verbalizer`` table's text for it;
:mod:`harness_plugins.classification.verbalizer`), the prompt lists the verbalised labels (``{labels}``, templates in
:mod:`harness.tasklib.prompts`), training teaches the model to answer with the verbalised label, and ``decision``
picks how an answer is read: ``loglik`` scores every verbalised label as a continuation of the prompt and takes the
most likely (multiple choice, as lm-eval does), ``generate`` generates greedily and parses the answer back to a label.

Data comes from CSV, TSV, JSONL, a text file with a parallel label file (the TweetEval layout), or a Hugging Face
dataset: a hub id (``dataset``) or a local dataset folder (``dataset_path``, see
:mod:`harness_plugins.classification.hub`). Every cell of a suite uses the same split and the same subsample: carving and capping are seeded with ``data_seed``, never with the
cell seed, so strategies and seeds are compared on identical data (see :mod:`harness_plugins.classification.data`).

This module stays light (no torch); the runs live in :mod:`harness_plugins.classification.run` (encoder) and
:mod:`harness_plugins.classification.text2text` (decoder, encoder-decoder).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from harness.api.components import CellContext, CheckContext, Task
from harness.api.hookspecs import hookimpl
from harness.api.options import Option
from harness.errors import HarnessError, Problem
from harness.tasklib.datacheck import check_by_reading, note_data_warnings
from harness.tasklib.datahub import uses_hub
from harness.tasklib.prompts import CLASSIFICATION, template_fields, text2text_options

from .data import DATA_FILE_KEYS, FORMATS, check_files, load_splits, read_label_map
from .verbalizer import task_prompts as task_prompts  # re-exported: importable from the package
from .verbalizer import verbalise as verbalise
from .verbalizer import verbalizer_problems

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.components import TaskRun
    from harness.api.itemstats import ItemStats

METRICS = ("accuracy", "macro_f1")
DECISIONS = ("loglik", "generate")


def _known_labels(options: Mapping[str, Any]) -> list[str] | None:
    """The label set when it is known without reading the data (``labels`` option or ``label_map``), else ``None``."""
    if options.get("labels"):
        return list(options["labels"])
    if options.get("label_map"):
        try:
            return list(read_label_map(options["label_map"], options["encoding"]).values())
        except HarnessError:
            return None  # check_files reports it
    return None


class ClassificationTask(Task):
    """Single-label text (or sentence-pair) classification: a sequence-classification head on encoders, verbalised
    labels scored by log-likelihood or generated on decoders and encoder-decoders."""

    name: ClassVar[str] = "classification"
    description: ClassVar[str] = "text classification (CSV/TSV/JSONL/text files, hub datasets); accuracy, macro-F1"
    families: ClassVar[frozenset[str]] = frozenset({"encoder", "decoder", "encoder-decoder"})
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
        # -- decoder and encoder-decoder models (text-to-text); encoders ignore these ----------------------------
        Option(
            "verbalizer",
            "table",
            None,
            "text-to-text: label -> the text standing for it in prompts, targets and answers (default: the label name)",
        ),
        Option(
            "decision",
            "str",
            "loglik",
            "text-to-text: loglik scores each verbalised label as the prompt's continuation and takes the most likely; "
            "generate generates greedily and parses the answer",
            choices=DECISIONS,
        ),
        Option(
            "length_normalise",
            "bool",
            False,
            "loglik: divide each label's summed log-probability by its number of tokens",
        ),
        *(
            option
            if option.name != "max_new_tokens"
            else Option(
                "max_new_tokens",
                "int",
                None,
                "generate: tokens generated at most (default: the longest verbalised label in tokens + 2)",
                minimum=1,
            )
            for option in text2text_options(CLASSIFICATION, max_target_length=32, max_new_tokens=1, stop=["\n"])
        ),
    )

    def check(self, options: Mapping[str, Any], where: str, ctx: CheckContext) -> list[Problem]:
        """The data files (:func:`~harness_plugins.classification.data.check_files`), the ``prompt`` template and the
        ``verbalizer`` table; its labels are checked here when the label set is known without reading the data
        (``labels``, ``label_map``), else when a cell loads the data."""
        problems = check_files(options, where)
        template = options.get("prompt")
        if template is not None:
            problems += CLASSIFICATION.problems(template, f"{where}.prompt")
            fields = _template_fields(template)
            if "text_pair" in fields and not options.get("text_pair_column"):
                problems.append(Problem(f"{where}.prompt", "uses {text_pair} but text_pair_column is not set"))
            if options.get("text_pair_column") and fields is not None and "text_pair" not in fields:
                problems.append(
                    Problem(f"{where}.prompt", "text_pair_column is set: the template must contain {text_pair}")
                )
        if options.get("verbalizer") is not None:
            problems += verbalizer_problems(options["verbalizer"], _known_labels(options), f"{where}.verbalizer")
        if not problems and not uses_hub(options):
            files = [options[key] for key in DATA_FILE_KEYS if options.get(key)]
            problems += check_by_reading(
                self.name, options, files, lambda: load_splits(options).warnings, where, ctx
            )
        return problems

    def setup(self, options: Mapping[str, Any], ctx: CellContext) -> TaskRun:
        budget = ctx.budget
        splits = load_splits(options, max_train_examples=budget.max_train_examples, eval_size=budget.eval_size)
        family = ctx.cell.model_family
        if family != "encoder":
            from .text2text import TextClassificationRun

            run: TaskRun = TextClassificationRun(
                splits, options, family=family, max_length=budget.max_length, progress=ctx.progress
            )
        else:
            from .run import ClassificationRun

            run = ClassificationRun(
                splits, primary_metric=options["primary_metric"], max_length=budget.max_length, progress=ctx.progress
            )
        return note_data_warnings(run, splits.warnings)

    def item_statistics(
        self, predictions: Sequence[Mapping[str, Any]], metric: str, options: Mapping[str, Any]
    ) -> ItemStats | None:
        """``accuracy`` and ``macro_f1`` per test item, from either path's rows
        (:func:`harness_plugins.classification.scores.item_statistics`); ``None`` for ``n`` and ``unparsed``."""
        from .scores import item_statistics

        return item_statistics(predictions, metric, options)


def _template_fields(template: str) -> tuple[str, ...] | None:
    try:
        return template_fields(template)
    except ValueError:
        return None  # reported by TaskPrompts.problems


@hookimpl
def harness_register_tasks(register: Any) -> None:
    register(ClassificationTask())
