"""The on-disk cache of loaded and encoded splits (:mod:`harness.tasklib.encodecache`): a hit gives exactly what
reading and encoding give (classification, NER, text-to-text on both families, demonstrations and truncation
included), a changed file, option or tokenizer misses, a broken entry is rebuilt, and ``HARNESS_NO_ENCODE_CACHE=1``
turns it off. Offline: the tiny data and tokenizer of :mod:`harness.testing`."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import helpers
import pytest

from harness.api.budget import Budget
from harness.api.options import check_options
from harness.api.paths import resolve_path
from harness.tasklib import encodecache
from harness.tasklib.datafiles import SPLITS
from harness.testing import run_cell, tiny_model, tiny_task
from harness.testing.data import TOKENIZER


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(folder))
    monkeypatch.delenv(encodecache.DISABLE_ENV, raising=False)
    return folder


@pytest.fixture
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve_path(TOKENIZER)), local_files_only=True)


def entries(cache: Path, kind: str) -> list[Path]:
    return sorted((cache / "encoded" / kind).glob("*.json"))


def no_cache(monkeypatch):
    monkeypatch.setenv(encodecache.DISABLE_ENV, "1")


def with_cache(monkeypatch):
    monkeypatch.delenv(encodecache.DISABLE_ENV, raising=False)


def forbid(monkeypatch, owner, name: str) -> None:
    """Make ``owner.name`` fail, so a test shows what a cache hit does not do."""

    def boom(*args, **kwargs):
        raise AssertionError(f"{name} called on a cache hit")

    monkeypatch.setattr(owner, name, boom)


# -- the machinery -------------------------------------------------------------------------------------------------
def test_cached_builds_once_then_reads_the_entry(cache):
    calls = []

    def build():
        calls.append(1)
        return {"ids": [1, 2, 3]}

    parts = {"what": "x"}
    first = encodecache.cached("test", parts, build, dict, dict)
    second = encodecache.cached("test", parts, build, dict, dict)
    assert first == second == {"ids": [1, 2, 3]} and len(calls) == 1
    (entry,) = entries(cache, "test")
    assert json.loads(entry.read_text())["payload"] == {"ids": [1, 2, 3]}
    encodecache.cached("test", {"what": "y"}, build, dict, dict)  # other parts: another entry
    assert len(calls) == 2 and len(entries(cache, "test")) == 2
    assert encodecache.cached("test", None, build, dict, dict) == first and len(calls) == 3  # unknown: uncached
    assert not list((cache / "encoded" / "test").glob(".*.tmp"))  # written through a temporary file


@pytest.mark.parametrize(
    "damage",
    ["", "{not json", '{"kind": "test", "key": "another", "payload": {"ids": []}}', "wrong-shape", "\udcff"],
)
def test_a_broken_entry_is_ignored_and_rebuilt(cache, damage):
    parts = {"what": "x"}

    def load(payload):
        return {"ids": list(payload["ids"])}

    encodecache.cached("test", parts, lambda: {"ids": [7]}, dict, load)
    (entry,) = entries(cache, "test")
    if damage == "wrong-shape":
        key = encodecache.entry_key("test", parts)
        entry.write_text(json.dumps({"kind": "test", "key": key, "payload": {"other": 1}}))
    else:
        entry.write_bytes(damage.encode("utf-8", "surrogateescape"))
    calls = []

    def build():
        calls.append(1)
        return {"ids": [7]}

    assert encodecache.cached("test", parts, build, dict, load) == {"ids": [7]} and calls == [1]
    assert json.loads(entry.read_text())["payload"] == {"ids": [7]}  # rewritten whole
    assert encodecache.cached("test", parts, build, dict, load) == {"ids": [7]} and calls == [1]


def test_the_opt_out_builds_every_time_and_writes_nothing(cache, monkeypatch):
    no_cache(monkeypatch)
    calls = []
    for _ in range(2):
        encodecache.cached("test", {"what": "x"}, lambda: calls.append(1) or [1], list, list)
    assert len(calls) == 2 and not (cache / "encoded").exists()
    assert not encodecache.enabled()


def test_file_digest_is_the_content_hash_remembered_by_file_identity(cache, tmp_path, monkeypatch):
    data = tmp_path / "data.txt"
    data.write_text("one\ntwo\n")
    assert encodecache.file_digest(data) == hashlib.sha256(b"one\ntwo\n").hexdigest()
    assert len(list((cache / "digests").glob("*.json"))) == 1
    real_open = open

    def counting_open(path, *args, **kwargs):
        assert Path(path) != data, "an unchanged file was read again"
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    assert encodecache.file_digest(data) == hashlib.sha256(b"one\ntwo\n").hexdigest()
    monkeypatch.undo()
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(cache))
    stamp = os.stat(data).st_mtime_ns
    data.write_text("one\ntwe\n")  # same size
    os.utime(data, ns=(stamp, stamp))  # same modification time: the change time and content still tell
    assert encodecache.file_digest(data) == hashlib.sha256(b"one\ntwe\n").hexdigest()
    assert encodecache.file_digest(tmp_path / "absent.txt") is None


def test_code_identity_follows_the_source_files(tmp_path, monkeypatch):
    module = tmp_path / "cache_probe_module.py"
    module.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import cache_probe_module

    before = encodecache.code_identity(cache_probe_module)
    assert encodecache.code_identity("cache_probe_module") == before
    module.write_text("X = 22\n")
    assert encodecache.code_identity(cache_probe_module) != before


def test_tokenizer_identity(tokenizer):
    from transformers import AutoTokenizer

    ident = encodecache.tokenizer_identity(tokenizer)
    assert ident is not None
    tokenizer(["a b c d e f"], truncation=True, max_length=3)  # a call's truncation state is not identity
    tokenizer(["a b"], padding="max_length", max_length=6)
    assert encodecache.tokenizer_identity(tokenizer) == ident
    again = AutoTokenizer.from_pretrained(str(resolve_path(TOKENIZER)))
    assert encodecache.tokenizer_identity(again) == ident  # another load of the same files
    grown = copy.deepcopy(tokenizer)
    grown.add_tokens(["zebra"])
    assert encodecache.tokenizer_identity(grown) != ident
    cut = copy.deepcopy(tokenizer)
    cut.truncation_side = "left"
    assert encodecache.tokenizer_identity(cut) != ident

    class Slow:
        is_fast = False

    assert encodecache.tokenizer_identity(Slow()) is None


# -- the tasks: a hit equals a fresh read and encoding ------------------------------------------------------------
def setup_run(task, table: dict, tmp_path: Path, family: str = "encoder", **budget):
    given = {k: v for k, v in table.items() if k != "type"}
    options, problems = check_options(task.options, given, "tasks.t", tmp_path)
    assert not problems, problems
    ctx = helpers.cell_context(tmp_path, budget=Budget(**budget), model_family=family)
    return task.setup(options, ctx)


def encoded(run, tokenizer) -> dict:
    run.bind_tokenizer(tokenizer)
    return {split: copy.deepcopy(list(run.examples(split))) for split in SPLITS}


def three_ways(monkeypatch, make, tokenizer, readers, *, extra=lambda run: None):
    """(fresh, cold, warm) runs and encodings: without the cache, filling it, and from it with ``readers`` (owner,
    name pairs) and the tokenizer's ``__call__`` made to fail."""
    no_cache(monkeypatch)
    fresh = make()
    fresh_encoded = encoded(fresh, tokenizer), extra(fresh)
    with_cache(monkeypatch)
    cold = make()
    cold_encoded = encoded(cold, tokenizer), extra(cold)
    with monkeypatch.context() as patch:
        for owner, name in readers:
            forbid(patch, owner, name)
        warm = make()
        warm.bind_tokenizer(tokenizer)
        forbid(patch, type(tokenizer), "__call__")
        warm_encoded = encoded(warm, tokenizer), extra(warm)
    return (fresh, fresh_encoded), (cold, cold_encoded), (warm, warm_encoded)


