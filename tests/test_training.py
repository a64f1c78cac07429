"""The shared training loop on a tiny random BERT and a learnable synthetic problem."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import runtime_toys as rt
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from harness.api.budget import Budget
from harness.api.components import EvalResult
from harness.errors import HarnessError
from harness.worker.training import MEGA_BATCH_BATCHES, build_optimizer, epoch_batches, train

FAST = dict(batch_size=16, learning_rate=5e-3, warmup_steps_excluded=2)


def fit(seed: int = 0, run: rt.ToyRun | None = None, model_seed: int = 0, **budget):
    run = run or rt.ToyRun(n_train=64)
    dropout = budget.pop("dropout", 0.1)
    model = rt.tiny_bert(model_seed, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    torch.manual_seed(seed)
    outcome = train(model, run, Budget(**{**FAST, **budget}), "cpu", seed)
    return outcome, model, run


def padding(collated: list[tuple[list[str], int]], lengths: dict[str, int]) -> int:
    return sum(width * len(ids) - sum(lengths[i] for i in ids) for ids, width in collated)


def test_loss_goes_down_and_the_model_learns():
    run = rt.ToyRun(n_train=128)
    outcome, model, _ = fit(run=run, epochs=4)
    assert outcome.steps == 4 * 8 and outcome.samples == 4 * 128 and outcome.epochs == 4.0
    assert outcome.loss_last < 0.3 < 0.6 < outcome.loss_first
    assert run.evaluate(model, "test", 64, "cpu").metrics["accuracy"] >= 0.9
    assert outcome.clock == "host_clock" and outcome.train_s > 0
    assert outcome.step_stats.count == outcome.steps - 2 and outcome.step_stats.warmup_steps_excluded == 2
    assert len(outcome.losses) == len(outcome.step_times) == len(outcome.host_step_times) == outcome.steps


def test_same_seed_is_identical_and_different_seeds_differ():
    a, model_a, run_a = fit(seed=3, epochs=2)
    b, model_b, run_b = fit(seed=3, epochs=2)
    c, _, _ = fit(seed=4, epochs=2)
    assert a.losses == b.losses
    assert all(torch.equal(p, q) for p, q in zip(model_a.parameters(), model_b.parameters(), strict=True))
    assert (
        run_a.evaluate(model_a, "test", 64, "cpu").predictions == run_b.evaluate(model_b, "test", 64, "cpu").predictions
    )
    assert a.losses != c.losses


def test_padding_is_per_batch_never_fixed():
    _, _, run = fit(epochs=1)
    lengths = {e["id"]: len(e["input_ids"]) for e in run.examples("train")}
    widths = set()
    for ids, width in run.collated:
        assert width == max(lengths[i] for i in ids)
        widths.add(width)
    assert len(widths) > 1


def test_epoch_batches_cover_every_example_once_and_group_lengths():
    n, batch = 1030, 4
    lengths = [(i * 7919) % 97 + 1 for i in range(n)]
    for grouped in (None, lengths):
        batches = epoch_batches(n, batch, torch.Generator().manual_seed(0), grouped)
        assert sorted(i for b in batches for i in b) == list(range(n))
        assert sum(len(b) < batch for b in batches) <= 1
    grouped_batches = epoch_batches(n, batch, torch.Generator().manual_seed(0), lengths)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in grouped_batches)
    plain = epoch_batches(n, batch, torch.Generator().manual_seed(0))
    assert spread < 0.2 * sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain)
    # batch order is shuffled, not sorted by length across the epoch
    firsts = [max(lengths[i] for i in b) for b in grouped_batches[:MEGA_BATCH_BATCHES]]
    assert firsts != sorted(firsts, reverse=True)


def test_length_grouped_training_cuts_padding_and_sees_every_example_once_per_epoch():
    plain_run = rt.ToyRun(n_train=96, min_len=2, max_len=40)
    grouped_run = rt.ToyRun(n_train=96, min_len=2, max_len=40)
    fit(run=plain_run, epochs=2, batch_size=8)
    fit(run=grouped_run, epochs=2, batch_size=8, length_grouped=True)
    lengths = {e["id"]: len(e["input_ids"]) for e in plain_run.examples("train")}
    assert padding(grouped_run.collated, lengths) < 0.5 * padding(plain_run.collated, lengths)
    seen = Counter(i for ids, _ in grouped_run.collated for i in ids)
    assert set(seen) == set(lengths) and set(seen.values()) == {2}


def test_max_steps_and_fractional_epochs():
    outcome, _, _ = fit(epochs=10, max_steps=3)
    assert outcome.steps == 3 and outcome.samples == 48
    outcome, _, _ = fit(epochs=0.5)  # 64 examples / 16 = 4 steps per epoch
    assert outcome.steps == 2 and outcome.epochs == 0.5
    outcome, _, _ = fit(epochs=1, max_steps=9)  # max_steps overrides epochs, cycling the data
    assert outcome.steps == 9 and outcome.samples == 9 * 16


def first_step_gradients(**budget):
    """Train one step and return the gradients the optimizer stepped with (captured by a step pre-hook)."""
    grads: list[torch.Tensor] = []

    def capture(optimizer, args, kwargs):
        if not grads:
            grads.extend(p.grad.clone() for g in optimizer.param_groups for p in g["params"])

    handle = register_optimizer_step_pre_hook(capture)
    try:
        run = rt.ToyRun(n_train=60)
        fit(run=run, max_steps=1, dropout=0.0, **budget)
    finally:
        handle.remove()
    return grads, run


def test_grad_accumulation_gives_the_effective_batch():
    run_accum = rt.ToyRun(n_train=60)
    accum, _, _ = fit(run=run_accum, epochs=1, batch_size=12, grad_accum_steps=3, dropout=0.0)
    plain, _, _ = fit(run=rt.ToyRun(n_train=60), epochs=1, batch_size=12, dropout=0.0)
    assert accum.steps == plain.steps == 5 and accum.samples == plain.samples == 60
    assert Counter(len(ids) for ids, _ in run_accum.collated) == Counter({4: 15})
    assert accum.losses == pytest.approx(plain.losses, abs=1e-3)
    # the accumulated gradient is the gradient of the mean loss over the whole effective batch
    accum_grads, accum_run = first_step_gradients(batch_size=12, grad_accum_steps=3)
    plain_grads, plain_run = first_step_gradients(batch_size=12)
    assert [len(ids) for ids, _ in accum_run.collated] == [4, 4, 4]
    assert [len(ids) for ids, _ in plain_run.collated] == [12]
    for a, b in zip(accum_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    with pytest.raises(HarnessError, match="multiple of budget.grad_accum_steps"):
        fit(batch_size=10, grad_accum_steps=3)


class ScriptedRun(rt.ToyRun):
    """Validation returns a scripted metric per epoch (sleeping, to prove evaluation time is not training time)."""

    def __init__(self, script, sleep_s: float = 0.0, greater_is_better: bool = True):
        super().__init__(n_train=32)
        self.script, self.sleep_s, self.greater_is_better = list(script), sleep_s, greater_is_better
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def evaluate(self, model, split, batch_size, device):
        assert split == "validation"
        time.sleep(self.sleep_s)
        self.snapshots.append({n: p.detach().clone() for n, p in model.named_parameters()})
        value = self.script[len(self.snapshots) - 1]
        model.eval()  # the loop must put the model back into training mode
        return EvalResult({"accuracy": value}, [], 0, 0)


def test_early_stopping_stops_and_restores_the_best_weights():
    run = ScriptedRun([0.5, 0.7, 0.6, 0.65, 0.9, 0.95])
    outcome, model, _ = fit(run=run, epochs=6, early_stopping_patience=2)
    assert outcome.validation == (0.5, 0.7, 0.6, 0.65)
    assert outcome.early_stopped and outcome.best_epoch == 2 and outcome.steps == 4 * 2
    best = run.snapshots[1]
    assert all(torch.equal(p, best[n]) for n, p in model.named_parameters())
    assert not all(torch.equal(p, run.snapshots[3][n]) for n, p in model.named_parameters())


def test_early_stopping_lower_is_better_and_not_early_when_it_ends_anyway():
    run = ScriptedRun([3.0, 2.0, 2.5], greater_is_better=False)
    outcome, model, _ = fit(run=run, epochs=3, early_stopping_patience=1)
    assert outcome.validation == (3.0, 2.0, 2.5) and outcome.best_epoch == 2
    assert not outcome.early_stopped and outcome.steps == 3 * 2
    assert all(torch.equal(p, run.snapshots[1][n]) for n, p in model.named_parameters())


def test_evaluation_time_is_excluded_from_training_time():
    run = ScriptedRun([0.1, 0.2, 0.3], sleep_s=0.3)
    started = time.perf_counter()
    outcome, _, _ = fit(run=run, epochs=3, early_stopping_patience=5)
    wall = time.perf_counter() - started
    assert len(run.snapshots) == 3
    assert outcome.train_s < wall - 0.9
    assert sum(outcome.host_step_times) <= outcome.train_s


def test_optimizer_skips_weight_decay_on_biases_and_layernorm():
    model = rt.tiny_bert(0)
    for p in model.bert.embeddings.parameters():
        p.requires_grad_(False)
    optimizer = build_optimizer(model, Budget(weight_decay=0.01), "cpu")
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = ({names[id(p)] for p in g["params"]} for g in optimizer.param_groups)
    assert optimizer.param_groups[0]["weight_decay"] == 0.01 and optimizer.param_groups[1]["weight_decay"] == 0.0
    assert "bert.encoder.layer.0.attention.self.query.weight" in decay
    assert "bert.encoder.layer.0.attention.self.query.bias" in no_decay
    assert "bert.encoder.layer.0.output.LayerNorm.weight" in no_decay
    assert not any(n.startswith("bert.embeddings") for n in decay | no_decay)  # trainable parameters only


def test_optimizer_uses_the_fused_adamw_kernel_where_torch_has_it():
    """One fused kernel for every parameter (what Trainer's default ``adamw_torch_fused`` uses; on CPU since torch
    2.4), not a Python loop over parameters: 20 % of a MiniLM step on 2 CPU cores went to that loop."""
    import torch

    model = rt.tiny_bert(0)
    optimizer = build_optimizer(model, Budget(), "cpu")
    try:
        torch.optim.AdamW([torch.zeros(1)], fused=True)
    except (RuntimeError, ValueError):
        assert not optimizer.defaults["fused"]
    else:
        assert optimizer.defaults["fused"] is True
    double = rt.tiny_bert(0).to(torch.float64)  # another floating dtype: fused, or torch's default if refused
    assert build_optimizer(double, Budget(), "cpu").param_groups


def test_progress_is_reported_and_ends_at_the_total():
    calls = []
    model = rt.tiny_bert(0)
    train(model, rt.ToyRun(n_train=64), Budget(**FAST, epochs=2), "cpu", 0, lambda *a: calls.append(a))
    assert calls[0] == ("train", 0, 8) and calls[-1] == ("train", 8, 8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_on_a_real_gpu_uses_cuda_events():
    run = rt.ToyRun(n_train=128)
    model = rt.tiny_bert(0).to("cuda")
    outcome = train(model, run, Budget(**FAST, epochs=4), "cuda", 0)
    assert outcome.clock == "cuda_events" and len(outcome.step_times) == outcome.steps == 32
    assert outcome.loss_last < 0.3 < 0.6 < outcome.loss_first
    assert run.evaluate(model, "test", 64, "cuda").metrics["accuracy"] >= 0.9


class TokenToyRun(rt.ToyRun):
    """Token-level labels (every token labelled with its id's parity, padding -100): examples differ in length, so
    micro-batches differ in labelled tokens and must be weighted by them, not by examples."""

    def collate(self, examples):
        batch = super().collate(examples)
        labels = (batch["input_ids"] % 2).masked_fill(batch["attention_mask"] == 0, -100)
        return {**batch, "labels": labels}


def test_grad_accumulation_weights_token_level_losses_by_labelled_tokens():
    from transformers import BertConfig, BertForTokenClassification

    def step_grads(**budget):
        grads: list[torch.Tensor] = []

        def capture(optimizer, args, kwargs):
            if not grads:
                grads.extend(p.grad.clone() for g in optimizer.param_groups for p in g["params"])

        torch.manual_seed(0)
        model = BertForTokenClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                                      num_attention_heads=2, intermediate_size=64, num_labels=2,
                                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
        handle = register_optimizer_step_pre_hook(capture)
        try:
            train(model, TokenToyRun(n_train=60, min_len=2, max_len=24), Budget(**{**FAST, **budget}), "cpu", 0)
        finally:
            handle.remove()
        return grads

    plain = step_grads(max_steps=1, batch_size=12)
    accumulated = step_grads(max_steps=1, batch_size=12, grad_accum_steps=3)
    for a, b in zip(accumulated, plain, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
