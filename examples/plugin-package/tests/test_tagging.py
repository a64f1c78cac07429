"""The ``tagging`` task: sub-word label alignment, padding, a cell end to end with its metrics recomputed from the saved
predictions, truncation, bias tuning (BitFit) on a token head, carving, validate-time checks and data errors.

The tokenizer that ships with the harness for tests (``tiny_model()["tokenizer"]``) has 178 entries: the special
tokens, single characters and ``##``-continuations of letters and digits, and 69 whole words. Words outside those 69
are split, mostly into characters (``garden`` -> ``g ##a ##r ##d ##e ##n``), which makes alignment testable here.
"""

from __future__ import annotations

import json
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest
from harness.api.components import CheckContext
from harness.api.paths import resolve_path
from harness.errors import HarnessError
from harness.testing import tiny_model

from harness_example.tagging import TaggingTask
from harness_example.tagging_corpus import LEXICON, TAGS, task_table, write_corpus
from harness_example.tagging_data import Sentence, Splits, load_splits, read_conll
from harness_example.tagging_scoring import item_statistics, tagging_metrics

#: Full fine-tuning of the tiny random BERT learns the toy grammar within 100 steps (accuracy ~0.87 on these data).
LEARN = {"max_steps": 100, "batch_size": 16, "learning_rate": 1e-3}
H, I, L, C = 32, 64, 2, len(TAGS)  # noqa: E741 (hidden, intermediate, layers, classes)


def rows(cell: Path) -> list[dict]:
    return [json.loads(line) for line in (cell / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


def options(**overrides) -> dict:
    return {o.name: o.default for o in TaggingTask.options} | overrides


def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve_path(tiny_model()["tokenizer"])))


def run_over(*sentences: tuple[str, ...], padding_side: str = "right"):
    """A :class:`TaggingRun` over ``sentences`` (words of the toy lexicon, tagged from it) with the shipped
    tokenizer, no model."""
    from harness_example.tagging_run import TaggingRun

    tag_of = {word: tag for tag, words in LEXICON.items() for word in words}
    train = tuple(Sentence(f"train-{i}", words, tuple(tag_of[w] for w in words)) for i, words in enumerate(sentences))
    run = TaggingRun(Splits(train=train, validation=(), test=(), labels=TAGS), max_length=64)
    tok = tokenizer()
    tok.padding_side = padding_side
    run.bind_tokenizer(tok)
    return run


def test_the_shipped_tokenizer_splits_words_outside_its_vocabulary_into_characters():
    tok = tokenizer()
    assert len(tok) == 178 and tok.is_fast
    assert tok.tokenize("the movie") == ["the", "movie"]
    assert tok.tokenize("garden") == ["g", "##a", "##r", "##d", "##e", "##n"]
    corpus = resources.files("harness_example") / "data" / "tagging" / "train.conll"
    words = [line.split("\t")[0] for line in corpus.read_text(encoding="utf-8").splitlines() if line]
    split = sum(len(tok.tokenize(w)) > 1 for w in words)
    assert 0.25 < split / len(words) < 0.75  # both kinds of word are common in the example corpus