def test_classification_hit_equals_fresh(cache, tmp_path, monkeypatch, tokenizer):
    from harness_plugins.classification import ClassificationTask
    from harness_plugins.classification import data as classification_data

    table = tiny_task(tmp_path / "data", "classification", n=40)
    table.pop("validation")  # carved from train, then capped: the cached splits are the capped ones
    make = lambda: setup_run(ClassificationTask(), table, tmp_path, max_train_examples=20, eval_size=8, max_length=8)  # noqa: E731
    (fresh, f), (cold, c), (warm, w) = three_ways(monkeypatch, make, tokenizer, [(classification_data, "_read_file")])
    assert fresh.splits == cold.splits == warm.splits
    assert f == c == w
    assert len(fresh.splits.train) == 20 and len(fresh.splits.validation) == 4
    assert len(entries(cache, "classification-splits")) == 1 and len(entries(cache, "classification-encoded")) == 3


def test_ner_hit_equals_fresh(cache, tmp_path, monkeypatch, tokenizer):
    from harness_plugins.ner import NerTask
    from harness_plugins.ner import data as ner_data

    table = tiny_task(tmp_path / "data", "ner", n=30)
    make = lambda: setup_run(NerTask(), table, tmp_path, max_length=6)  # noqa: E731  (short: words are lost)
    (fresh, f), (cold, c), (warm, w) = three_ways(
        monkeypatch, make, tokenizer, [(ner_data, "_read_files")], extra=lambda run: copy.deepcopy(run._words)
    )
    assert fresh.splits == cold.splits == warm.splits
    assert f == c == w
    assert any(lost for _, lost in fresh._words["train"])  # truncation is part of what is cached
    assert len(entries(cache, "ner-encoded")) == 3


