"""Per-item statistics of the built-in tasks (``Task.item_statistics``): for every task and metric, the metric of the
column sums of synthetic prediction rows equals the task's own metric function on the same predictions (to 1e-9),
with seqeval's, sacreBLEU's and rouge-score's edge cases; ids are kept; unreadable rows and other metrics give
``None``; and the computation imports neither torch nor transformers."""

from __future__ import annotations

import random
import subprocess
import sys
import warnings

import numpy as np
import pytest
from harness_plugins.classification import ClassificationTask
from harness_plugins.classification.scores import classification_metrics
from harness_plugins.ner import NerTask
from harness_plugins.ner.scores import score as ner_score
from harness_plugins.summarization import SummarizationTask
from harness_plugins.summarization.scores import rouge
from harness_plugins.translation import TranslationTask
from harness_plugins.translation.scores import bleu_chrf

from harness.api.components import Task
from harness.api.itemstats import ItemStats

TOL = 1e-9


def recompute(stats: ItemStats | None) -> float:
    """The metric of the column sums; the vectorised form, when given, must agree on them and on a few subsets."""
    assert stats is not None
    value = stats.metric(stats.values.sum(axis=0))
    if stats.vectorized is not None:
        rng = np.random.default_rng(0)
        masks = np.vstack([np.ones(len(stats)), rng.integers(0, 2, size=(5, len(stats)))])
        sums = masks @ stats.values
        expected = [stats.metric(row) for row in sums]
        assert np.allclose(stats.vectorized(sums), expected, rtol=0, atol=TOL)
    return value


def ids(n: int) -> list[str]:
    return [f"test-{i}" for i in range(n)]


# -- classification ------------------------------------------------------------------------------------------------
CLASSIFICATION = ClassificationTask()
LABELS = ("negative", "neutral", "positive", "other")


def classification_rows(predictions, references):
    return [
        {"id": i, "input": "text", "prediction": p, "reference": r}
        for i, p, r in zip(ids(len(references)), predictions, references, strict=True)
    ]


def encoder_metrics(predictions, references):
    """The encoder path's scoring (ClassificationRun.evaluate): scikit-learn on label ids, labels left to it."""
    from sklearn.metrics import accuracy_score, f1_score

    index = {label: i for i, label in enumerate(LABELS)}
    refs, preds = [index[r] for r in references], [index[p] for p in predictions]
    return {
        "accuracy": float(accuracy_score(refs, preds)),
        "macro_f1": float(f1_score(refs, preds, average="macro", zero_division=0)),
    }


@pytest.mark.parametrize("trial", range(30))
def test_classification_matches_both_paths(trial):
    rnd = random.Random(trial)
    n = rnd.randint(1, 40)
    used = LABELS[: rnd.randint(1, len(LABELS))]
    references = [rnd.choice(used) for _ in range(n)]
    predictions = [rnd.choice(LABELS) if rnd.random() < 0.3 else r for r in references]
    rows = classification_rows(predictions, references)
    for metric, expected in encoder_metrics(predictions, references).items():
        stats = CLASSIFICATION.item_statistics(rows, metric, {"labels": None})
        assert abs(recompute(stats) - expected) < TOL
        assert stats.ids == tuple(ids(n))
    # text-to-text with generate: some answers unparsed (null); macro-F1 over the labels present
    unparsed = [None if rnd.random() < 0.25 else p for p in predictions]
    rows = classification_rows(unparsed, references)
    expected = classification_metrics(unparsed, references, LABELS)
    options = {"labels": None, "verbalizer": {"negative": "bad"}}
    for metric in ("accuracy", "macro_f1"):
        assert abs(recompute(CLASSIFICATION.item_statistics(rows, metric, options)) - expected[metric]) < TOL