def test_only_the_first_sub_token_of_each_word_carries_its_label():
    run = run_over(("the", "cat", "watched", "the", "garden"), ("it", "is", "good"))
    first, second = run.examples("train")
    tokens = run._tokenizer.convert_ids_to_tokens(first["input_ids"])
    assert tokens == ["[CLS]", "the", "c", "##a", "##t", "w", "##a", "##t", "##c", "##h", "##e", "##d", "the",
                      "g", "##a", "##r", "##d", "##e", "##n", "[SEP]"]  # fmt: skip
    label = {tag: run.label2id[tag] for tag in TAGS}
    x = -100
    assert first["labels"] == [x, label["DET"], label["NOUN"], x, x, label["VERB"], x, x, x, x, x, x, label["DET"],
                               label["NOUN"], x, x, x, x, x, x]  # fmt: skip
    assert second["labels"] == [x, label["PRON"], label["VERB"], label["ADJ"], x]  # three words of the vocabulary

    batch = run.collate([first, second])  # pad_batch with labels padded with -100, the others with their pad values
    assert batch["input_ids"].shape == batch["labels"].shape == (2, 20)
    assert batch["labels"][1].tolist() == second["labels"] + [x] * 15
    assert batch["input_ids"][1].tolist()[5:] == [0] * 15 and batch["attention_mask"][1].tolist()[5:] == [0] * 15
    assert run.loss_units(batch) == 5 + 3  # the loss averages over words, not sub-tokens

    left = run_over(("the", "cat", "watched", "the", "garden"), ("it", "is", "good"), padding_side="left")
    batch = left.collate(list(left.examples("train")))
    assert batch["labels"][1].tolist() == [x] * 15 + second["labels"]


def test_each_word_is_predicted_by_its_first_sub_token():
    run = run_over(("the", "cat", "watched"))
    [example] = run.examples("train")
    noun, verb, adj = run.label2id["NOUN"], run.label2id["VERB"], run.label2id["ADJ"]
    # [CLS] the c ##a ##t w ##a ##t ##c ##h ##e ##d [SEP]: later sub-tokens and special tokens say ADJ, ignored
    per_token = [adj, run.label2id["DET"], noun, adj, adj, verb, adj, adj, adj, adj, adj, adj, adj]
    assert len(per_token) == len(example["input_ids"])
    assert run.word_tags("train", 0, per_token) == ["DET", "NOUN", "VERB"]
    with pytest.raises(ValueError, match="12 predictions for 13 sub-tokens"):
        run.word_tags("train", 0, per_token[:-1])


def test_cell_learns_and_its_metrics_match_the_predictions(example_plugin, harness_run_cell, tagging_data, tmp_path):
    record = harness_run_cell(task=task_table(tagging_data), strategy="full", model=tiny_model(), budget=LEARN)
    assert record.status == "ok", record.error
    assert record.primary_metric == "accuracy"
    assert set(record.metrics) == {"accuracy", "sentence_accuracy", "unaligned_words", "n", "words"}
    assert record.metric_info["word_prediction"] == "first sub-token"
    assert record.metric_info["labels"] == " ".join(TAGS)

    predictions = rows(tmp_path / "harness-run-1" / "cell")
    assert len(predictions) == record.metrics["n"] == 64
    assert [list(r)[:4] for r in predictions[:1]] == [["id", "input", "prediction", "reference"]]
    file = read_conll(tagging_data["test"], tagging_data["test"].read_text(encoding="utf-8").splitlines(), options())
    assert [r["reference"] for r in predictions] == [list(s.tags) for s in file]
    assert [r["tokens"] for r in predictions] == [list(s.words) for s in file]
    assert all(len(r["prediction"]) == len(r["reference"]) for r in predictions)  # one tag per word, not per sub-token
    assert {t for r in predictions for t in r["prediction"]} <= set(TAGS)  # nothing truncated at max_length 64

    pairs = [(p, g) for r in predictions for p, g in zip(r["prediction"], r["reference"], strict=True)]
    assert record.metrics["words"] == len(pairs)
    assert record.metrics["accuracy"] == pytest.approx(sum(p == g for p, g in pairs) / len(pairs), abs=1e-12)
    whole = sum(r["prediction"] == r["reference"] for r in predictions) / len(predictions)
    assert record.metrics["sentence_accuracy"] == pytest.approx(whole, abs=1e-12)
    majority = Counter(g for _, g in pairs).most_common(1)[0][1] / len(pairs)
    assert record.metrics["accuracy"] > max(0.6, majority), record.metrics  # the tags are learnt, not the commonest

    task = TaggingTask()
    task_options = record.config["task"]["options"]
    for metric in ("accuracy", "sentence_accuracy"):
        stats = task.item_statistics(predictions, metric, task_options)
        assert stats is not None and stats.ids == tuple(r["id"] for r in predictions)
        assert stats.score() == pytest.approx(record.metrics[metric], abs=1e-9)
    for metric in ("n", "words", "unaligned_words"):
        assert task.item_statistics(predictions, metric, task_options) is None
    assert task.item_statistics([{"id": "a", "prediction": ["DET"], "reference": []}], "accuracy", task_options) is None


