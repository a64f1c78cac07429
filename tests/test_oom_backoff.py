"""Out-of-memory back-off: a model that raises the real ``torch.OutOfMemoryError`` above a given batch size.

Training halves the per-device micro-batch and redoes the current optimizer step (same data, same dropout draws,
same effective batch), evaluation halves its batch and redoes the evaluation; both down to 1, then the cell fails.
The proof that a failed attempt leaves no trace: weights, losses and predictions equal those of a run configured
from the start with the batch sizes the back-off ended at.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

import pytest
import runtime_toys as rt
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from harness.api.budget import Budget
from harness.api.cells import Cell
from harness.api.components import Strategy, TaskRun
from harness.api.hookspecs import hookimpl
from harness.api.host import EXTRA_ENV, LOAD_ENV, PluginHost
from harness.api.options import Option
from harness.results.records import Evaluation, Record, Training
from harness.results.store import PREDICTIONS, STEPS
from harness.worker.cell import CellState, run_cell
from harness.worker.oom import describe_error
from harness.worker.training import BatchBackoff, accumulation_steps, evaluate_with_backoff, train

FAST = dict(batch_size=8, learning_rate=5e-3, warmup_steps_excluded=0)


class _OomInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test: in backward)")


class OomAbove:
    """A forward hook raising ``torch.OutOfMemoryError`` when a pass sees more than a limit of examples.

    It raises after the forward pass ran (dropout drew its masks, a graph was built), or, with ``in_backward``, from
    the backward pass. With ``spare_first`` the first micro-batch of each optimizer step (no gradients yet) passes
    whatever its size, so a step fails with a partial gradient already accumulated.
    """

    def __init__(
        self, train_limit: int | None = None, eval_limit: int | None = None, *, in_backward=False, spare_first=False
    ):
        self.train_limit, self.eval_limit = train_limit, eval_limit
        self.in_backward, self.spare_first = in_backward, spare_first
        self.raised: list[tuple[str, int]] = []

    def attach(self, model: Any) -> Any:
        model.register_forward_hook(self.hook, with_kwargs=True)
        return model

    def hook(self, module: Any, args: Any, kwargs: Mapping[str, Any], output: Any) -> Any:
        rows = kwargs["input_ids"].shape[0]
        limit = self.train_limit if module.training else self.eval_limit
        if limit is None or rows <= limit:
            return None
        if module.training and self.spare_first and all(p.grad is None for p in module.parameters()):
            return None
        self.raised.append(("train" if module.training else "eval", rows))
        if self.in_backward and module.training:
            output["loss"] = _OomInBackward.apply(output["loss"])
            return output
        raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB (test: {rows} > {limit})")


def fit(oom: OomAbove | None = None, seed: int = 0, n_train: int = 40, **budget):
    model = rt.tiny_bert(0)  # dropout 0.1: a redone step must draw the same masks
    if oom is not None:
        oom.attach(model)
    run = rt.ToyRun(n_train=n_train)
    torch.manual_seed(seed)
    logged: list[str] = []
    outcome = train(model, run, Budget(**{**FAST, **budget}), "cpu", seed, log=logged.append)
    return outcome, model, logged


def assert_same_weights(a: Any, b: Any) -> None:
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), name


def test_the_real_out_of_memory_type_is_what_the_harness_recognises():
    from harness.worker.oom import is_out_of_memory

    assert torch.OutOfMemoryError is torch.cuda.OutOfMemoryError and issubclass(torch.OutOfMemoryError, RuntimeError)
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch")) and not is_out_of_memory(ValueError("out of memory"))


def test_batch_backoff_halves_rounding_up_down_to_one():
    sizes, backoff = [], BatchBackoff(6)
    while backoff.halve():
        sizes.append(backoff.size)
    assert sizes == [3, 2, 1] and backoff.retries == 3 and backoff.size == 1
    assert [accumulation_steps(6, m) for m in (6, 3, 2, 1)] == [1, 2, 3, 6]
    with pytest.raises(ValueError):
        BatchBackoff(0)


def test_training_backs_off_to_the_micro_batch_that_fits_and_equals_a_run_configured_with_it():
    oom = OomAbove(train_limit=2)
    backed, model_backed, logged = fit(oom, max_steps=6)
    plain, model_plain, _ = fit(max_steps=6, grad_accum_steps=4)
    assert (backed.oom_retries, backed.micro_batch_size, backed.grad_accum_steps) == (2, 2, 4)
    assert (plain.oom_retries, plain.micro_batch_size, plain.grad_accum_steps) == (0, 2, 4)
    assert oom.raised == [("train", 8), ("train", 4)]  # only the first step failed, twice
    assert backed.steps == plain.steps == 6 and backed.samples == plain.samples == 48
    assert backed.tokens == plain.tokens  # the failed attempts' tokens are not counted
    assert backed.losses == plain.losses
    assert_same_weights(model_backed, model_plain)
    assert len(logged) == 2 and "out of memory in training step 1 at micro-batch 8" in logged[0]
    assert "micro-batch 2 x 4 accumulation steps (batch 8)" in logged[1]


def test_a_step_failing_after_a_partial_gradient_is_redone_from_its_start():
    """The first micro-batch of the step is accumulated, the second runs out of memory in its backward pass."""
    oom = OomAbove(train_limit=2, in_backward=True, spare_first=True)
    backed, model_backed, _ = fit(oom, max_steps=4, grad_accum_steps=2)
    plain, model_plain, _ = fit(max_steps=4, grad_accum_steps=4)
    assert oom.raised == [("train", 4)] and backed.oom_retries == 1 and backed.micro_batch_size == 2
    assert backed.losses == plain.losses and backed.tokens == plain.tokens
    assert_same_weights(model_backed, model_plain)


class TokenRun(rt.ToyRun):
    """Token-level labels: micro-batches weigh by labelled tokens, not examples."""

    def collate(self, examples):
        batch = super().collate(examples)
        labels = (batch["input_ids"] % 2).masked_fill(batch["attention_mask"] == 0, -100)
        return {**batch, "labels": labels}


def first_step_gradients(model: Any, run: TaskRun, **budget) -> list[torch.Tensor]:
    grads: list[torch.Tensor] = []

    def capture(optimizer, args, kwargs):
        if not grads:
            grads.extend(p.grad.clone() for g in optimizer.param_groups for p in g["params"])

    handle = register_optimizer_step_pre_hook(capture)
    try:
        train(model, run, Budget(**{**FAST, "max_steps": 1, **budget}), "cpu", 0, log=lambda line: None)
    finally:
        handle.remove()
    return grads


@pytest.mark.parametrize("token_level", [False, True], ids=["per-example", "per-token"])
def test_unequal_micro_batches_after_back_off_keep_the_whole_batch_gradient(token_level):
    from transformers import BertForTokenClassification

    def model(limit: int | None):
        torch.manual_seed(0)
        config = rt.tiny_bert_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        built = BertForTokenClassification(config) if token_level else rt.tiny_bert(0, **config.to_diff_dict())
        return OomAbove(train_limit=limit).attach(built) if limit else built

    def run():
        return TokenRun(n_train=40) if token_level else rt.ToyRun(n_train=40)

    backed_run = run()
    backed = first_step_gradients(model(3), backed_run, batch_size=10)  # 10 -> 5 -> 3: chunks of 3, 3, 3, 1
    plain = first_step_gradients(model(None), run(), batch_size=10)
    assert [len(ids) for ids, _ in backed_run.collated][-4:] == [3, 3, 3, 1]
    for a, b in zip(backed, plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_out_of_memory_at_a_micro_batch_of_one_fails_and_other_errors_are_not_retried():
    oom = OomAbove(train_limit=0)
    micro = BatchBackoff(8)
    model = oom.attach(rt.tiny_bert(0))
    with pytest.raises(torch.OutOfMemoryError):
        train(model, rt.ToyRun(n_train=16), Budget(**FAST, max_steps=1), "cpu", 0, micro=micro, log=lambda s: None)
    assert micro.size == 1 and micro.retries == 3 and [rows for _, rows in oom.raised] == [8, 4, 2, 1]

    class Broken(rt.ToyRun):
        def evaluate(self, model, split, batch_size, device):
            self.sizes = [*getattr(self, "sizes", []), batch_size]
            raise RuntimeError("shape mismatch") if batch_size < 4 else torch.OutOfMemoryError("CUDA out of memory.")

    broken, batch = Broken(), BatchBackoff(16)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        evaluate_with_backoff(broken, None, "test", batch, "cpu", log=lambda line: None)
    assert broken.sizes == [16, 8, 4, 2] and batch.retries == 3


def test_early_stopping_validation_backs_off_and_keeps_the_smaller_batch():
    oom = OomAbove(eval_limit=4)
    eval_batch = BatchBackoff(32)
    model = oom.attach(rt.tiny_bert(0))
    run = rt.ToyRun(n_train=16)
    budget = Budget(**FAST, epochs=2, early_stopping_patience=5, eval_batch_size=32)
    outcome = train(model, run, budget, "cpu", 0, eval_batch=eval_batch, log=lambda line: None)
    assert eval_batch.size == 4 and eval_batch.retries == 3 and len(outcome.validation) == 2
    assert [rows for _, rows in oom.raised] == [32, 16, 8]  # the second validation starts at 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_real_cuda_out_of_memory_backs_off_and_frees_the_failed_attempt():
    """The caching allocator itself raises: each forward pass asks for a third of the free memory per example."""
    free, _ = torch.cuda.mem_get_info()
    block = free // 3

    def hog(module, args, kwargs, output):
        if module.training:
            torch.empty(kwargs["input_ids"].shape[0] * block, dtype=torch.uint8, device="cuda")

    model = rt.tiny_bert(0).to("cuda")
    model.register_forward_hook(hog, with_kwargs=True)
    logged: list[str] = []
    outcome = train(model, rt.ToyRun(n_train=32), Budget(**FAST, max_steps=4), "cuda", 0, log=logged.append)
    assert (outcome.oom_retries, outcome.micro_batch_size, outcome.grad_accum_steps) == (2, 2, 4)
    assert outcome.steps == 4 and all(loss == loss for loss in outcome.losses)  # no NaN
    assert "CUDA out of memory" in logged[0]
    assert torch.cuda.memory_allocated() < block  # nothing of the failed attempts is held


# -- whole cells: the record, the log, evaluation -----------------------------------------------------------------
class OomStrategy(Strategy):
    name = "toy-oom"
    description = "trains every weight; runs out of memory above a batch size"
    options = (
        Option("train_limit", "int", None, "largest training micro-batch that fits"),
        Option("eval_limit", "int", None, "largest evaluation batch that fits"),
    )

    def apply(self, model: Any, run: TaskRun, options: Mapping[str, Any], ctx: Any) -> Any:
        return OomAbove(options.get("train_limit"), options.get("eval_limit")).attach(model)


@hookimpl
def harness_register_strategies(register):
    register(OomStrategy())


@pytest.fixture
def host(monkeypatch) -> PluginHost:
    monkeypatch.setenv(LOAD_ENV, "")
    monkeypatch.delenv(EXTRA_ENV, raising=False)
    return PluginHost.load(extra=[("toyrt", rt), ("oomtest", sys.modules[__name__])])


def make_cell(train_limit=None, eval_limit=None, **budget) -> Cell:
    values = dict(epochs=1, batch_size=16, learning_rate=5e-3, eval_batch_size=32, warmup_steps_excluded=0)
    values.update(budget)
    return Cell(
        suite="oom",
        task="toy",
        task_type="toy-cls",
        task_options={"n_train": 48, "n_eval": 32},
        strategy="oom",
        strategy_type="toy-oom",
        strategy_options={"train_limit": train_limit, "eval_limit": eval_limit},
        model="tiny",
        model_source="toy-bert",
        model_options={"dropout": 0.1},
        model_family="encoder",
        seed=0,
        budget=Budget(**values),
    )


def run_in_process(cell: Cell, host: PluginHost, out_dir) -> Record:
    """As the worker does: an exception becomes a ``failed`` record of what was measured."""
    state = CellState(cell, "test", "cpu")
    try:
        return run_cell(cell, host, out_dir, "cpu", "test", state=state)
    except Exception as exc:
        return state.record("failed", describe_error(exc))


def test_a_cell_records_its_back_off_and_equals_a_cell_configured_with_the_sizes_that_fit(host, tmp_path, capsys):
    backed = run_in_process(make_cell(train_limit=4, eval_limit=8), host, tmp_path / "backed")
    log = capsys.readouterr().err
    plain = run_in_process(make_cell(grad_accum_steps=4, eval_batch_size=8), host, tmp_path / "plain")
    assert backed.status == plain.status == "ok", (backed.error, plain.error)
    assert backed.training.oom_retries == 2 and backed.training.micro_batch_size == 4
    assert backed.training.grad_accum_steps == 4
    assert backed.evaluation.oom_retries == 2 and backed.evaluation.eval_batch_size == 8
    assert (plain.training.oom_retries, plain.training.micro_batch_size, plain.training.grad_accum_steps) == (0, 4, 4)
    assert (plain.evaluation.oom_retries, plain.evaluation.eval_batch_size) == (0, 8)
    assert backed.config["budget"]["grad_accum_steps"] == 1 and backed.config["budget"]["eval_batch_size"] == 32
    assert backed.metrics == plain.metrics
    assert backed.training.loss_last == plain.training.loss_last and backed.training.tokens == plain.training.tokens
    assert (tmp_path / "backed" / PREDICTIONS).read_text() == (tmp_path / "plain" / PREDICTIONS).read_text()
    losses = [json.loads((tmp_path / name / STEPS).read_text())["loss"] for name in ("backed", "plain")]
    assert losses[0] == losses[1] and len(losses[0]) == 3
    assert "harness: out of memory in training step 1 at micro-batch 16" in log
    assert "harness: out of memory evaluating 'test' at batch 32" in log and "redoing it at batch 8" in log
    # round trip through JSON keeps the new fields
    again = Record.from_json(backed.to_json())
    assert again.training == backed.training and again.evaluation == backed.evaluation


def test_a_cell_out_of_memory_at_micro_batch_one_fails_with_the_error_and_records_how_far_it_went(host, tmp_path):
    record = run_in_process(make_cell(train_limit=0), host, tmp_path)
    assert record.status == "failed" and record.error.startswith("out of memory: CUDA out of memory")
    training = record.training
    assert (training.oom_retries, training.micro_batch_size, training.grad_accum_steps) == (4, 1, 16)
    assert record.evaluation.eval_batch_size == 32 and record.evaluation.oom_retries == 0


def test_records_without_the_back_off_fields_still_read():
    identity = dict(key="k", suite="s", cell_id="c", task="t", strategy="s", model="m", seed=0, status="ok")
    record = Record.from_json({**identity, "training": {"steps": 3}, "evaluation": {"samples": 2}, "schema_version": 1})
    assert record.training == Training(steps=3) and record.training.oom_retries == 0
    assert record.training.micro_batch_size is None and record.training.grad_accum_steps is None
    assert record.evaluation == Evaluation(samples=2) and record.evaluation.eval_batch_size is None