def test_classification_columns_and_edge_cases():
    # a label only one cell predicts still gets columns when the options or the loglik scores name it
    rows = classification_rows(["a", "b"], ["a", "a"])
    rows[0]["scores"] = {"a": -1.0, "b": -2.0, "c": -3.0}
    stats = CLASSIFICATION.item_statistics(rows, "macro_f1", {"labels": None})
    assert stats.k == 9  # [tp, fp, fn] of a, b, c (c: zeros, no effect)
    expected = classification_metrics(["a", "b"], ["a", "a"], ["a", "b", "c"])["macro_f1"]
    assert expected == pytest.approx(1 / 3) and abs(recompute(stats) - expected) < TOL
    assert CLASSIFICATION.item_statistics(rows, "macro_f1", {"labels": ["a", "b", "c", "d"]}).k == 12
    # every answer unparsed: accuracy 0, macro-F1 0 over the referenced labels
    rows = classification_rows([None, None], ["a", "b"])
    assert recompute(CLASSIFICATION.item_statistics(rows, "macro_f1", {})) == 0.0
    assert recompute(CLASSIFICATION.item_statistics(rows, "accuracy", {})) == 0.0


# -- NER -----------------------------------------------------------------------------------------------------------
NER = NerTask()
TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-geo-loc", "I-geo-loc")

NER_EDGE_CASES = [
    # I- after O starts an entity (seqeval default mode); I- of another type too
    ([["O", "B-PER", "I-PER"], ["O", "I-LOC", "I-LOC"]], [["O", "I-PER", "I-PER"], ["I-PER", "I-LOC", "O"]]),
    # entities at sentence ends and starts, adjacent sentences (the O seqeval puts between them ends them)
    ([["B-PER", "I-PER"], ["I-PER", "O"]], [["B-PER", "I-PER"], ["I-PER", "O"]]),
    # no predicted entities (precision 0 by zero_division), and no gold entities (recall 0)
    ([["B-PER", "O"], ["O", "O"]], [["O", "O"], ["O", "O"]]),
    ([["O", "O"], ["O"]], [["B-LOC", "I-LOC"], ["B-PER"]]),
    # no entities at all: every metric 0; an empty sentence
    ([["O", "O"], []], [["O", "O"], []]),
    # the same span of two types
    ([["B-PER", "I-PER", "O"]], [["B-LOC", "I-LOC", "O"]]),
]


def random_sentences(rnd: random.Random, n: int) -> tuple[list[list[str]], list[list[str]]]:
    references, predictions = [], []
    for _ in range(n):
        length = rnd.randint(0, 8)
        gold = [rnd.choice(TAGS) for _ in range(length)]
        references.append(gold)
        predictions.append([rnd.choice(TAGS) if rnd.random() < 0.4 else t for t in gold])
    return references, predictions


def ner_rows(references, predictions):
    return [
        {"id": i, "input": "w " * len(r), "prediction": p, "reference": r, "tokens": ["w"] * len(r)}
        for i, r, p in zip(ids(len(references)), references, predictions, strict=True)
    ]


def ner_cases():
    rnd = random.Random(1)
    return NER_EDGE_CASES + [random_sentences(rnd, rnd.randint(1, 25)) for _ in range(25)]


@pytest.mark.parametrize("references, predictions", ner_cases())
def test_ner_matches_seqeval(references, predictions):
    from seqeval.metrics import f1_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ner_score(references, predictions)
        assert expected["f1"] == f1_score(references, predictions, zero_division=0)
    rows = ner_rows(references, predictions)
    per_type = [f"{m}.{t}" for m in ("precision", "recall", "f1") for t in ("PER", "LOC", "geo-loc")]
    for metric in ["precision", "recall", "f1", "token_accuracy", *per_type]:  # absent types: 0, as seqeval's
        stats = NER.item_statistics(rows, metric, {})
        assert abs(recompute(stats) - expected.get(metric, 0.0)) < TOL, metric
        assert stats.ids == tuple(ids(len(rows)))
    assert NER.item_statistics(rows, "f1", {}).values.shape == (len(rows), 3)


