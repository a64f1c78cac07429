"""The summarization task: DialogSum (several references) and ACLSum, every format, bad-data errors, check(), ROUGE
checked by hand (stemming, max over references, sentence lines for ROUGE-Lsum), and whole cells on tiny models whose
recorded ROUGE is recomputed from the saved predictions."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import helpers
import pytest
from harness_plugins.summarization import SummarizationTask
from harness_plugins.summarization.data import load

from harness.api.budget import Budget
from harness.api.components import CheckContext
from harness.api.options import check_options
from harness.errors import HarnessError

TASK = SummarizationTask()
DIALOGSUM_COLUMNS = ["summary", "summary1", "summary2", "summary3"]


def options(base_dir: Path | None = None, **given):
    resolved, problems = check_options(TASK.options, given, "tasks.s", base_dir)
    assert not problems, problems
    return resolved


def check(base_dir: Path, **given) -> list[str]:
    return [str(p) for p in TASK.check(options(base_dir, **given), "tasks.s", CheckContext(base_dir, offline=True))]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def dialogsum(shared_data_dir: Path) -> Path:
    root = shared_data_dir / "dialogsum"
    if not root.is_dir():
        pytest.skip("dialogsum is absent")
    return root


# -- loading ------------------------------------------------------------------------------------------------------
def test_dialogsum_dev_as_train_and_test_with_three_references(dialogsum):
    given = dict(train=str(dialogsum / "dev.jsonl"), test=str(dialogsum / "test.jsonl"), document_column="dialogue",
                 summary_columns=DIALOGSUM_COLUMNS, id_column="fname")  # fmt: skip
    assert check(dialogsum, **given) == []
    splits = load(options(**given))
    assert len(splits.test) == 500 and len(splits.train) + len(splits.validation) == 500  # dev: 450 + 50 carved
    assert len(splits.validation) == 50
    first = splits.test[0]
    assert first.id == "test_0" and first.source.startswith("#Person1#: Ms. Dawson, I need you to take a dictation")
    assert len(first.references) == 3 and first.references[0].startswith("Ms. Dawson helps #Person1# to write a memo")
    assert all(len(e.references) == 3 for e in splits.test)
    assert all(len(e.references) == 1 for e in splits.train) and {e.id[:4] for e in splits.train} == {"dev_"}


def test_aclsum_from_the_package(tmp_path):
    if importlib.util.find_spec("aclsum") is None:
        pytest.skip("aclsum is not installed")
    given = {f"{s}": f"pkg:aclsum/dataset/{n}.jsonl" for s, n in [("train", "train"), ("validation", "val"),
                                                                      ("test", "test")]}  # fmt: skip
    given.update(document_column="sentences.abstract", summary_columns=["summary.challenge"], id_column="id")
    assert check(tmp_path, **given) == []
    splits = load(options(**given))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (100, 50, 100)
    example = splits.validation[0]
    assert example.id == "2021.eacl-main.84"
    assert example.source.startswith("Identifying named entities in written text is an essential component")
    assert " . However , the typical experimental setup" in example.source  # sentences joined with a space
    assert example.target.startswith("The current experimental setup and evaluation for named entity recognition")


def test_csv_and_tsv_with_several_summary_columns_and_empty_cells(tmp_path):
    write(tmp_path / "train.csv", 'doc,s1,s2\n"A long, long text.",first,\nOther text,one,two\n')
    write(tmp_path / "test.tsv", 'doc\ts1\ts2\n"Quoted" text\ta\tb\n')
    splits = load(options(tmp_path, train="train.csv", validation="train.csv", test="test.tsv",
                          document_column="doc", summary_columns=["s1", "s2"]))  # fmt: skip
    assert [(e.source, e.references) for e in splits.train] == [
        ("A long, long text.", ("first",)),
        ("Other text", ("one", "two")),
    ]
    assert splits.test[0].source == '"Quoted" text' and splits.test[0].references == ("a", "b")


@pytest.mark.parametrize(
    "text, given, message",
    [
        ('{"document": "d", "summary": " "}\n', {}, r"a\.jsonl:1: no summary: no value in column\(s\) 'summary'"),
        ('{"document": "d", "summary": "s"}\n', {"summary_columns": ["summary", "summry2"]},
         r"no row of .*a\.jsonl has column\(s\) 'summry2'"),
        ('{"doc": "d", "summary": "s"}\n', {}, r"a\.jsonl:1: missing column 'document' \(the source; columns: doc"),
        ('{"document": "d", "summary": "s"}\nnot json\n', {}, r"a\.jsonl:2: not valid JSON"),
        ('[1, 2]\n', {}, r"a\.jsonl:1: expected a JSON object, got list"),
        ('\n', {}, r"a\.jsonl: empty file"),
        ('{"document": "d", "summary": [1]}\n', {}, r"a\.jsonl:1: column 'summary' must be a string"),
    ],
)  # fmt: skip
def test_bad_data_errors_name_file_line_and_expectation(tmp_path, text, given, message):
    write(tmp_path / "a.jsonl", text)
    with pytest.raises(HarnessError, match=message):
        load(options(tmp_path, train="a.jsonl", **given))


def test_missing_csv_column_and_other_check_problems(tmp_path):
    write(tmp_path / "a.csv", "text,summary\nx,y\n")
    with pytest.raises(HarnessError, match=r"a\.csv:2: missing column 'document' \(the source; columns: text"):
        load(options(tmp_path, train="a.csv"))
    problems = check(tmp_path, train="a.csv", prompt="Summarize {text}", summary_columns=["summary"])
    where = f"tasks.s.train: {tmp_path / 'a.csv'}"
    assert problems[0] == f"{where}: no column 'document' in the first row (columns: text, summary)"
    assert problems[1].startswith("tasks.s.prompt: unknown field {text}")
    assert "must contain {document}" in problems[2]
    assert check(tmp_path, train="a.csv", summary_columns=[]) == [
        "tasks.s.summary_columns: expected a non-empty list of distinct column names"
    ]
    assert check(tmp_path, train="a.csv", document_column="text", validation_fraction=1.5)[0] == (
        "tasks.s.validation_fraction: must be between 0 and 1 (exclusive)"
    )


# -- metrics --------------------------------------------------------------------------------------------------------
def test_rouge_against_hand_computed_values():
    from harness_plugins.summarization.run import rouge, sentence_lines

    assert rouge(["The cat sat on the mat."], [["The cat sat on the mat."]]) == {
        "rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0, "rougeLsum": 1.0,
    }  # fmt: skip
    # unigrams 2 of 3 match both ways; bigrams {the cat, cat sat} vs {the cat, cat ran}: 1 of 2; LCS "the cat"
    partial = rouge(["the cat sat"], [["the cat ran"]])
    assert partial["rouge1"] == pytest.approx(2 / 3) and partial["rouge2"] == pytest.approx(1 / 2)
    assert partial["rougeL"] == pytest.approx(2 / 3)
    assert rouge(["cats running"], [["cat runs"]])["rouge1"] == pytest.approx(1.0)  # Porter stemming is on
    # the best reference per example, then the mean over examples: (1 + 2/3) / 2
    two = rouge(["the cat sat", "the cat sat"], [["a dog", "the cat sat"], ["the cat ran"]])
    assert two["rouge1"] == pytest.approx((1 + 2 / 3) / 2)
    # ROUGE-L takes one LCS over the whole text; ROUGE-Lsum one per sentence (sentences on their own lines)
    assert sentence_lines("A b. C d!\nE f? g") == "A b.\nC d!\nE f?\ng"
    swapped = rouge(["A b. C d."], [["C d. A b."]])
    assert swapped["rougeL"] == pytest.approx(0.5) and swapped["rougeLsum"] == pytest.approx(1.0)


# -- whole cells ------------------------------------------------------------------------------------------------------
DOCUMENTS = [
    {"document": f"Person {i} met a friend at the station. They talked about {topic} for an hour.",
     "summary": f"Person {i} talked about {topic}.", "summary2": f"A chat about {topic}."}
    for i, topic in enumerate(["music", "work", "travel", "food", "books", "sports", "films", "cars"])
]  # fmt: skip


@pytest.mark.parametrize("architecture, family", [("t5", "encoder-decoder"), ("gpt2", "decoder")])
def test_cell_on_a_tiny_model_records_rouge_recomputable_from_predictions(tmp_path, monkeypatch, architecture,
                                                                           family):  # fmt: skip
    from harness_plugins.summarization.run import rouge

    from harness.api.host import PluginHost
    from harness.worker.cell import run_cell

    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "sources,full,summarization")
    host = PluginHost.load()
    write(tmp_path / "docs.jsonl", "".join(json.dumps(d) + "\n" for d in DOCUMENTS))
    task_options = options(tmp_path, train="docs.jsonl", test="docs.jsonl", summary_columns=["summary", "summary2"],
                           max_new_tokens=6, primary_metric="rouge2")  # fmt: skip
    source = host.model_source("tiny")
    model_options, problems = check_options(
        source.options, {"architecture": architecture, "layers": 1, "hidden": 32, "heads": 2}, "models.m"
    )
    assert not problems
    cell = helpers.make_cell(
        task_type="summarization", task_options=task_options, model_options=model_options, model_family=family,
        strategy_options={"freeze_embeddings": False, "freeze_layers": 0},
        budget=Budget(epochs=1, batch_size=4, learning_rate=1e-3, max_length=16, eval_batch_size=8,
                      warmup_steps_excluded=0),
    )  # fmt: skip
    out = tmp_path / "cell"
    record = run_cell(cell, host, out, "cpu", "attempt-1")
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert record.status == "ok" and record.primary_metric == "rouge2"
    assert len(rows) == 8 and all(r["prompt_truncated"] for r in rows)  # 16 tokens cannot hold a document
    first = rows[0]
    assert first["references"] == [first["reference"], DOCUMENTS[0]["summary2"]]
    assert first["prompt"].endswith("\nSummary:" if family == "decoder" else "") and first["prompt"] != "summarize: "
    recomputed = rouge([r["prediction"] for r in rows], [r["references"] for r in rows])
    assert {k: record.metrics[k] for k in recomputed} == recomputed
    assert record.metric_info["metric_library"].startswith("rouge-score ") and record.metric_info["stemmer"] == "porter"
