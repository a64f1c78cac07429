"""Per-batch padding shared by tasks: each batch is padded to its own longest member, never to a fixed length.

Heavy (imports torch): import it from a task's worker-side module, not from a plugin's registration module.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch


def pad_batch(
    examples: Sequence[Mapping[str, Any]],
    pad_values: Mapping[str, int],
    padding_side: str = "right",
) -> dict[str, torch.Tensor]:
    """Stack encoded examples into tensors, padding each sequence field to the batch's longest member.

    The batch width is the longest length of the first padded field (in the first example's key order; normally
    ``input_ids``), so every padded field of an example must be as long as its ``input_ids``. Padded fields become
    ``torch.long`` tensors of shape ``(batch, width)``; fields absent from ``pad_values`` are stacked as they are with
    ``torch.tensor`` (one value per example: shape ``(batch,)``, dtype inferred, e.g. float regression scores).

    :param examples: encoded examples (dicts of lists and scalars, as a ``TaskRun.examples`` split holds them), all
        with the same keys; at least one (``ValueError`` otherwise).
    :param pad_values: the sequence fields to pad and the value to pad each with, e.g. ``{"input_ids":
        tokenizer.pad_token_id, "attention_mask": 0, "token_type_ids": tokenizer.pad_token_type_id}``. A key listed
        here that an example lacks is ignored. An ``attention_mask`` (1 on tokens, 0 on padding) is built when
        ``input_ids`` is padded and the examples have none.

        **Token-level labels** (one per sub-token, as in a token-classification task) are a sequence field too: list
        them as ``"labels": -100``. ``-100`` is the ``ignore_index`` of transformers' cross-entropy loss, so padding
        positions then count neither in the loss nor in ``TaskRun.loss_units`` (labelled tokens are those
        ``!= -100``), exactly like special tokens and non-first sub-tokens aligned to ``-100``. Left out of
        ``pad_values``, a list of labels per example would be stacked unpadded and fail on ragged lengths.
    :param padding_side: ``"right"`` (padding after the tokens) or ``"left"`` (before them; decoders that generate
        pad on the left); usually ``tokenizer.padding_side``. Every padded field, labels included, is padded on this
        side, so positions stay aligned.
    """
    if not examples:
        raise ValueError("pad_batch needs at least one example")
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    first = examples[0]
    sequence_keys = [k for k in first if k in pad_values]
    width = max(len(e[sequence_keys[0]]) for e in examples) if sequence_keys else 0
    batch: dict[str, torch.Tensor] = {}
    for key in sequence_keys:
        pad = pad_values[key]
        if padding_side == "right":
            rows = [list(e[key]) + [pad] * (width - len(e[key])) for e in examples]
        else:
            rows = [[pad] * (width - len(e[key])) + list(e[key]) for e in examples]
        batch[key] = torch.tensor(rows, dtype=torch.long)
    if "input_ids" in batch and "attention_mask" not in batch:
        if padding_side == "right":
            rows = [[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in examples]
        else:
            rows = [[0] * (width - len(e["input_ids"])) + [1] * len(e["input_ids"]) for e in examples]
        batch["attention_mask"] = torch.tensor(rows, dtype=torch.long)
    for key in first:
        if key not in batch:
            batch[key] = torch.tensor([e[key] for e in examples])
    return batch


@contextmanager
def inference(model: Any) -> Iterator[None]:
    """Eval mode without gradients for the block; the model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def argmax_predictions(
    model: Any,
    run: Any,
    examples: Sequence[Mapping[str, Any]],
    batch_size: int,
    device: str,
    progress: Any = None,
) -> tuple[list[Any], int]:
    """Batched no-grad inference in eval mode: each example's ``logits.argmax(-1)`` as a Python value, in the examples'
    order, and the number of non-padding input tokens seen (the sum of the batches' ``attention_mask``).

    - **Sequence heads** (logits ``(batch, labels)``): one label id (an ``int``) per example.
    - **Token heads** (logits ``(batch, width, labels)``): a list of label ids per example, one per position of the
      *padded* batch row, so its length is the width of the batch the example landed in, not the example's own
      length. The caller drops the padding (the last ``width - n`` entries with right padding, the first
      ``width - n`` with left padding, ``n = len(example["input_ids"])``) and then maps sub-tokens back to words,
      typically reading each word's label off its first sub-token (``word_ids()`` of a fast tokenizer). Entries at
      special tokens and at later sub-tokens are predictions too, to be ignored.

    Examples are sorted by length (``len(example["input_ids"])``) and batched ``batch_size`` at a time through
    ``run.collate``, which must return ``attention_mask``; ``labels`` are dropped before ``model(**batch)``, every
    tensor moved to ``device``. The model's train/eval mode is restored afterwards. ``progress`` (optional) gets
    ``("eval", done, total)`` after each batch.
    """
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    predicted: list[Any] = [None] * len(examples)
    tokens = 0
    with inference(model):
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch = run.collate([examples[i] for i in index])
            batch.pop("labels", None)
            tokens += int(batch["attention_mask"].sum())
            best = model(**{k: v.to(device) for k, v in batch.items()}).logits.argmax(dim=-1).tolist()
            for i, value in zip(index, best, strict=True):
                predicted[i] = value
            if progress is not None:
                progress("eval", min(start + batch_size, len(order)), len(order))
    return predicted, tokens