def test_ner_unreadable_rows_and_other_metrics_give_none():
    rows = ner_rows([["B-PER", "O"]], [["B-PER", "O"]])
    for metric in ("n", "support.PER", "truncated_words", "unparsed_parts", "f1.", "bleu", "f1x"):
        assert NER.item_statistics(rows, metric, {}) is None, metric
    assert NER.item_statistics(ner_rows([["B-PER", "O"]], [["B-PER"]]), "f1", {}) is None  # unequal lengths
    assert NER.item_statistics([{"id": "a", "reference": ["O"]}], "f1", {}) is None  # no prediction
    assert NER.item_statistics([{"prediction": ["O"], "reference": ["O"]}], "f1", {}) is None  # no id


# -- translation ---------------------------------------------------------------------------------------------------
TRANSLATION = TranslationTask()
HYPOTHESES = [
    "Ein Mann fährt mit dem Fahrrad.",
    "Zwei Hunde spielen im Schnee .",
    "",
    "Eine Frau liest ein Buch im Park, während Kinder spielen.",
    "Das ist gut",
    "Katze",
]
REFERENCES = [
    ["Ein Mann fährt Fahrrad.", "Ein Mann radelt."],
    ["Zwei Hunde spielen im Schnee."],
    ["Niemand ist hier."],
    ["Eine Frau liest im Park ein Buch, während Kinder spielen.", "Im Park liest eine Frau.", "Kinder spielen."],
    ["Das ist sehr gut."],
    ["Eine Katze."],
]


def translation_rows(hypotheses, references):
    rows = []
    for i, h, refs in zip(ids(len(hypotheses)), hypotheses, references, strict=True):
        row = {"id": i, "input": "source", "prediction": h, "reference": refs[0], "prompt": "p"}
        if len(refs) > 1:
            row["references"] = list(refs)
        rows.append(row)
    return rows


@pytest.mark.parametrize(
    "options",
    [
        {"target_lang": "de", "bleu_tokenize": None},
        {"target_lang": "de", "bleu_tokenize": "intl"},
        {"target_lang": "de", "bleu_tokenize": "char"},
        {"target_lang": "zh", "bleu_tokenize": None},  # sacreBLEU's default for Chinese: the zh tokenizer
    ],
)
@pytest.mark.parametrize("subset", [slice(None), slice(1, 2), slice(2, 3), slice(0, 4)])
def test_translation_matches_sacrebleu_corpus_scores(options, subset):
    hypotheses, references = HYPOTHESES[subset], REFERENCES[subset]
    expected = bleu_chrf(hypotheses, references, target_lang=options["target_lang"], tokenize=options["bleu_tokenize"])
    rows = translation_rows(hypotheses, references)
    for metric in ("bleu", "chrf"):
        stats = TRANSLATION.item_statistics(rows, metric, options)
        assert abs(recompute(stats) - expected[metric]) < TOL, metric
        assert stats.ids == tuple(ids(len(rows)))


def test_translation_chinese_and_reference_lists():
    hypotheses, references = ["我喜欢猫。", "今天天气很好"], [["我喜欢小猫。"], ["今天天气很好。", "天气不错"]]
    expected = bleu_chrf(hypotheses, references, target_lang="zh")
    pairs = enumerate(zip(hypotheses, references, strict=True))
    rows = [{"id": str(i), "prediction": h, "reference": r} for i, (h, r) in pairs]
    stats = TRANSLATION.item_statistics(rows, "bleu", {"target_lang": "zh"})  # "reference" given as a list
    assert abs(recompute(stats) - expected["bleu"]) < TOL