def test_words_cut_by_truncation_are_predicted_none_and_count_wrong(
    example_plugin, harness_run_cell, tagging_data, tmp_path
):
    budget = {"max_length": 8}  # [CLS], six sub-tokens, [SEP]: most sentences lose words
    record = harness_run_cell(task=task_table(tagging_data), strategy="full", model=tiny_model(), budget=budget)
    assert record.status == "ok", record.error
    predictions = rows(tmp_path / "harness-run-1" / "cell")
    lost = [p for r in predictions for p in r["prediction"] if p is None]
    assert lost and record.metrics["unaligned_words"] == len(lost)
    assert all(len(r["prediction"]) == len(r["reference"]) for r in predictions)
    correct = sum(p == g for r in predictions for p, g in zip(r["prediction"], r["reference"], strict=True))
    assert record.metrics["accuracy"] == pytest.approx(correct / record.metrics["words"], abs=1e-12)
    stats = TaggingTask().item_statistics(predictions, "accuracy", record.config["task"]["options"])
    assert stats is not None and stats.score() == pytest.approx(record.metrics["accuracy"], abs=1e-9)


def test_bias_tuning_trains_the_biases_and_the_token_head(example_plugin, harness_run_cell, tagging_data):
    """A token-classification BERT has no pooler: bias tuning's count is H + L(7H + I) + C(H + 1), one H fewer than for
    the sequence head of ``tests/test_bias_tuning.py``."""
    record = harness_run_cell(task=task_table(tagging_data), strategy="bias_tuning", model=tiny_model())
    assert record.status == "ok", record.error
    assert record.params.head == C * (H + 1) == 264
    assert record.params.trainable == H + L * (7 * H + I) + C * (H + 1) == 872


def test_validation_and_test_are_carved_from_train_by_data_seed_only(tagging_data):
    only_train = options(train=str(tagging_data["train"]))
    splits = load_splits(only_train, max_train_examples=None, eval_size=None)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [102, 13, 13]  # round(0.1 * 128) each
    assert all(s.id.startswith("train-") for split in ("validation", "test") for s in splits[split])
    ids = {split: [s.id for s in splits[split]] for split in ("train", "validation", "test")}
    assert all(v == sorted(v, key=lambda i: int(i.split("-")[1])) for v in ids.values())  # file order kept
    assert not set(ids["train"]) & set(ids["validation"]) and not set(ids["validation"]) & set(ids["test"])
    assert load_splits(only_train, None, None) == splits  # the cell seed plays no part
    assert load_splits(options(train=str(tagging_data["train"]), data_seed=1), None, None).test != splits.test
    capped = load_splits(options(**{k: str(v) for k, v in tagging_data.items()}), max_train_examples=10, eval_size=5)
    assert [len(capped[s]) for s in ("train", "validation", "test")] == [10, 5, 5]
    assert capped.labels == TAGS
    small = tagging_data["train"].with_name("small.conll")
    small.write_text("the\tDET\n\nit\tPRON\n", encoding="utf-8")
    with pytest.raises(HarnessError, match="2 sentences are too few to carve test and validation splits"):
        load_splits(options(train=str(small)), None, None)


