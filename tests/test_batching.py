"""Per-batch padding: each batch padded to its own longest member, right or left, masks built or padded."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from harness.tasklib.batching import pad_batch  # noqa: E402

EXAMPLES = [
    {"input_ids": [5, 6, 7], "token_type_ids": [0, 0, 1], "labels": 1},
    {"input_ids": [8], "token_type_ids": [0], "labels": 0},
]


def test_right_padding_to_the_longest_member_with_a_built_mask():
    batch = pad_batch(EXAMPLES, {"input_ids": 0, "token_type_ids": 0, "attention_mask": 0})
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1], [0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0]
    assert batch["input_ids"].dtype == torch.long


def test_left_padding_and_a_given_mask():
    examples = [{"input_ids": [1, 2], "attention_mask": [1, 1]}, {"input_ids": [3], "attention_mask": [1]}]
    batch = pad_batch(examples, {"input_ids": 9, "attention_mask": 0}, padding_side="left")
    assert batch["input_ids"].tolist() == [[1, 2], [9, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1], [0, 1]]


def test_width_follows_each_batch_not_a_fixed_length():
    short = pad_batch([{"input_ids": [1]}, {"input_ids": [2, 3]}], {"input_ids": 0})
    long = pad_batch([{"input_ids": list(range(40))}], {"input_ids": 0})
    assert short["input_ids"].shape == (2, 2) and long["input_ids"].shape == (1, 40)


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one example"):
        pad_batch([], {"input_ids": 0})
    with pytest.raises(ValueError, match="padding_side"):
        pad_batch(EXAMPLES, {"input_ids": 0}, padding_side="middle")


def test_argmax_predictions_in_example_order_without_labels_and_mode_restored():
    from types import SimpleNamespace

    from harness.tasklib.batching import argmax_predictions

    class Echo(torch.nn.Module):
        """Predicts each example's length parity; fails if labels reach it."""

        def forward(self, input_ids, attention_mask):
            lengths = attention_mask.sum(dim=1)
            return SimpleNamespace(logits=torch.nn.functional.one_hot(lengths % 2, 2).float())

    class Run:
        def collate(self, examples):
            return pad_batch(examples, {"input_ids": 0})

    examples = [{"input_ids": list(range(n)), "labels": 1} for n in (5, 2, 3, 8, 1)]
    model = Echo().train()
    calls = []
    predicted, tokens = argmax_predictions(model, Run(), examples, 2, "cpu", lambda *a: calls.append(a))
    assert predicted == [1, 0, 1, 0, 1]  # file order, although batched shortest first
    assert tokens == 19 and model.training
    assert calls[-1] == ("eval", 5, 5)