def write_pairs(folder: Path, n: int = 12) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    words = "the cat sat on a mat and the dog ran to the park with a ball".split()
    sources = [" ".join(words[i % 5 : i % 5 + 3 + i % 7]) for i in range(n)]
    targets = [" ".join(reversed(s.split())) for s in sources]
    (folder / "train.en").write_text("\n".join(sources) + "\n")
    (folder / "train.de").write_text("\n".join(targets) + "\n")
    return {"train": str(folder / "train.en"), "train_target": str(folder / "train.de"), "format": "parallel",
            "source_lang": "en", "target_lang": "de", "validation_fraction": 0.25, "test_fraction": 0.25}  # fmt: skip


@pytest.mark.parametrize("family", ["decoder", "encoder-decoder"])
@pytest.mark.parametrize("shots", [0, 2])
def test_text2text_hit_equals_fresh(cache, tmp_path, monkeypatch, tokenizer, family, shots):
    from harness_plugins.translation import TranslationTask
    from harness_plugins.translation import data as translation_data

    table = {**write_pairs(tmp_path / "data"), "max_target_length": 8, "prompt": "{source} ="}

    def make():
        run = setup_run(TranslationTask(), table, tmp_path, family=family, max_length=48 if shots else 16)
        if shots:
            run.use_demonstrations(shots, seed=3)
        return run

    def prompts(run):
        return {split: list(run.prompts(split)) for split in SPLITS}

    (fresh, f), (cold, c), (warm, w) = three_ways(
        monkeypatch, make, tokenizer, [(translation_data, "load_pairs")], extra=prompts
    )
    assert fresh.splits == cold.splits == warm.splits
    assert f == c == w
    fitted = [p for split in f[1].values() for p in split]
    if shots:  # demonstrations dropped to fit are cached too
        assert any(len(p.demonstrations) == shots for p in fitted) and any(len(p.demonstrations) < shots for p in fitted)
    else:  # and texts cut to fit
        assert any(p.truncated for p in fitted)
    assert entries(cache, "text2text-prompts") and entries(cache, "translation-splits")