def test_translation_unreadable_rows_and_other_metrics_give_none():
    rows = translation_rows(HYPOTHESES[:2], REFERENCES[:2])
    assert TRANSLATION.item_statistics(rows, "n", {"target_lang": "de"}) is None
    assert TRANSLATION.item_statistics(rows, "ter", {"target_lang": "de"}) is None
    broken = [dict(rows[0], prediction=None), rows[1]]
    assert TRANSLATION.item_statistics(broken, "bleu", {"target_lang": "de"}) is None
    assert TRANSLATION.item_statistics([{"id": "a", "prediction": "x"}], "chrf", {"target_lang": "de"}) is None
    assert TRANSLATION.item_statistics([], "bleu", {"target_lang": "de"}) is None


# -- summarization -------------------------------------------------------------------------------------------------
SUMMARIZATION = SummarizationTask()
SUMMARIES = [
    "The cat sat on the mat. It was happy!",
    "Dogs are running in the park",
    "",
    "A long summary. With several sentences? Yes.\nAnd a line break.",
]
SUMMARY_REFERENCES = [
    ["A cat sat on a mat. The cat was happy."],
    ["The dog runs in the park.", "Dogs run in parks.", "Nothing alike."],
    ["Some reference."],
    ["A long summary with several sentences. And a line break.", "Yes. A long summary."],
]


def test_summarization_matches_rouge():
    expected = rouge(SUMMARIES, SUMMARY_REFERENCES)
    rows = translation_rows(SUMMARIES, SUMMARY_REFERENCES)
    for metric in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        stats = SUMMARIZATION.item_statistics(rows, metric, {})
        assert abs(recompute(stats) - expected[metric]) < TOL, metric
        assert stats.ids == tuple(ids(len(rows))) and stats.k == 2
    assert SUMMARIZATION.item_statistics(rows, "n", {}) is None
    assert SUMMARIZATION.item_statistics([{"id": "a", "prediction": "x"}], "rouge1", {}) is None


# -- every task ----------------------------------------------------------------------------------------------------
def test_default_task_and_unknown_metrics_give_none():
    class Bare(Task):
        name = "bare"

        def setup(self, options, ctx):  # pragma: no cover - never run
            raise NotImplementedError

    assert Bare().item_statistics([{"id": "a", "prediction": 1, "reference": 1}], "accuracy", {}) is None
    rows = [{"id": "a", "prediction": "x", "reference": "x"}]
    for task in (CLASSIFICATION, NER, TRANSLATION, SUMMARIZATION):
        assert task.item_statistics(rows, "no_such_metric", {"target_lang": "de"}) is None
        assert task.item_statistics([{"id": "a"}, {"no": "id"}], task_metric(task), {"target_lang": "de"}) is None
    duplicated = [{"id": "a", "prediction": "x", "reference": "x"}] * 2  # items could not be paired
    assert CLASSIFICATION.item_statistics(duplicated, "accuracy", {}) is None


def task_metric(task: Task) -> str:
    return {"classification": "accuracy", "ner": "f1", "translation": "bleu", "summarization": "rougeL"}[task.name]


def test_item_statistics_import_neither_torch_nor_transformers():
    code = """
import sys
from harness_plugins.classification import ClassificationTask
from harness_plugins.ner import NerTask
from harness_plugins.summarization import SummarizationTask
from harness_plugins.translation import TranslationTask

text = [{"id": "a", "prediction": "Ein Hund spielt im Park.", "reference": "Ein Hund spielt im Park."}]
tags = [{"id": "a", "prediction": ["B-PER", "O"], "reference": ["B-PER", "O"]}]
for task, rows, metrics in [
    (ClassificationTask(), text, ["accuracy", "macro_f1"]),
    (NerTask(), tags, ["f1", "precision", "recall", "f1.PER", "token_accuracy"]),
    (TranslationTask(), text, ["bleu", "chrf"]),
    (SummarizationTask(), text, ["rouge1", "rouge2", "rougeL", "rougeLsum"]),
]:
    for metric in metrics:
        stats = task.item_statistics(rows, metric, {"target_lang": "de"})
        assert stats is not None and stats.score() > 0, (task.name, metric)
heavy = [m for m in ("torch", "transformers") if m in sys.modules]
assert not heavy, heavy
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
