"""The ``regression`` task: a cell end to end, metrics recomputed from the saved predictions, per-item statistics
for reports, validate-time checks and data errors."""

from __future__ import annotations

import csv
import json
import math
from importlib import resources
from pathlib import Path

import pytest
from harness.api.components import CheckContext
from harness.errors import HarnessError
from harness.testing import tiny_model
from scipy.stats import pearsonr, spearmanr

from harness_example.data import task_table as scores_task
from harness_example.data import write_dataset
from harness_example.regression import RegressionTask
from harness_example.regression_data import read_file

#: Full fine-tuning of the tiny random BERT learns the rule well within 100 steps (Pearson ~0.9 on these data).
LEARN = {"max_steps": 100, "batch_size": 16, "learning_rate": 1e-3}


def rows(cell: Path) -> list[dict]:
    return [json.loads(line) for line in (cell / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


def test_cell_learns_and_its_metrics_match_the_predictions(example_plugin, harness_run_cell, scores_data, tmp_path):
    record = harness_run_cell(task=scores_task(scores_data), strategy="full", model=tiny_model(), budget=LEARN)
    assert record.status == "ok", record.error
    assert record.primary_metric == "pearson"
    assert set(record.metrics) == {"pearson", "spearman", "mse", "n"}
    assert record.metric_info["metric_library"].startswith("scipy ")
    assert record.metrics["pearson"] > 0.5, record.metrics  # the rule is learnt, not just the mean

    predictions = rows(tmp_path / "harness-run-1" / "cell")
    assert len(predictions) == record.metrics["n"] == 64
    assert [list(r)[:4] for r in predictions[:1]] == [["id", "input", "prediction", "reference"]]
    x = [r["prediction"] for r in predictions]
    y = [r["reference"] for r in predictions]
    with open(scores_data["test"], encoding="utf-8") as fh:
        assert y == [float(row["score"]) for row in csv.DictReader(fh)]
    assert record.metrics["pearson"] == pytest.approx(pearsonr(x, y).statistic, abs=1e-9)
    assert record.metrics["spearman"] == pytest.approx(spearmanr(x, y).statistic, abs=1e-9)
    assert record.metrics["mse"] == pytest.approx(
        sum((a - b) ** 2 for a, b in zip(x, y, strict=True)) / len(x), abs=1e-9
    )

    task = RegressionTask()
    options = record.config["task"]["options"]
    for metric in ("pearson", "mse"):
        stats = task.item_statistics(predictions, metric, options)
        assert stats is not None and stats.ids == tuple(r["id"] for r in predictions)
        assert stats.score() == pytest.approx(record.metrics[metric], abs=1e-9)
    assert task.item_statistics(predictions, "spearman", options) is None  # ranks are not additive
    assert task.item_statistics(predictions, "n", options) is None
    assert task.item_statistics([{"id": "a", "prediction": None, "reference": 1.0}], "mse", options) is None


def test_sentence_pairs_and_mse_as_primary_metric(example_plugin, harness_run_cell, tmp_path):
    paths = write_dataset(tmp_path / "pairs", {"train": 32, "validation": 8, "test": 16}, pairs=True)
    record = harness_run_cell(
        task=scores_task(paths, pairs=True, primary_metric="mse"), strategy="full", model=tiny_model()
    )
    assert record.status == "ok", record.error
    assert record.primary_metric == "mse"
    first = rows(tmp_path / "harness-run-1" / "cell")[0]
    assert isinstance(first["input"], list) and len(first["input"]) == 2


def test_validation_and_test_are_carved_from_train_when_absent(example_plugin, harness_run_cell, scores_data):
    task = {"type": "regression", "train": str(scores_data["train"]), "test_fraction": 0.25}
    record = harness_run_cell(task=task, strategy="bias_tuning", model=tiny_model())
    assert record.status == "ok", record.error
    assert record.metrics["n"] == 32  # a quarter of 128


def test_check_reports_missing_columns_and_bad_fractions(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("sentence,score\nthe movie was good,1\n", encoding="utf-8")
    task = RegressionTask()
    options = {o.name: o.default for o in task.options} | {"train": str(path), "validation_fraction": 1.5}
    problems = task.check(options, "tasks.scores", CheckContext(base_dir=tmp_path, offline=True))
    assert [(p.where, p.message) for p in problems] == [
        ("tasks.scores.train", f"{path}:1: no column 'text' (found: score, sentence)"),
        ("tasks.scores.validation_fraction", "must be between 0 and 1 (exclusive)"),
        ("tasks.scores.test_fraction", "validation_fraction + test_fraction must be below 1"),
    ]
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text('{"text": "good", "score": 1}\n', encoding="utf-8")
    options |= {"train": str(jsonl), "validation_fraction": 0.1}
    assert task.check(options, "tasks.scores", CheckContext(base_dir=tmp_path, offline=True)) == []
    options |= {"train": str(tmp_path / "train.txt")}
    (tmp_path / "train.txt").write_text("good\t1\n", encoding="utf-8")
    [problem] = task.check(options, "tasks.scores", CheckContext(base_dir=tmp_path, offline=True))
    assert "cannot tell the format" in problem.message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text,score\ngood,high\n", ":2: the score must be a number, got 'high'"),
        ("text,score\ngood,nan\n", ":2: the score must be finite"),
        ("text\ngood\n", ":1: no column 'score'"),
    ],
)
def test_bad_rows_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "train.csv"
    path.write_text(content, encoding="utf-8")
    options = {o.name: o.default for o in RegressionTask.options} | {"train": str(path)}
    with pytest.raises(HarnessError, match=message.replace("(", r"\(")):
        read_file(path, "train", options)


def test_jsonl_rows(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"t": "good", "s": 2.5}\n\n{"t": "bad", "s": -1}\n', encoding="utf-8")
    options = {o.name: o.default for o in RegressionTask.options} | {"text_column": "t", "score_column": "s"}
    examples = read_file(path, "train", options)
    assert [(e.id, e.text, e.score) for e in examples] == [("train-0", "good", 2.5), ("train-1", "bad", -1.0)]


def test_shipped_data_is_what_the_generator_writes(tmp_path):
    written = write_dataset(tmp_path)
    shipped = resources.files("harness_example") / "data"
    for split, path in written.items():
        assert (shipped / f"{split}.csv").read_bytes() == path.read_bytes(), split


def test_pearson_from_sums_handles_constant_predictions():
    from harness_example.scoring import item_statistics, regression_metrics

    predictions = [{"id": str(i), "prediction": 0.5, "reference": float(i % 3)} for i in range(9)]
    stats = item_statistics(predictions, "pearson")
    assert stats is not None and stats.score() == 0.0
    assert regression_metrics([0.5] * 9, [float(i % 3) for i in range(9)])["pearson"] == 0.0
    assert not math.isnan(regression_metrics([1.0, 2.0], [1.0, 1.0])["spearman"])
