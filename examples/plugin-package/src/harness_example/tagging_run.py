"""The ``tagging`` task inside a cell's worker: sub-word alignment, the token-classification head, scoring (heavy:
torch, transformers).

Imported only by :meth:`harness_example.tagging.TaggingTask.setup`, never by the plugin module.

Alignment. A sentence is encoded as its list of words (``is_split_into_words=True``), so the tokenizer reports, for
each sub-token, the word it came from (``word_ids()``, which needs a *fast* tokenizer). The first sub-token of each
word carries the word's label id; every later sub-token of the word, and the special tokens (``[CLS]``, ``[SEP]``),
carry ``-100``, the index transformers' cross-entropy loss ignores. So the loss and the metric both count each word
once, however many pieces the tokenizer cuts it into. :meth:`TaggingRun.collate` pads ``labels`` with ``-100`` too, so
padding positions are ignored as well.

Prediction. :func:`harness.tasklib.batching.argmax_predictions` gives the arg-max label id of every position of every
(padded) row; :meth:`TaggingRun.word_tags` drops the row's padding and reads each word's tag off its first sub-token.
A word with no sub-token in the encoded input (cut by truncation to ``max_length``, or a word the tokenizer turns into
nothing) is predicted ``None``, which scores as wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Callable

from harness.api.components import EvalResult, LoadedModel, TaskRun
from harness.errors import HarnessError
from harness.tasklib.batching import argmax_predictions, pad_batch
from transformers import AutoModelForTokenClassification

from .tagging_data import Sentence, Splits
from .tagging_scoring import tagging_metrics

#: The label of positions the loss ignores (``torch.nn.CrossEntropyLoss(ignore_index=-100)``, transformers' default).
IGNORE = -100


class TaggingRun(TaskRun):
    """Encoded splits and scoring for one cell.

    The tokenizer comes from the model source, so :meth:`build_model` (or :meth:`bind_tokenizer`) runs before
    :meth:`examples`. Each split is encoded once, truncated to ``max_length`` and never padded: :meth:`collate` pads
    each batch to its own longest member.
    """

    primary_metric = "accuracy"
    greater_is_better = True
    #: Parameter-name prefixes of common encoders' token-classification heads (``classifier`` in BERT, RoBERTa,
    #: DistilBERT, DeBERTa, ELECTRA): counted apart from the backbone, and trained by BitFit.
    head_prefixes = ("classifier", "score")
    #: peft's task type for the peft strategies' wrapping (see :attr:`TaggingTask.peft_task_type`).
    peft_task_type = "TOKEN_CLS"

    def __init__(
        self,
        splits: Splits,
        max_length: int = 128,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.splits = splits
        self.max_length = max_length
        self.labels = splits.labels
        self.label2id = {label: i for i, label in enumerate(splits.labels)}
        self.metadata = {
            "word_prediction": "first sub-token",
            "unaligned_words": "counted wrong",
            "labels": " ".join(splits.labels),
        }
        self._progress = progress or (lambda phase, done, total: None)
        self._tokenizer: Any = None
        self._pad_values: dict[str, int] = {}
        self._encoded: dict[str, list[dict[str, Any]]] = {}
        self._word_ids: dict[str, list[list[int | None]]] = {}

    def bind_tokenizer(self, tokenizer: Any) -> None:
        """Use ``tokenizer`` (a fast one: alignment needs ``word_ids()``) for encoding and padding."""
        if not getattr(tokenizer, "is_fast", False):
            raise HarnessError(
                f"the tagging task needs a fast tokenizer (word_ids() for sub-word alignment); "
                f"{type(tokenizer).__name__} is not one"
            )
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad_id is None:
            raise RuntimeError("the tokenizer has neither a pad token nor an end-of-sequence token to pad with")
        self._tokenizer, self._encoded, self._word_ids = tokenizer, {}, {}
        self._pad_values = {
            "input_ids": pad_id,
            "attention_mask": 0,
            "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0),
            "labels": IGNORE,  # padding positions are ignored by the loss, like special tokens and later sub-tokens
        }

    def build_model(self, loaded: LoadedModel) -> Any:
        self.bind_tokenizer(loaded.tokenizer())
        return loaded.model(
            AutoModelForTokenClassification,
            num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)),
            label2id=dict(self.label2id),
        )

    def align(self, sentence: Sentence, word_ids: Sequence[int | None]) -> list[int]:
        """Label ids per sub-token: the word's label on its first sub-token, ``-100`` on its other sub-tokens and on
        special tokens."""
        labels: list[int] = []
        previous = None
        for word in word_ids:
            if word is None or word == previous:
                labels.append(IGNORE)
            else:
                labels.append(self.label2id[sentence.tags[word]])
            previous = word
        return labels

    def examples(self, split: str) -> Sequence[Mapping[str, Any]]:
        if split not in self._encoded:
            if self._tokenizer is None:
                raise RuntimeError("TaggingRun.build_model(loaded) must run before examples()")
            sentences = self.splits[split]
            words = [list(s.words) for s in sentences]
            encoded = self._tokenizer(words, is_split_into_words=True, truncation=True, max_length=self.max_length)
            keys = list(encoded.keys())
            rows, word_ids = [], []
            for i, sentence in enumerate(sentences):
                ids = encoded.word_ids(i)
                rows.append({**{k: encoded[k][i] for k in keys}, "labels": self.align(sentence, ids)})
                word_ids.append(ids)
            self._encoded[split], self._word_ids[split] = rows, word_ids
        return self._encoded[split]

    def collate(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not self._pad_values:
            raise RuntimeError("TaggingRun.build_model(loaded) must run before collate()")
        return pad_batch(examples, self._pad_values, self._tokenizer.padding_side)

    def word_tags(self, split: str, index: int, token_predictions: Sequence[int]) -> list[str | None]:
        """The tags of the words of sentence ``index`` of ``split`` from its label ids per sub-token (padding already
        dropped): each word takes its first sub-token's; a word without a sub-token gets ``None``."""
        word_ids = self._word_ids[split][index]
        if len(word_ids) != len(token_predictions):
            raise ValueError(f"{len(token_predictions)} predictions for {len(word_ids)} sub-tokens")
        tags: list[str | None] = [None] * len(self.splits[split][index].words)
        previous = None
        for word, predicted in zip(word_ids, token_predictions, strict=True):
            if word is not None and word != previous:
                tags[word] = self.labels[predicted]
            previous = word
        return tags

    def evaluate(self, model: Any, split: str, batch_size: int, device: str) -> EvalResult:
        """Per-word accuracy and the rest of :func:`harness_example.tagging_scoring.tagging_metrics` on ``split``:
        batched no-grad inference in eval mode, batches of similar length, results in file order."""
        encoded, sentences = self.examples(split), self.splits[split]
        rows, tokens = argmax_predictions(model, self, encoded, batch_size, device, self._progress)
        left = self._tokenizer.padding_side == "left"
        predicted = []
        for i, row in enumerate(rows):  # each row is as wide as its batch: drop the padding, then map to words
            n = len(encoded[i]["input_ids"])
            predicted.append(self.word_tags(split, i, row[len(row) - n :] if left else row[:n]))
        predictions = [
            {
                "id": s.id,
                "input": " ".join(s.words),
                "prediction": tags,
                "reference": list(s.tags),
                "tokens": list(s.words),
            }
            for s, tags in zip(sentences, predicted, strict=True)
        ]
        return EvalResult(
            metrics=tagging_metrics(predicted, [list(s.tags) for s in sentences]),
            predictions=predictions,
            samples=len(sentences),
            tokens=tokens,
        )
