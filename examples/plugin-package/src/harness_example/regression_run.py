"""The ``regression`` task inside a cell's worker: encoding, the one-output head, scoring (heavy: torch, transformers).

Imported only by :meth:`harness_example.regression.RegressionTask.setup`, never by the plugin module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Callable

import scipy
from harness.api.components import EvalResult, LoadedModel, TaskRun
from harness.tasklib.batching import inference, pad_batch
from transformers import AutoModelForSequenceClassification

from .regression_data import Splits
from .scoring import regression_metrics


class RegressionRun(TaskRun):
    """Encoded splits and scoring for one cell.

    The tokenizer comes from the model source, so :meth:`build_model` runs before :meth:`examples`. Each split is
    encoded once, truncated to ``max_length`` and never padded: :meth:`collate` pads each batch to its own longest
    member (:func:`harness.tasklib.batching.pad_batch`). Labels are the float scores; the head's loss is the mean
    squared error.
    """

    #: Parameter-name prefixes of common encoders' sequence-classification heads (BERT and RoBERTa ``classifier``,
    #: DistilBERT ``pre_classifier`` and ``classifier``): counted apart from the backbone, and trained by BitFit.
    head_prefixes = ("classifier", "pre_classifier", "score", "classification_head")
    #: peft's task type for the peft strategies' wrapping (see :attr:`RegressionTask.peft_task_type`).
    peft_task_type = "SEQ_CLS"
    metadata = {"metric_library": f"scipy {scipy.__version__}"}

    def __init__(
        self,
        splits: Splits,
        primary_metric: str = "pearson",
        max_length: int = 128,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.splits = splits
        self.primary_metric = primary_metric
        self.greater_is_better = primary_metric != "mse"
        self.max_length = max_length
        self._progress = progress or (lambda phase, done, total: None)
        self._tokenizer: Any = None
        self._pad_values: dict[str, int] = {}
        self._encoded: dict[str, list[dict[str, Any]]] = {}

    def build_model(self, loaded: LoadedModel) -> Any:
        tokenizer = loaded.tokenizer()
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad_id is None:
            raise RuntimeError("the tokenizer has neither a pad token nor an end-of-sequence token to pad with")
        self._tokenizer, self._encoded = tokenizer, {}
        self._pad_values = {
            "input_ids": pad_id,
            "attention_mask": 0,
            "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0),
        }
        return loaded.model(AutoModelForSequenceClassification, num_labels=1, problem_type="regression")

    def examples(self, split: str) -> Sequence[Mapping[str, Any]]:
        if split not in self._encoded:
            if self._tokenizer is None:
                raise RuntimeError("RegressionRun.build_model(loaded) must run before examples()")
            source = self.splits[split]
            pairs = [e.text_pair or "" for e in source] if any(e.text_pair is not None for e in source) else None
            encoded = self._tokenizer([e.text for e in source], pairs, truncation=True, max_length=self.max_length)
            keys = list(encoded.keys())
            self._encoded[split] = [
                {**{k: encoded[k][i] for k in keys}, "labels": float(e.score)} for i, e in enumerate(source)
            ]
        return self._encoded[split]

    def collate(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not self._pad_values:
            raise RuntimeError("RegressionRun.build_model(loaded) must run before collate()")
        return pad_batch(examples, self._pad_values, self._tokenizer.padding_side)

    def predict(self, model: Any, split: str, batch_size: int, device: str) -> tuple[list[float], int]:
        """Each example's predicted score (in the split's order) and the non-padding input tokens seen: batched
        no-grad inference in eval mode, batches of similar length."""
        encoded = self.examples(split)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
        predicted = [0.0] * len(encoded)
        tokens = 0
        with inference(model):
            for start in range(0, len(order), batch_size):
                index = order[start : start + batch_size]
                batch = self.collate([encoded[i] for i in index])
                batch.pop("labels")
                tokens += int(batch["attention_mask"].sum())
                output = model(**{k: v.to(device) for k, v in batch.items()}).logits[:, 0].float().tolist()
                for i, value in zip(index, output, strict=True):
                    predicted[i] = float(value)
                self._progress("eval", min(start + batch_size, len(order)), len(order))
        return predicted, tokens

    def evaluate(self, model: Any, split: str, batch_size: int, device: str) -> EvalResult:
        """Pearson, Spearman, MSE and n on ``split`` (:func:`harness_example.scoring.regression_metrics`)."""
        source = self.splits[split]
        predicted, tokens = self.predict(model, split, batch_size, device)
        references = [e.score for e in source]
        predictions = [
            {
                "id": e.id,
                "input": e.text if e.text_pair is None else [e.text, e.text_pair],
                "prediction": p,
                "reference": e.score,
            }
            for e, p in zip(source, predicted, strict=True)
        ]
        return EvalResult(
            metrics=regression_metrics(predicted, references),
            predictions=predictions,
            samples=len(source),
            tokens=tokens,
        )
