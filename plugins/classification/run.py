"""The classification task inside a cell's worker: encoding, the sequence-classification head, scoring (heavy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Callable

import sklearn
from sklearn.metrics import accuracy_score, f1_score
from transformers import AutoModelForSequenceClassification

from harness.api.components import EvalResult, LoadedModel, TaskRun
from harness.tasklib import encodecache
from harness.tasklib.batching import argmax_predictions, pad_batch

from .data import Splits


class ClassificationRun(TaskRun):
    """Encoded splits and scoring for one cell.

    The tokenizer comes from the model source, so :meth:`build_model` (or :meth:`bind_tokenizer`) must run before
    :meth:`examples`; splits are then encoded once, truncated to ``max_length`` and never padded (batches are padded
    to their own longest member by :meth:`collate`). Encodings are remembered on disk by the split's examples, the
    tokenizer, ``max_length`` and the label order (:mod:`harness.tasklib.encodecache`).
    """

    greater_is_better = True
    head_prefixes = ("classifier", "pre_classifier", "score", "classification_head")
    metadata = {"metric_library": f"scikit-learn {sklearn.__version__}"}

    def __init__(
        self,
        splits: Splits,
        primary_metric: str = "accuracy",
        max_length: int = 128,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.splits = splits
        self.primary_metric = primary_metric
        self.max_length = max_length
        self.label2id = {name: i for i, name in enumerate(splits.labels)}
        self._progress = progress or (lambda phase, done, total: None)
        self._tokenizer: Any = None
        self._pad_values: dict[str, int] | None = None
        self._encoded: dict[str, list[dict[str, Any]]] = {}
        self._tokenizer_identity: str | None = None

    def bind_tokenizer(self, tokenizer: Any) -> None:
        """Use ``tokenizer`` for encoding and padding (drops encodings made with another one)."""
        if tokenizer is not self._tokenizer:
            self._tokenizer, self._encoded, self._tokenizer_identity = tokenizer, {}, None
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            if pad_id is None:
                raise RuntimeError("the tokenizer has neither a pad token nor an end-of-sequence token to pad with")
            self._pad_values = {
                "input_ids": pad_id,
                "attention_mask": 0,
                "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0),
            }

    def build_model(self, loaded: LoadedModel) -> Any:
        self.bind_tokenizer(loaded.tokenizer())
        labels = self.splits.labels
        return loaded.model(
            AutoModelForSequenceClassification,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id=dict(self.label2id),
        )

    def examples(self, split: str) -> Sequence[Mapping[str, Any]]:
        if split not in self._encoded:
            if self._tokenizer is None:
                raise RuntimeError(
                    "ClassificationRun.build_model(loaded) must run before examples(): "
                    "the tokenizer comes from the model source"
                )
            self._encoded[split] = encodecache.cached(
                "classification-encoded", self._cache_parts(split), lambda: self._encode(split),
                encodecache.dump_rows, encodecache.load_rows,
            )  # fmt: skip
        return self._encoded[split]

    def _encode(self, split: str) -> list[dict[str, Any]]:
        source = self.splits[split]
        pairs = [e.text_pair or "" for e in source] if any(e.text_pair is not None for e in source) else None
        encoded = self._tokenizer([e.text for e in source], pairs, truncation=True, max_length=self.max_length)
        keys = list(encoded.keys())
        return [{**{k: encoded[k][i] for k in keys}, "labels": self.label2id[e.label]} for i, e in enumerate(source)]

    def _cache_parts(self, split: str) -> dict[str, Any] | None:
        """What the encoding of ``split`` depends on (``None``: not cached, see :mod:`harness.tasklib.encodecache`)."""
        if not encodecache.enabled():
            return None
        if self._tokenizer_identity is None:
            self._tokenizer_identity = encodecache.tokenizer_identity(self._tokenizer)
        if self._tokenizer_identity is None:
            return None
        return {
            "code": encodecache.code_identity(type(self)),
            "tokenizer": self._tokenizer_identity,
            "max_length": self.max_length,
            "labels": list(self.label2id),
            "examples": encodecache.content_digest(self.splits[split]),
        }

    def collate(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if self._pad_values is None:
            raise RuntimeError("ClassificationRun.build_model(loaded) must run before collate()")
        return pad_batch(examples, self._pad_values, self._tokenizer.padding_side)

    def evaluate(self, model: Any, split: str, batch_size: int, device: str) -> EvalResult:
        """Batched no-grad inference in eval mode (batches of similar length, results in file order).

        ``macro_f1`` averages F1 over the labels present in the references or predictions (scikit-learn's default),
        with ``zero_division=0``."""
        encoded, source = self.examples(split), self.splits[split]
        predicted, tokens = argmax_predictions(model, self, encoded, batch_size, device, self._progress)
        references = [e["labels"] for e in encoded]
        metrics = {
            "accuracy": float(accuracy_score(references, predicted)),
            "macro_f1": float(f1_score(references, predicted, average="macro", zero_division=0)),
            "n": float(len(encoded)),
        }
        labels = self.splits.labels
        predictions = [
            {
                "id": e.id,
                "input": e.text if e.text_pair is None else [e.text, e.text_pair],
                "prediction": labels[p],
                "reference": e.label,
            }
            for e, p in zip(source, predicted, strict=True)
        ]
        return EvalResult(metrics=metrics, predictions=predictions, samples=len(encoded), tokens=tokens)