def test_summarization_splits_are_cached(cache, tmp_path, monkeypatch):
    from harness_plugins.summarization import SummarizationTask
    from harness_plugins.summarization import data as summarization_data

    rows = [{"id": f"d{i}", "doc": f"text number {i} " * 3, "sum": f"summary {i}"} for i in range(10)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = {"train": str(tmp_path / "train.jsonl"), "document_column": "doc", "summary_columns": ["sum"],
             "id_column": "id"}  # fmt: skip
    no_cache(monkeypatch)
    fresh = setup_run(SummarizationTask(), table, tmp_path, family="decoder").splits
    with_cache(monkeypatch)
    assert setup_run(SummarizationTask(), table, tmp_path, family="decoder").splits == fresh
    forbid(monkeypatch, summarization_data, "load_pairs")
    assert setup_run(SummarizationTask(), table, tmp_path, family="decoder").splits == fresh


# -- what misses ---------------------------------------------------------------------------------------------------
def test_a_changed_file_option_or_tokenizer_misses(cache, tmp_path, monkeypatch, tokenizer):
    from harness_plugins.classification import ClassificationTask

    table = tiny_task(tmp_path / "data", "classification", n=24)

    def run_with(tok=tokenizer, **budget):
        run = setup_run(ClassificationTask(), table, tmp_path, **{"max_length": 8, **budget})
        return run, encoded(run, tok)

    def fresh_with(tok=tokenizer, **budget):
        no_cache(monkeypatch)
        try:
            return run_with(tok, **budget)
        finally:
            with_cache(monkeypatch)

    run_with()
    assert len(entries(cache, "classification-splits")) == 1
    assert len(entries(cache, "classification-encoded")) == 3
    longer = run_with(max_length=12)[1]  # an encoding option: new encodings, the same splits
    assert longer == fresh_with(max_length=12)[1]
    assert len(entries(cache, "classification-splits")) == 1
    assert len(entries(cache, "classification-encoded")) == 6
    grown = copy.deepcopy(tokenizer)
    grown.add_tokens(["movie film"])
    assert run_with(grown)[1] == fresh_with(grown)[1]  # another tokenizer
    assert len(entries(cache, "classification-encoded")) == 9
    train = Path(table["train"])
    train.write_text(train.read_text().replace("good", "fine"))  # the data: new splits and encodings
    changed_run, changed = run_with()
    fresh_run, fresh = fresh_with()
    assert changed_run.splits == fresh_run.splits and changed == fresh
    assert len(entries(cache, "classification-splits")) == 2
    assert run_with(max_train_examples=10)[0].splits == fresh_with(max_train_examples=10)[0].splits  # a cap
    assert len(entries(cache, "classification-splits")) == 3


def test_corrupt_encoded_entries_are_rebuilt(cache, tmp_path, monkeypatch, tokenizer):
    from harness_plugins.ner import NerTask

    table = tiny_task(tmp_path / "data", "ner", n=20)
    make = lambda: setup_run(NerTask(), table, tmp_path, max_length=8)  # noqa: E731
    no_cache(monkeypatch)
    fresh = encoded(make(), tokenizer)
    with_cache(monkeypatch)
    encoded(make(), tokenizer)
    for entry in (cache / "encoded").rglob("*.json"):
        entry.write_text(entry.read_text()[: len(entry.read_text()) // 2])  # truncated
    assert encoded(make(), tokenizer) == fresh
    for entry in (cache / "encoded").rglob("*.json"):
        json.loads(entry.read_text())  # whole again


# -- a whole cell --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["encoder", "decoder"])
def test_a_cell_records_the_same_with_and_without_the_cache(cache, tmp_path, monkeypatch, family):
    task = tiny_task(tmp_path / "data", "classification", n=24)

    def cell(name: str):
        record = run_cell(tmp_path / name, task=task, model=tiny_model(family), budget={"max_steps": 2})
        assert record.status == "ok", record.error
        predictions = (tmp_path / name / "cell" / "predictions.jsonl").read_text()
        return record.metrics, record.training.loss_first, record.training.loss_last, predictions

    no_cache(monkeypatch)
    fresh = cell("fresh")
    with_cache(monkeypatch)
    assert cell("cold") == fresh
    assert cell("warm") == fresh
    assert list((cache / "encoded").iterdir())