def test_check_reports_columns_labels_and_fractions(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("\n-DOCSTART-\n\nthe\n", encoding="utf-8")
    task = TaggingTask()
    ctx = CheckContext(base_dir=tmp_path, offline=True)
    bad = options(train=str(path), labels=["DET", "DET"], validation_fraction=1.5)
    assert [(p.where, p.message) for p in task.check(bad, "tasks.tags", ctx)] == [
        ("tasks.tags.train", f"{path}:4: token_column 0 and tag_column -1 must be two different columns of the 1 found "
                             "here: 'the'"),
        ("tasks.tags.labels", "repeated: DET"),
        ("tasks.tags.validation_fraction", "must be between 0 and 1 (exclusive)"),
        ("tasks.tags.test_fraction", "validation_fraction + test_fraction must be below 1"),
    ]  # fmt: skip
    path.write_text("the DT B-NP\n", encoding="utf-8")
    assert task.check(options(train=str(path), tag_column=1), "tasks.tags", ctx) == []


@pytest.mark.parametrize(
    ("train", "test", "message"),
    [
        ("the\tDET\ncat\tNOUN\tx\n", None, r"train.conll:2: expected 2 tab-separated columns \(as on line 1\), got 3"),
        ("the\tDET\ncat\t\n", None, "train.conll:2: empty tag"),
        ("-DOCSTART-\n\n", None, "train.conll: no sentences"),
        ("the\tDET\n", "the\tDET\ncat\tNOUN\n", r"test.conll:2: tag 'NOUN' is not among the tags of .*n.conll \(DET\)"),
    ],
)
def test_bad_files_name_the_file_and_line(tmp_path, train, test, message):
    paths = {"train": tmp_path / "train.conll", "validation": tmp_path / "validation.conll"}
    paths["train"].write_text(train, encoding="utf-8")
    paths["validation"].write_text("the\tDET\n", encoding="utf-8")
    if test is not None:
        paths["test"] = tmp_path / "test.conll"
        paths["test"].write_text(test, encoding="utf-8")
    with pytest.raises(HarnessError, match=message):
        load_splits(options(**{k: str(v) for k, v in paths.items()}), None, None)


def test_labels_option_fixes_the_label_ids_and_refuses_other_tags(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("the DT B-NP\ncat NN I-NP\n\nit PRP B-NP\n", encoding="utf-8")  # CoNLL-2000: word POS chunk
    common = {"train": str(path), "validation": str(path), "test": str(path)}
    chunks = load_splits(options(**common), None, None)
    assert chunks.labels == ("B-NP", "I-NP") and chunks.train[0].tags == ("B-NP", "I-NP")
    pos = load_splits(options(**common, tag_column=1, labels=["PRP", "NN", "DT"]), None, None)
    assert pos.labels == ("PRP", "NN", "DT") and pos.train[0].words == ("the", "cat")
    with pytest.raises(HarnessError, match=r"train.conll:2: tag 'NN' is not among the labels option \(DT, PRP\)"):
        load_splits(options(**common, tag_column=1, labels=["DT", "PRP"]), None, None)


def test_scoring_counts_words_and_refuses_misaligned_rows():
    metrics = tagging_metrics([["DET", None], ["PRON", "VERB", "ADJ"]], [["DET", "NOUN"], ["PRON", "VERB", "ADJ"]])
    assert metrics == {"accuracy": 0.8, "sentence_accuracy": 0.5, "unaligned_words": 1.0, "n": 2.0, "words": 5.0}
    with pytest.raises(ValueError, match="1 predicted tags for 2 words"):
        tagging_metrics([["DET"]], [["DET", "NOUN"]])
    rows_ = [{"id": "a", "prediction": ["DET", None], "reference": ["DET", "NOUN"]}]
    assert item_statistics(rows_, "accuracy").values.tolist() == [[1.0, 2.0]]
    assert item_statistics([{"id": "a", "prediction": "DET", "reference": ["DET"]}], "accuracy") is None
    assert item_statistics([{"prediction": ["DET"], "reference": ["DET"]}], "accuracy") is None


def test_shipped_corpus_is_what_the_generator_writes(tmp_path):
    written = write_corpus(tmp_path)
    shipped = resources.files("harness_example") / "data" / "tagging"
    for split, path in written.items():
        assert (shipped / f"{split}.conll").read_bytes() == path.read_bytes(), split
