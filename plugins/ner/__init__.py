"""Named-entity recognition task ``ner`` on every model family; entity-level F1 with seqeval.

Data: CoNLL-style files, span-annotated JSON lines (annotation-tool exports and the CLUENER2020 layout, turned into
word or character tokens) and Hugging Face datasets with ``tokens`` and ``ner_tags`` columns (see
:mod:`harness_plugins.ner.data`). Tags of any scheme are normalised to IOB2. Every cell of a suite uses the same split
and subsample (``data_seed``, never the cell seed).

Encoder models get a token-classification head (:mod:`harness_plugins.ner.run`). Decoder (causal LM) and
encoder-decoder models run as text-to-text (:mod:`harness_plugins.ner.text2text`): the prompt
(:data:`harness.tasklib.prompts.NER`, or the ``prompt`` option, with fields ``{text}``, ``{types}``, ``{empty_answer}``;
default templates there) asks for the entities as
``type: surface; type: surface`` or ``none`` (:mod:`harness_plugins.ner.entities`); answers are parsed back to
IOB2 tags and scored by the same seqeval function, so the metrics of both paths compare directly.

This module stays light (no torch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from harness.api.components import CellContext, CheckContext, Task
from harness.api.hookspecs import hookimpl
from harness.api.options import Option
from harness.errors import Problem
from harness.tasklib.datacheck import check_by_reading, note_data_warnings
from harness.tasklib.datafiles import SPLITS
from harness.tasklib.datahub import uses_hub
from harness.tasklib.prompts import NER, text2text_options

from .data import DELIMITERS, FORMATS, check_files, load_splits
from .entities import EMPTY_ANSWER
from .spans import TOKENIZATIONS
from .tags import SCHEMES

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.itemstats import ItemStats

    from .run import NerRun
    from .text2text import NerTextRun


class NerTask(Task):
    """Named-entity recognition: one IOB2 tag per word, scored on whole entities (seqeval, micro F1 primary)."""

    name: ClassVar[str] = "ner"
    description: ClassVar[str] = (
        "named-entity recognition (CoNLL, span JSONL, CLUENER, hub); seqeval entity F1; "
        "encoder, decoder and encoder-decoder models"
    )
    families: ClassVar[frozenset[str]] = frozenset({"encoder", "decoder", "encoder-decoder"})
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "format",
            "str",
            "auto",
            "conll, spans (JSONL with character offsets), cluener, or hub; auto: hub without a train file, else "
            "from the extension (.jsonl/.json: the layout of the first line)",
            choices=FORMATS,
        ),
        Option("train", "path", None, "training file (exactly one of train, dataset, dataset_path)"),
        Option("validation", "path", None, "validation file (default: carved from train, validation_fraction)"),
        Option("test", "path", None, "test file (default: carved from train, test_fraction)"),
        Option("dataset", "str", None, "Hugging Face Hub dataset id (e.g. eriktks/conll2003); offline: cached only"),
        Option("dataset_path", "path", None, "local dataset folder (Parquet/JSONL/Arrow files by split, save_to_disk)"),
        Option("dataset_config", "str", None, "config (subset) name of the dataset"),
        Option("train_split", "str", "train", "split of the dataset used for training"),
        Option("validation_split", "str", "validation", "dataset split for validation (absent: carved from train)"),
        Option("test_split", "str", "test", "dataset split for testing (absent: carved from train)"),
        Option("tokens_column", "str", "tokens", "dataset column of the word lists"),
        Option("tags_column", "str", "ner_tags", "dataset column of the tags (ClassLabel names are used)"),
        Option("encoding", "str", "utf-8", "text encoding of the data files"),
        Option("delimiter", "str", "auto", "CoNLL column separator; auto: tab if the first line has one", DELIMITERS),
        Option("token_column", "int", 0, "CoNLL column of the token (0-based; negative counts from the end)"),
        Option("tag_column", "int", -1, "CoNLL column of the tag (0-based; negative counts from the end)"),
        Option("scheme", "str", "auto", "tagging scheme of the data, normalised to IOB2; auto: detected", SCHEMES),
        Option("text_key", "str", "text", "JSONL key of the text"),
        Option("entities_key", "str", None, "JSONL key of the entities (default: entities; cluener: label)"),
        Option("span_keys", "list[str]", ["start", "end", "label"], "spans: keys of an entity's start, end, type"),
        Option(
            "tokenization",
            "str",
            "auto",
            "span data: word (word_pattern) or char tokens; auto: char when most texts have no whitespace",
            TOKENIZATIONS,
        ),
        Option("word_pattern", "str", r"\S+", r"regular expression of a word (e.g. \w+|[^\w\s] splits punctuation)"),
        Option("entity_types", "list[str]", None, "the entity types (default: ClassLabel names, else those in train)"),
        Option(
            "label_all_subtokens",
            "bool",
            False,
            "train every sub-token of a word (later ones with the I- tag), not only the first",
        ),
        *text2text_options(NER, max_target_length=64, max_new_tokens=64, stop=["\n"]),
        Option(
            "empty_answer",
            "str",
            EMPTY_ANSWER,
            'text-to-text answer for a sentence without entities; others read "type: entity; type: entity" with the '
            "data's type names, entities in order (decoder and encoder-decoder models)",
        ),
        Option("validation_fraction", "float", 0.1, "share of train carved out as validation when there is none"),
        Option("test_fraction", "float", 0.1, "share of train carved out as test when there is none"),
        Option(
            "data_seed",
            "int",
            0,
            "seed of carving and subsampling; shared by all cells (the cell seed never changes the data)",
        ),
    )

    def check(self, options: Mapping[str, Any], where: str, ctx: CheckContext) -> list[Problem]:
        problems = check_files(options, where)
        if options.get("prompt") is not None:
            problems += NER.problems(options["prompt"], f"{where}.prompt")
        empty = options["empty_answer"].strip()
        if not empty or ";" in empty or ":" in empty:
            problems.append(Problem(f"{where}.empty_answer", "expected a non-blank answer without ';' or ':'"))
        if not problems and not uses_hub(options):
            files = [options[split] for split in SPLITS if options.get(split)]
            problems += check_by_reading(
                self.name, options, files, lambda: load_splits(options).warnings, where, ctx
            )
        return problems

    def setup(self, options: Mapping[str, Any], ctx: CellContext) -> NerRun | NerTextRun:
        budget = ctx.budget
        splits = load_splits(options, max_train_examples=budget.max_train_examples, eval_size=budget.eval_size)
        if ctx.cell.model_family != "encoder":
            from .text2text import NerTextRun

            run: NerRun | NerTextRun = NerTextRun(
                splits, options, family=ctx.cell.model_family, max_length=budget.max_length, progress=ctx.progress
            )
        else:
            from .run import NerRun

            run = NerRun(
                splits,
                max_length=budget.max_length,
                label_all_subtokens=options["label_all_subtokens"],
                progress=ctx.progress,
            )
        return note_data_warnings(run, splits.warnings)

    def item_statistics(
        self, predictions: Sequence[Mapping[str, Any]], metric: str, options: Mapping[str, Any]
    ) -> ItemStats | None:
        """Entity counts per sentence for ``precision``, ``recall``, ``f1`` (micro) and their per-type versions, tag
        counts for ``token_accuracy`` (:func:`harness_plugins.ner.scores.item_statistics`); ``None`` for others."""
        from .scores import item_statistics

        return item_statistics(predictions, metric, options)


@hookimpl
def harness_register_tasks(register: Any) -> None:
    register(NerTask())
