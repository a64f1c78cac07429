"""The built-in ``bitfit`` strategy: registration without torch, exactly the published parameter set trains (the head
counted apart), nothing else changes while training, models without biases fail clearly, a real cell end to end.

BitFit's count on a BERT-style encoder (``BertForSequenceClassification``: H hidden, I intermediate, L layers), the
head aside (``params.head``):

    embeddings LayerNorm bias                                      H
    per layer: query, key, value biases                           3H
               attention output dense bias + its LayerNorm bias   2H
               intermediate dense bias (b_m2)                      I
               output dense bias + its LayerNorm bias             2H
    pooler dense bias                                              H

    biases = "all":                 2H + L (7H + I)
    biases = "query_intermediate":  L (H + I) + H     (query and intermediate biases, and the pooler's)
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import helpers
import pytest
import torch
from harness_plugins.bitfit import BitFit, select_parameters

from harness.api.budget import Budget
from harness.api.host import LOAD_ENV, PluginHost
from harness.errors import HarnessError
from harness.testing import run_cell, tiny_model, tiny_task
from harness.worker.cell import count_params

L, H, FFN, K = 2, 128, 512, 2
HEAD = H * K + K
HEAD_PREFIXES = ("classifier",)


def bitfit_count(hidden: int, intermediate: int, layers: int, biases: str = "all") -> int:
    """The formula of the module docstring (head excluded)."""
    if biases == "all":
        return 2 * hidden + layers * (7 * hidden + intermediate)
    return layers * (hidden + intermediate) + hidden


def bert(hidden=H, intermediate=FFN, layers=L):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=intermediate, max_position_embeddings=64, num_labels=K)  # fmt: skip
    return BertForSequenceClassification(config)


def apply(model, biases="all", head_prefixes=HEAD_PREFIXES, tmp_path="."):
    ctx = helpers.cell_context(tmp_path, strategy="bitfit", strategy_type="bitfit")
    return BitFit().apply(model, SimpleNamespace(head_prefixes=head_prefixes), {"biases": biases}, ctx)


def test_registered_as_a_builtin_without_importing_torch():
    code = (
        "import sys; from harness.api.host import PluginHost; host = PluginHost.load(); "
        "s = host.strategy('bitfit'); assert s.trains and s.budget_defaults['learning_rate'] == 1e-3; "
        "print(sorted(m for m in ('torch', 'peft', 'transformers') if m in sys.modules))"
    )
    env = {**os.environ, LOAD_ENV: "bitfit"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "[]"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(LOAD_ENV, "bitfit")
        host = PluginHost.load()
    assert [p.module for p in host.plugins] == ["harness_plugins.bitfit"]
    assert host.strategy("bitfit").budget_defaults == {
        "learning_rate": 1e-3,
        "warmup_ratio": 0.06,
        "weight_decay": 0.01,
    }


@pytest.mark.parametrize("biases", ["all", "query_intermediate"])
def test_trainable_parameters_match_the_formula(tmp_path, biases):
    model = apply(bert(), biases, tmp_path=tmp_path)
    params = count_params(model, HEAD_PREFIXES)
    assert params.head == HEAD
    assert params.trainable == bitfit_count(H, FFN, L, biases) + HEAD  # all: 3,072 + head; subset: 1,408 + head
    assert params.stored_bytes == 4 * params.trainable  # the biases and the head
    assert BitFit().stored_bytes(model) is None  # the harness's default: the trainable tensors' bytes
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.endswith(".bias") or n.startswith("classifier") for n in trained)
    groups = select_parameters(model, HEAD_PREFIXES, biases)
    assert sorted(n for names in groups.values() for n in names) == sorted(trained)


def test_training_changes_only_the_biases_and_the_head(tmp_path):
    from harness.worker.training import train

    class Run:
        head_prefixes = HEAD_PREFIXES

        def examples(self, split):
            return [{"input_ids": [1 + i % 7, 2 + i % 5, 3], "labels": i % 2} for i in range(16)]

        def collate(self, rows):
            return {"input_ids": torch.tensor([r["input_ids"] for r in rows]),
                    "labels": torch.tensor([r["labels"] for r in rows])}  # fmt: skip

        def loss_units(self, batch):
            return len(batch["input_ids"])

        def length(self, example):
            return 3

    model = apply(bert(hidden=32, intermediate=64), tmp_path=tmp_path)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, Run(), Budget(max_steps=3, batch_size=8, learning_rate=1e-2, weight_decay=0.1), "cpu", seed=0)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.endswith(".bias") or n.startswith("classifier") for n in changed)
    assert any(n.endswith(".bias") and not n.startswith("classifier") for n in changed)


def test_models_without_the_biases_fail_with_the_reason(tmp_path):
    from transformers import AutoModelForCausalLM, GPT2Config, T5Config, T5ForConditionalGeneration

    t5 = T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16))
    with pytest.raises(HarnessError, match=r"^strategies.bitfit: BitFit trains bias terms, and T5ForConditional"):
        apply(t5, head_prefixes=(), tmp_path=tmp_path)
    gpt2 = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2))
    with pytest.raises(HarnessError, match=r'^strategies.bitfit.biases: "query_intermediate" needs separate query'):
        apply(gpt2, "query_intermediate", head_prefixes=(), tmp_path=tmp_path)
    model = apply(gpt2, head_prefixes=(), tmp_path=tmp_path)
    # per GPT-2 layer: c_attn 3H, attention c_proj H, mlp c_fc 4H, mlp c_proj H, ln_1 and ln_2 H each; then ln_f H
    assert count_params(model, ()).trainable == L * (3 * 32 + 32 + 4 * 32 + 32 + 2 * 32) + 32


def test_save_writes_the_biases_and_the_head(tmp_path):
    from safetensors.torch import load_file

    model = apply(bert(hidden=32, intermediate=64), tmp_path=tmp_path)
    BitFit().save(model, tmp_path / "artifact")
    saved = load_file(tmp_path / "artifact" / "bitfit.safetensors")
    assert sum(t.numel() for t in saved.values()) == bitfit_count(32, 64, L) + 32 * K + K


def test_a_real_cell_trains_only_biases_and_the_head(tmp_path):
    record = run_cell(tmp_path, task=tiny_task(tmp_path / "data"), strategy="bitfit", model=tiny_model())
    assert record.status == "ok", record.error
    assert record.training.steps == 8 and {"accuracy", "macro_f1"} <= set(record.metrics)
    head = 32 * 2 + 2  # tiny_model: H = 32, I = 64, L = 2; two labels
    assert record.params.head == head
    assert record.params.trainable == bitfit_count(32, 64, 2) + head == 706
    assert record.params.stored_bytes == 4 * 706
    assert record.config["budget"]["learning_rate"] == 1e-3
