"""The ``bias_tuning`` strategy (BitFit): exactly the published parameter set trains, training changes nothing else,
loss goes down.

The parameter count of BitFit on a BERT-style encoder (``BertForSequenceClassification``) with hidden size H,
intermediate (feed-forward) size I, L layers and a head with C outputs:

    embeddings LayerNorm bias                                          H
    per layer: query, key, value biases                               3H
               attention output dense bias + its LayerNorm bias       2H
               intermediate dense bias (b_m2)                          I
               output dense bias + its LayerNorm bias                 2H
    pooler dense bias                                                  H
    head: classifier weight and bias                               C(H + 1)

    all biases:          2H + L(7H + I) + C(H + 1)
    query_intermediate:  L(H + I) + H + C(H + 1)     (query and intermediate biases, pooler bias, head)

For the tiny BERT of :func:`harness.testing.tiny_model` (H = 32, I = 64, L = 2) and a regression head (C = 1):
all = 64 + 2 * 288 + 33 = 673 and query_intermediate = 2 * 96 + 32 + 33 = 257.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from harness.testing import tiny_model

from harness_example.bias_tuning import BiasTuning, select_parameters
from harness_example.data import task_table

H, I, L = 32, 64, 2  # noqa: E741 (the formula's letters)
PROBE = Path(__file__).with_name("bias_tuning_probe.py")


def bias_count(hidden: int, intermediate: int, layers: int, outputs: int, biases: str = "all") -> int:
    """The formula of the module docstring."""
    head = outputs * (hidden + 1)
    if biases == "all":
        return 2 * hidden + layers * (7 * hidden + intermediate) + head
    return layers * (hidden + intermediate) + hidden + head


def bert(outputs: int):
    """A tiny BERT with a sequence-classification head, built here independently of the harness."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=100,
        hidden_size=H,
        num_hidden_layers=L,
        num_attention_heads=2,
        intermediate_size=I,
        max_position_embeddings=64,
        num_labels=outputs,
    )
    return BertForSequenceClassification(config)


def apply(model, biases: str = "all", head_prefixes: tuple[str, ...] = ("classifier",)):
    run = SimpleNamespace(head_prefixes=head_prefixes)
    ctx = SimpleNamespace(cell=SimpleNamespace(strategy="bias_tuning"))
    return BiasTuning().apply(model, run, {"biases": biases}, ctx)


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("outputs", [1, 3])
def test_trainable_count_is_the_published_formula(outputs):
    model = apply(bert(outputs))
    by_name = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias") or n.startswith("classifier."))
    assert trainable(model) == by_name == bias_count(H, I, L, outputs)
    assert bias_count(H, I, L, 1) == 673


@pytest.mark.parametrize("outputs", [1, 3])
def test_query_intermediate_subset_count(outputs):
    model = apply(bert(outputs), "query_intermediate")
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {
        *(f"bert.encoder.layer.{i}.attention.self.query.bias" for i in range(L)),
        *(f"bert.encoder.layer.{i}.intermediate.dense.bias" for i in range(L)),
        "bert.pooler.dense.bias",
        "classifier.weight",
        "classifier.bias",
    }
    assert trainable(model) == bias_count(H, I, L, outputs, "query_intermediate")
    assert bias_count(H, I, L, 1, "query_intermediate") == 257


def test_select_parameters_keeps_head_out_of_the_backbone_groups():
    groups = select_parameters(bert(1), ("classifier",))
    assert groups["head"] == ["classifier.weight", "classifier.bias"]
    assert "classifier.bias" not in groups["bias"] and len(groups["bias"]) == 2 + 8 * L


def test_save_writes_only_the_trained_tensors(tmp_path):
    from safetensors.torch import load_file

    model = apply(bert(1))
    BiasTuning().save(model, tmp_path / "artifact")
    saved = load_file(str(tmp_path / "artifact" / "bias_tuning.safetensors"))
    assert set(saved) == {n for n, p in model.named_parameters() if p.requires_grad}
    fresh = bert(1)
    missing, unexpected = fresh.load_state_dict(saved, strict=False)
    assert not unexpected and len(missing) > 0


def test_cell_records_the_formula_and_the_paper_learning_rate(example_plugin, harness_run_cell, scores_data):
    record = harness_run_cell(task=task_table(scores_data), strategy="bias_tuning", model=tiny_model())
    assert record.status == "ok", record.error
    assert record.params.trainable == bias_count(H, I, L, 1) == 673
    assert record.params.head == H + 1
    assert record.config["budget"]["learning_rate"] == 1e-3  # BitFit's budget default
    subset = harness_run_cell(
        task=task_table(scores_data),
        strategy={"type": "bias_tuning", "biases": "query_intermediate"},
        model=tiny_model(),
    )
    assert subset.status == "ok", subset.error
    assert subset.params.trainable == bias_count(H, I, L, 1, "query_intermediate") == 257


def test_training_changes_only_biases_and_head_and_lowers_the_loss(
    example_plugin, harness_plugin, harness_run_cell, scores_data, tmp_path
):
    import torch

    harness_plugin(PROBE)
    record = harness_run_cell(
        task=task_table(scores_data), strategy="bias_tuning_probe", model=tiny_model(), budget={"max_steps": 40}
    )
    assert record.status == "ok", record.error
    cell = tmp_path / "harness-run-1" / "cell"
    before, after = torch.load(cell / "params-0.pt"), torch.load(cell / "params-1.pt")
    trained = set(before["trainable"])
    assert trained == {n for n in before["params"] if n.endswith(".bias") or n.startswith("classifier.")}
    changed = {n for n, p in before["params"].items() if not torch.equal(p, after["params"][n])}
    assert changed <= trained, f"frozen parameters changed: {sorted(changed - trained)}"
    assert {"classifier.weight", "classifier.bias", "bert.pooler.dense.bias"} <= changed
    assert len(changed) >= len(trained) - L  # every bias moves (a key bias may get no gradient: softmax shift)
    losses = json.loads((cell / "steps.json").read_text())["loss"]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_decoder_biases_train_too(example_plugin, harness_run_cell, harness_tiny_task):
    """GPT-2 (text-to-text classification, no new head): per layer 2 LayerNorm biases, the fused c_attn bias (3H),
    the attention projection's (H) and the two feed-forward biases (I + H), plus the final LayerNorm's bias."""
    record = harness_run_cell(
        task=harness_tiny_task("classification"), strategy="bias_tuning", model=tiny_model("decoder")
    )
    assert record.status == "ok", record.error
    assert record.params.trainable == L * (7 * H + I) + H == 608
    assert record.params.head == 0


def test_models_without_biases_fail_with_a_clear_message(example_plugin, harness_run_cell, harness_tiny_task):
    task = harness_tiny_task("classification")
    record = harness_run_cell(task=task, strategy="bias_tuning", model=tiny_model("encoder-decoder"))
    assert record.status == "failed"
    assert record.error.startswith("HarnessError: strategies.bias_tuning: BitFit trains bias terms")
    assert "T5ForConditionalGeneration has none" in record.error
    subset = harness_run_cell(
        task=task, strategy={"type": "bias_tuning", "biases": "query_intermediate"}, model=tiny_model("decoder")
    )
    assert subset.status == "failed"
    assert "GPT-2 fuses query, key and value" in subset.error and 'use biases = "all"' in subset.error
