"""Toy components for the cell-runtime tests: a learnable synthetic classification problem on a tiny random BERT.

Also a plugin module (hook implementations at the bottom), loaded in-process with ``PluginHost.load(extra=...)`` and
in worker subprocesses with ``HARNESS_EXTRA_PLUGINS=toyrt=runtime_toys`` (``tests/`` on ``PYTHONPATH``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from harness.api.components import EvalResult, LoadedModel, ModelSource, Strategy, Task, TaskRun
from harness.api.hookspecs import hookimpl
from harness.api.options import Option

VOCAB = 100
PAD, CLS = 0, 1


def tiny_bert_config(**overrides: Any) -> Any:
    from transformers import BertConfig

    values = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    values.update(overrides)
    return BertConfig(**values)


def tiny_bert(seed: int = 0, **overrides: Any) -> Any:
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_bert_config(**overrides))


def synthetic(n: int, seed: int, min_len: int = 3, max_len: int = 24) -> list[dict[str, Any]]:
    """Label 0 draws tokens from the lower half of the vocabulary, label 1 from the upper half; lengths vary."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        low, high = (5, VOCAB // 2) if label == 0 else (VOCAB // 2, VOCAB)
        ids = [CLS] + [rng.randrange(low, high) for _ in range(rng.randint(min_len, max_len))]
        out.append({"id": f"ex{i}", "text": " ".join(map(str, ids)), "input_ids": ids, "label": label})
    return out


class ToyRun(TaskRun):
    """A TaskRun over :func:`synthetic` data; records the shapes ``collate`` produced."""

    primary_metric = "accuracy"
    greater_is_better = True
    head_prefixes = ("classifier.",)

    def __init__(self, n_train: int = 64, n_eval: int = 32, seed: int = 0, min_len: int = 3, max_len: int = 24):
        self.data = {
            "train": synthetic(n_train, seed, min_len, max_len),
            "validation": synthetic(n_eval, seed + 1, min_len, max_len),
            "test": synthetic(n_eval, seed + 2, min_len, max_len),
        }
        self.collated: list[tuple[list[str], int]] = []

    def build_model(self, loaded: LoadedModel) -> Any:
        from transformers import AutoModelForSequenceClassification

        return loaded.model(AutoModelForSequenceClassification, num_labels=2)

    def examples(self, split: str) -> Sequence[Mapping[str, Any]]:
        return self.data[split]

    def collate(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(e["input_ids"]) for e in examples)
        self.collated.append(([e["id"] for e in examples], width))
        ids = torch.full((len(examples), width), PAD, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, example in enumerate(examples):
            ids[row, : len(example["input_ids"])] = torch.tensor(example["input_ids"])
            mask[row, : len(example["input_ids"])] = 1
        labels = torch.tensor([e["label"] for e in examples])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def evaluate(self, model: Any, split: str, batch_size: int, device: str) -> EvalResult:
        import torch

        model.eval()
        examples = self.data[split]
        predictions, correct, tokens = [], 0, 0
        with torch.no_grad():
            for start in range(0, len(examples), batch_size):
                part = examples[start : start + batch_size]
                batch = self.collate(part)
                tokens += int(batch["attention_mask"].sum())
                labels = batch.pop("labels")
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
                for example, pred, gold in zip(part, logits.argmax(-1).tolist(), labels.tolist(), strict=True):
                    correct += pred == gold
                    predictions.append(
                        {"id": example["id"], "input": example["text"], "prediction": pred, "reference": gold}
                    )
        return EvalResult({"accuracy": correct / len(examples)}, predictions, len(examples), tokens)


class ToyLoaded(LoadedModel):
    family = "encoder"

    def __init__(self, dropout: float):
        self.dropout = dropout

    def tokenizer(self) -> Any:
        return None

    def model(self, auto_class: Any, **kwargs: Any) -> Any:
        config = tiny_bert_config(hidden_dropout_prob=self.dropout, attention_probs_dropout_prob=self.dropout, **kwargs)
        return auto_class.from_config(config)


class ToyTask(Task):
    name = "toy-cls"
    description = "synthetic two-class token problem"
    options = (Option("n_train", "int", 64, "training examples"), Option("n_eval", "int", 32, "eval examples"))

    def setup(self, options: Mapping[str, Any], ctx: Any) -> TaskRun:
        return ToyRun(options["n_train"], options["n_eval"], seed=0)


class ToySource(ModelSource):
    name = "toy-bert"
    description = "a tiny random BERT"
    options = (Option("dropout", "float", 0.1, "dropout"),)

    def family(self, options: Mapping[str, Any], ctx: Any) -> str:
        return "encoder"

    def open(self, options: Mapping[str, Any], ctx: Any) -> LoadedModel:
        return ToyLoaded(options["dropout"])


class RaisingStrategy(Strategy):
    name = "toy-raise"
    description = "raises while preparing the model"

    def apply(self, model: Any, run: TaskRun, options: Mapping[str, Any], ctx: Any) -> Any:
        raise RuntimeError("strategy exploded")


class EvalOnly(Strategy):
    name = "toy-eval-only"
    description = "does not train"
    trains = False

    def apply(self, model: Any, run: TaskRun, options: Mapping[str, Any], ctx: Any) -> Any:
        return model


@hookimpl
def harness_register_tasks(register):
    register(ToyTask())


@hookimpl
def harness_register_model_sources(register):
    register(ToySource())


@hookimpl
def harness_register_strategies(register):
    register(RaisingStrategy())
    register(EvalOnly())
