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
    """Stack encoded examples into tensors.

    :param pad_values: the sequence fields and their padding value (e.g. ``{"input_ids": tokenizer.pad_token_id,
        "attention_mask": 0}``); an ``attention_mask`` is built when ``input_ids`` is padded and none is given.
        Every other field is a per-example value (e.g. ``labels``) stacked as it is.
    :param padding_side: ``"right"`` or ``"left"`` (decoders that generate pad on the left).
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
    """Batched no-grad inference in eval mode: each example's ``logits.argmax(-1)`` as a Python value (a label id for
    sequence heads, a list per token for token heads), in the examples' order, and the non-padding tokens seen.

    Examples are batched by similar length (less padding) through ``run.collate``; labels are dropped before the
    forward pass; the model's train/eval mode is restored afterwards. ``progress`` gets ``("eval", done, total)``.
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
