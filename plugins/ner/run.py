"""The NER task inside a cell's worker: sub-word alignment, the token-classification head, seqeval scoring (heavy).

Alignment (fast tokenizers, ``word_ids()`` of ``is_split_into_words`` input): the first sub-token of each word carries
the word's label; later sub-tokens get ``-100`` (ignored by the loss), or with ``label_all_subtokens`` the ``I-``
version of the word's label; special tokens get ``-100``. Inputs are truncated to ``budget.max_length``.

Scoring: each word is predicted by its first sub-token; a word with no sub-token left after truncation (or none at
all, such as a lone zero-width space) is predicted ``O``, and words lost to truncation are counted in
``truncated_words``. Predicted tag sequences are scored as they are, with seqeval's default (non-strict) IOB2 mode,
which reads an ``I-X`` after ``O`` or after another type as the start of an entity (conlleval's rule): entity-level
micro precision / recall / F1 (primary ``f1``), the same per entity type (``f1.<type>``, with ``support.<type>``),
and ``token_accuracy`` (all tokens, ``O`` included; never reported as F1). ``zero_division=0``.
Each prediction row has ``tokens`` and the IOB2 tag lists ``prediction`` and ``reference``, so
``seqeval.metrics.f1_score(references, predictions)`` on the file reproduces ``f1`` exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.metadata import version
from typing import Any, Callable

from transformers import AutoModelForTokenClassification

from harness.api.components import EvalResult, LoadedModel, TaskRun
from harness.errors import HarnessError
from harness.tasklib import encodecache
from harness.tasklib.batching import argmax_predictions, pad_batch

from .data import Sentence, Splits
from .scores import score
from .tags import inside

IGNORE = -100


def _scheme_note(splits: Splits) -> str:
    if splits.tokenization is not None:
        return f"IOB2 (from character spans, {splits.tokenization} tokens)"
    return "IOB2" if splits.scheme == "IOB2" else f"IOB2 (normalised from {splits.scheme})"


def _dump(encoded: tuple[list[dict[str, Any]], list[tuple[list[int | None], int]]]) -> dict[str, Any]:
    rows, words = encoded
    return {**encodecache.dump_rows(rows), "words": [[word_ids, lost] for word_ids, lost in words]}


def _load(payload: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[tuple[list[int | None], int]]]:
    rows, words = encodecache.load_rows(payload), [(list(w), int(lost)) for w, lost in payload["words"]]
    if len(rows) != len(words):
        raise ValueError("rows and alignments differ in number")
    return rows, words


class NerRun(TaskRun):
    """Encoded splits and scoring for one cell.

    The tokenizer comes from the model source, so :meth:`build_model` (or :meth:`bind_tokenizer`) must run before
    :meth:`examples`; splits are encoded once and never padded (batches are padded by :meth:`collate`). Encodings
    and alignments are remembered on disk by the split's sentences, the tokenizer, ``max_length``, the label set and
    ``label_all_subtokens`` (:mod:`harness.tasklib.encodecache`).
    """

    primary_metric = "f1"
    greater_is_better = True
    head_prefixes = ("classifier", "score")

    def __init__(
        self,
        splits: Splits,
        max_length: int = 128,
        label_all_subtokens: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.splits = splits
        self.max_length = max_length
        self.label_all_subtokens = label_all_subtokens
        self.label2id = {name: i for i, name in enumerate(splits.labels)}
        self.metadata = {
            "metric_library": f"seqeval {version('seqeval')}",
            "scheme": _scheme_note(splits),
            "mode": "default (non-strict)",
            "average": "micro",
            "word_prediction": "first sub-token",
            **({"widened_entities": str(splits.widened)} if splits.tokenization == "word" else {}),
        }
        self._progress = progress or (lambda phase, done, total: None)
        self._tokenizer: Any = None
        self._pad_values: dict[str, int] | None = None
        self._encoded: dict[str, list[dict[str, Any]]] = {}
        self._words: dict[str, list[tuple[list[int | None], int]]] = {}
        self._tokenizer_identity: str | None = None

    def bind_tokenizer(self, tokenizer: Any) -> None:
        """Use ``tokenizer`` (a fast one: alignment needs ``word_ids``) for encoding and padding."""
        if tokenizer is self._tokenizer:
            return
        if not getattr(tokenizer, "is_fast", False):
            raise HarnessError(
                f"the ner task needs a fast tokenizer (word_ids() for sub-word alignment); "
                f"{type(tokenizer).__name__} is not one"
            )
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad_id is None:
            raise RuntimeError("the tokenizer has neither a pad token nor an end-of-sequence token to pad with")
        self._tokenizer, self._encoded, self._words, self._tokenizer_identity = tokenizer, {}, {}, None
        self._pad_values = {
            "input_ids": pad_id,
            "attention_mask": 0,
            "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0),
            "labels": IGNORE,
        }

    def build_model(self, loaded: LoadedModel) -> Any:
        self.bind_tokenizer(loaded.tokenizer())
        labels = self.splits.labels
        return loaded.model(
            AutoModelForTokenClassification,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id=dict(self.label2id),
        )

    def align(self, sentence: Sentence, word_ids: Sequence[int | None]) -> list[int]:
        """Label ids per sub-token: the word's label on its first sub-token, ``-100`` (or the ``I-`` label with
        ``label_all_subtokens``) on the others, ``-100`` on special tokens."""
        labels, previous = [], None
        for word in word_ids:
            if word is None:
                labels.append(IGNORE)
            elif word != previous:
                labels.append(self.label2id[sentence.tags[word]])
            else:
                labels.append(self.label2id[inside(sentence.tags[word])] if self.label_all_subtokens else IGNORE)
            previous = word
        return labels

    def examples(self, split: str) -> Sequence[Mapping[str, Any]]:
        if split not in self._encoded:
            if self._tokenizer is None:
                raise RuntimeError(
                    "NerRun.build_model(loaded) must run before examples(): the tokenizer comes from the model source"
                )
            self._encoded[split], self._words[split] = encodecache.cached(
                "ner-encoded", self._cache_parts(split), lambda: self._encode(split), _dump, _load
            )
        return self._encoded[split]

    def _encode(self, split: str) -> tuple[list[dict[str, Any]], list[tuple[list[int | None], int]]]:
        sentences = self.splits[split]
        encoded = self._tokenizer(
            [list(s.tokens) for s in sentences],
            is_split_into_words=True,
            truncation=True,
            max_length=self.max_length,
        )
        keys = list(encoded.keys())
        rows, words = [], []
        for i, sentence in enumerate(sentences):
            word_ids = encoded.word_ids(i)
            kept = {w for w in word_ids if w is not None}
            lost = {w for part in encoded.encodings[i].overflowing for w in part.word_ids if w is not None}
            rows.append({**{k: encoded[k][i] for k in keys}, "labels": self.align(sentence, word_ids)})
            words.append((word_ids, len(lost - kept)))
        return rows, words

    def _cache_parts(self, split: str) -> dict[str, Any] | None:
        """What the encoding of ``split`` depends on (``None``: not cached, see :mod:`harness.tasklib.encodecache`)."""
        if not encodecache.enabled():
            return None
        if self._tokenizer_identity is None:
            self._tokenizer_identity = encodecache.tokenizer_identity(self._tokenizer)
        if self._tokenizer_identity is None:
            return None
        return {
            "code": encodecache.code_identity(type(self), inside.__module__),
            "tokenizer": self._tokenizer_identity,
            "max_length": self.max_length,
            "label_all_subtokens": self.label_all_subtokens,
            "labels": list(self.label2id),
            "examples": encodecache.content_digest(self.splits[split]),
        }

    def collate(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if self._pad_values is None:
            raise RuntimeError("NerRun.build_model(loaded) must run before collate()")
        return pad_batch(examples, self._pad_values, self._tokenizer.padding_side)

    def word_tags(self, split: str, index: int, token_predictions: Sequence[int]) -> list[str]:
        """Tags of the words of sentence ``index`` from per-sub-token label ids: each word takes its first
        sub-token's prediction; words without a sub-token (truncated, or none at all) are ``O``."""
        labels = self.splits.labels
        word_ids, _ = self._words[split][index]
        tags = ["O"] * len(self.splits[split][index].tokens)
        previous = None
        for word, predicted in zip(word_ids, token_predictions, strict=True):
            if word is not None and word != previous:
                tags[word] = labels[predicted]
            previous = word
        return tags

    def evaluate(self, model: Any, split: str, batch_size: int, device: str) -> EvalResult:
        """Batched no-grad inference in eval mode (batches of similar length, results in file order)."""
        encoded, sentences = self.examples(split), self.splits[split]
        rows, tokens = argmax_predictions(model, self, encoded, batch_size, device, self._progress)
        left = self._tokenizer.padding_side == "left"
        predicted: list[list[str]] = []
        for i, row in enumerate(rows):  # drop each row's padding, then map sub-tokens back to words
            n = len(encoded[i]["input_ids"])
            predicted.append(self.word_tags(split, i, row[len(row) - n :] if left else row[:n]))
        references = [list(s.tags) for s in sentences]
        metrics = {
            **score(references, predicted),
            "truncated_words": float(sum(lost for _, lost in self._words[split])),
            "n": float(len(sentences)),
        }
        predictions = [
            {
                "id": s.id,
                "input": " ".join(s.tokens),
                "prediction": tags,
                "reference": list(s.tags),
                "tokens": list(s.tokens),
            }
            for s, tags in zip(sentences, predicted, strict=True)
        ]
        return EvalResult(metrics=metrics, predictions=predictions, samples=len(sentences), tokens=tokens)
