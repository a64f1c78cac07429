"""The translation task: Multi30k and every file format, bad-data errors, check(), sacreBLEU scores checked by hand,
and whole cells on a tiny T5 and a tiny GPT-2 whose recorded BLEU is recomputed from the saved predictions."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import helpers
import pytest
from harness_plugins.translation import TranslationTask
from harness_plugins.translation.data import load

from harness.api.budget import Budget
from harness.api.components import CheckContext
from harness.api.options import check_options
from harness.errors import HarnessError

TASK = TranslationTask()
LANGS = {"source_lang": "en", "target_lang": "de"}


def options(base_dir: Path | None = None, **given):
    resolved, problems = check_options(TASK.options, {**LANGS, **given}, "tasks.t", base_dir)
    assert not problems, problems
    return resolved


def check(base_dir: Path, offline: bool = True, **given) -> list[str]:
    resolved = options(base_dir, **given)
    return [str(p) for p in TASK.check(resolved, "tasks.t", CheckContext(base_dir, offline=offline))]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def multi30k(shared_data_dir: Path) -> dict:
    root = shared_data_dir / "multi30k-en-de"
    if not root.is_dir():
        pytest.skip("multi30k-en-de is absent")
    names = {"train": "train", "validation": "val", "test": "test_2016_flickr"}
    return {
        **{split: str(root / f"{name}.en") for split, name in names.items()},
        **{f"{split}_target": str(root / f"{name}.de") for split, name in names.items()},
    }


# -- loading ------------------------------------------------------------------------------------------------------
def test_multi30k_parallel_files(multi30k):
    splits = load(options(**multi30k))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (29000, 1014, 1000)
    first = splits.train[0]
    assert first.source == "Two young, White males are outside near many bushes."
    assert first.references == ("Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",)
    assert splits.test[-1].id == "test-999"
    capped = load(options(**multi30k), max_train_examples=100, eval_size=10)
    assert (len(capped.train), len(capped.validation), len(capped.test)) == (100, 10, 10)
    assert capped == load(options(**multi30k), max_train_examples=100, eval_size=10)  # seeded by data_seed


def test_multi30k_check_is_clean_and_quick(multi30k, tmp_path):
    started = time.perf_counter()
    assert check(tmp_path, **multi30k) == []
    assert time.perf_counter() - started < 1.0


def test_jsonl_in_the_hub_translation_shape_and_flat_columns(tmp_path):
    write(tmp_path / "nested.jsonl", '{"translation": {"en": "a cat", "de": "eine Katze"}}\n\n'
                                     '{"translation": {"en": "a dog", "de": "ein Hund"}}\n')  # fmt: skip
    splits = load(options(tmp_path, train="nested.jsonl", validation="nested.jsonl", test="nested.jsonl"))
    assert [(e.source, e.target) for e in splits.train] == [("a cat", "eine Katze"), ("a dog", "ein Hund")]
    write(tmp_path / "flat.jsonl", "".join(f'{{"en": "w{i}", "de": "v{i}", "id": {i + 7}}}\n' for i in range(3)))
    flat = load(options(tmp_path, train="flat.jsonl", source_column="en", target_column="de", id_column="id",
                        validation_fraction=0.2, test_fraction=0.2))  # fmt: skip
    carved = sorted(e.id for s in ("train", "validation", "test") for e in flat[s])
    assert carved == ["7", "8", "9"] and len(flat.train) == len(flat.validation) == len(flat.test) == 1
    assert flat.train[0].source == "w" + str(int(flat.train[0].id) - 7)
    with pytest.raises(HarnessError, match=r"1 examples are too few to carve test and validation"):
        write(tmp_path / "one.jsonl", '{"en": "x", "de": "y"}\n')
        load(options(tmp_path, train="one.jsonl", source_column="en", target_column="de"))


def test_tsv_without_quoting_and_csv_with_quoting(tmp_path):
    write(tmp_path / "train.tsv", 'en\tde\n"Hi," she said.\t"Hallo", sagte sie.\nyes\tja\n')
    write(tmp_path / "test.csv", 'en,de\n"one, two","eins, zwei"\n')
    splits = load(options(tmp_path, train="train.tsv", validation="train.tsv", test="test.csv",
                          source_column="en", target_column="de"))  # fmt: skip
    assert splits.train[0].source == '"Hi," she said.' and splits.train[0].target == '"Hallo", sagte sie.'
    assert (splits.test[0].source, splits.test[0].target) == ("one, two", "eins, zwei")


def test_hub_dataset_in_the_translation_shape(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    folder = tmp_path / "hubds"
    folder.mkdir()
    rows = [{"translation": {"en": f"house {i}", "de": f"Haus {i}"}} for i in range(10)]
    write(folder / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write(folder / "test.jsonl", json.dumps(rows[0]) + "\n")
    splits = load(options(dataset=str(folder), validation_split=""))
    assert len(splits.train) == 9 and len(splits.validation) == 1 and splits.test[0].target == "Haus 0"
    assert splits.test[0].id == "test-0"
    with pytest.raises(HarnessError, match=r"cannot load split 'validation': ValueError: Unknown split"):
        load(options(dataset=str(folder)))


@pytest.mark.parametrize(
    "files, given, message",
    [
        ({"a.en": "x\ny\n", "a.de": "x\n"}, {"train": "a.en", "train_target": "a.de"},
         r"parallel files differ in length: .*a\.en has 2 lines but .*a\.de has 1"),
        ({"a.jsonl": '{"translation": {"en": "x"}}\n'}, {"train": "a.jsonl"},
         r"a\.jsonl:1: no target: no value in column\(s\) 'translation\.de'"),
        ({"a.jsonl": '{"src": "x", "de": "y"}\n'}, {"train": "a.jsonl", "target_column": "de"},
         r"a\.jsonl:1: missing column 'translation\.en' \(the source; columns: src, de\)"),
        ({"a.tsv": "en\tdx\nx\ty\n"}, {"train": "a.tsv", "source_column": "en", "target_column": "de"},
         r"a\.tsv:2: no target: no value in column\(s\) 'de' \(columns: en, dx\)"),
        ({"a.jsonl": '{"translation": {"en": "x", "de": "y"}}\n{"translation": \n'}, {"train": "a.jsonl"},
         r"a\.jsonl:2: not valid JSON"),
        ({"a.jsonl": "\n\n"}, {"train": "a.jsonl"}, r"a\.jsonl: empty file"),
        ({"a.en": "", "a.de": ""}, {"train": "a.en", "train_target": "a.de"}, r"a\.en: empty file"),
        ({"a.tsv": "en\tde\nx\ty\tz\n"}, {"train": "a.tsv", "source_column": "en", "target_column": "de"},
         r"a\.tsv:2: expected 2 tab-separated fields as in the header, got 3"),
        ({"a.txt": "x\n"}, {"train": "a.txt"}, r"a\.txt: cannot tell the format"),
        ({"a.jsonl": '{"translation": {"en": {"x": 1}, "de": "y"}}\n'}, {"train": "a.jsonl"},
         r"a\.jsonl:1: column 'translation\.en' must be a string, a number or a list of strings, got dict"),
    ],
)  # fmt: skip
def test_bad_data_errors_name_file_line_and_expectation(tmp_path, files, given, message):
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(HarnessError, match=message):
        load(options(tmp_path, **given))


def test_check_reports_problems_before_anything_runs(tmp_path):
    write(tmp_path / "a.en", "x\ny\n")
    write(tmp_path / "a.de", "x\n")
    write(tmp_path / "b.jsonl", '{"en": "x", "de": "y"}\n' * 10)
    problems = check(tmp_path, train="a.en", train_target="a.de", prompt="{source} in {target_language}:")
    assert problems[0].startswith("tasks.t.train_target: parallel files differ in length")
    assert "tasks.t.prompt: unknown field {target_language} (did you mean 'target_lang'?)" in problems[1]
    problems = check(tmp_path, train="b.jsonl", source_lang="xx")
    assert "tasks.t.train: " in problems[0] and "no column 'translation.xx' in the first row" in problems[0]
    assert any(p.startswith("tasks.t.source_lang: no built-in name for language code 'xx'") for p in problems)
    assert check(tmp_path, train="b.jsonl", source_column="en", target_column="de", source_lang="xx",
                 source_lang_name="Xish") == []  # fmt: skip
    assert check(tmp_path, train="b.jsonl", dataset="some/dataset")[0].startswith(
        "tasks.t.train: give either dataset or files"
    )
    offline = check(tmp_path, dataset="nobody/not-cached-anywhere")
    assert offline == [
        "tasks.t.dataset: dataset 'nobody/not-cached-anywhere' is not in the local Hugging Face cache and "
        "HF_HUB_OFFLINE is set; download it first or give local files"
    ]
    assert check(tmp_path) == ["tasks.t.train: missing: set train (a file) or dataset"]


# -- metrics --------------------------------------------------------------------------------------------------------
def test_bleu_and_chrf_against_hand_computed_values():
    from harness_plugins.translation.run import bleu_chrf

    def score(predictions, references):
        return bleu_chrf(predictions, references, target_lang="de")

    identical = score(["the cat sat on the mat"], [["the cat sat on the mat"]])
    assert identical == {"bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}
    # precisions 4/5, 3/4, 2/3, 1/2, equal lengths (no brevity penalty): BLEU = (4/5 * 3/4 * 2/3 * 1/2) ** (1/4)
    one_ref = score(["a b c d e"], [["a b c d f"]])
    assert one_ref["bleu"] == pytest.approx(100 * 0.2**0.25)
    # each hypothesis n-gram is in one of the two references: every precision is 1
    assert score(["a b c d e"], [["a b c d f", "x b c d e"]])["bleu"] == pytest.approx(100.0)
    # chrF: character 1-grams match 1 of 2 each way, 2-grams 0 of 1; orders 3-6 have no n-grams (effective order)
    # P = R = (1/2 + 0) / 2 = 1/4, F_beta=2 = (1 + 4) P R / (4 P + R) = 1/4
    assert score(["ab"], [["ac"]])["chrf"] == pytest.approx(25.0)
    assert math.isclose(score(["x"], [["y"]])["bleu"], 0.0)


# -- whole cells ------------------------------------------------------------------------------------------------------
SENTENCES = [
    ("a cat", "eine Katze"), ("a dog", "ein Hund"), ("two cats", "zwei Katzen"), ("a red house", "ein rotes Haus"),
    ("the man runs", "der Mann läuft"), ("a small dog", "ein kleiner Hund"), ("the woman sings", "die Frau singt"),
    ("two dogs play", "zwei Hunde spielen"), ("a big house", "ein großes Haus"), ("the child reads", "das Kind liest"),
]  # fmt: skip


def run_translation_cell(tmp_path: Path, monkeypatch, architecture: str, family: str):
    from harness.api.host import PluginHost
    from harness.worker.cell import run_cell

    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "sources,full,translation")
    host = PluginHost.load()
    write(tmp_path / "train.en", "".join(s + "\n" for s, _ in SENTENCES))
    write(tmp_path / "train.de", "".join(t + "\n" for _, t in SENTENCES))
    task_options = options(tmp_path, train="train.en", train_target="train.de", test="train.en",
                           test_target="train.de", max_new_tokens=6)  # fmt: skip
    source = host.model_source("tiny")
    model_options, problems = check_options(
        source.options, {"architecture": architecture, "layers": 1, "hidden": 32, "heads": 2}, "models.m"
    )
    assert not problems
    cell = helpers.make_cell(
        task_type="translation", task_options=task_options, model_options=model_options, model_family=family,
        strategy_options={"freeze_embeddings": False, "freeze_layers": 0},
        budget=Budget(epochs=2, batch_size=4, learning_rate=1e-3, max_length=32, eval_batch_size=4,
                      warmup_steps_excluded=0),
    )  # fmt: skip
    out = tmp_path / "cell"
    record = run_cell(cell, host, out, "cpu", "attempt-1")
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    return record, rows


@pytest.mark.parametrize("architecture, family", [("t5", "encoder-decoder"), ("gpt2", "decoder")])
def test_cell_on_a_tiny_model_records_bleu_recomputable_from_predictions(tmp_path, monkeypatch, architecture,
                                                                          family):  # fmt: skip
    from sacrebleu.metrics import BLEU, CHRF

    record, rows = run_translation_cell(tmp_path, monkeypatch, architecture, family)
    assert record.status == "ok" and record.primary_metric == "bleu" and record.training.steps == 6
    assert [r["id"] for r in rows] == [f"test-{i}" for i in range(10)]
    assert rows[0]["input"] == "a cat" and rows[0]["reference"] == "eine Katze"
    assert rows[0]["prompt"] == ("Translate English to German:\na cat\nGerman:" if family == "decoder"
                                 else "translate English to German: a cat")  # fmt: skip
    predictions, references = [r["prediction"] for r in rows], [[r["reference"] for r in rows]]
    assert record.metrics["bleu"] == BLEU(trg_lang="de").corpus_score(predictions, references).score
    assert record.metrics["chrf"] == CHRF().corpus_score(predictions, references).score
    info = record.metric_info
    assert info["metric_library"].startswith("sacrebleu 2.") and info["bleu_signature"].startswith("nrefs:1|case:mixed")
    assert info["chrf_signature"].startswith("nrefs:1|") and "{source}" in info["prompt_template"]


PO = '''# German translation.
msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\\n"

msgid "Save"
msgstr "Sichern"

#, fuzzy
msgid "Delete"
msgstr "Entfernen"

msgid "Log out"
msgstr ""

msgid "one item"
msgid_plural "%(count)s items"
msgstr[0] "ein Element"
msgstr[1] "%(count)s Elemente"

msgid "Change password"
msgstr "Passwort ändern"
'''


def test_po_catalogue_pairs_translated_singular_entries(tmp_path):
    from harness.tasklib.textpairs import read_po

    path = tmp_path / "django.po"
    path.write_text(PO, encoding="utf-8")
    pairs = read_po(path, "train")
    assert [(p.source, p.target) for p in pairs] == [("Save", "Sichern"), ("Change password", "Passwort ändern")]
    assert all(p.id.startswith("train-") for p in pairs)


def test_django_catalogues_are_the_offline_default(tmp_path):
    import importlib.util

    if importlib.util.find_spec("django") is None:
        pytest.skip("django (offline extra) is not installed")
    from harness.api.paths import resolve_path
    from harness.tasklib.textpairs import read_po

    train = read_po(resolve_path("pkg:django/conf/locale/de/LC_MESSAGES/django.po"), "train")
    test = read_po(resolve_path("pkg:django/contrib/admin/locale/de/LC_MESSAGES/django.po"), "test")
    assert len(train) > 300 and len(test) > 150
    assert ("Static Files", "Statische Dateien") in [(p.source, p.target) for p in train]
