"""The training loop every training strategy shares, so strategies differ only in what they train.

Protocol (the same for every strategy in a suite):

* **Batches.** ``budget.batch_size`` is the *effective* batch: examples per optimizer step. Each step is split into
  ``budget.grad_accum_steps`` micro-batches of ``batch_size // grad_accum_steps`` examples (``batch_size`` must be a
  multiple of ``grad_accum_steps``); each micro-batch loss is weighted by its share of the step's loss units
  (``run.loss_units``: examples, or labelled tokens for token-level losses), so the accumulated gradient equals the
  gradient of the mean loss over the whole batch. Every micro-batch is padded to its
  own longest member by ``run.collate`` — never to a fixed length. The last batch of an epoch may be smaller.
* **Order.** A ``torch.Generator`` seeded with the cell seed draws a new permutation every epoch. With
  ``budget.length_grouped`` the permutation is cut into mega-batches of 50 batches, each mega-batch is sorted by
  ``run.length(example)`` (longest first) and cut into batches, and the order of all batches is shuffled with the
  same generator (:func:`epoch_batches`): similar lengths share a batch, so padding shrinks, while every example is
  still seen exactly once per epoch in a seeded random order.
* **Length.** ``budget.max_steps`` optimizer steps when set, otherwise ``ceil(epochs * steps_per_epoch)`` (fractional
  epochs allowed).
* **Optimizer.** AdamW over trainable parameters only, torch's fused kernel where it has one (CUDA; CPU since torch
  2.4; as transformers' ``Trainer`` by default); no weight decay on biases and normalisation weights (the
  rule of transformers' ``Trainer``); linear warm-up (``warmup_steps``, else ``ceil(warmup_ratio * steps)``) then
  linear decay to 0; gradient clipping at ``max_grad_norm`` (0 disables).
* **Early stopping** (``budget.early_stopping_patience``): after each epoch (and after a final partial one) the model
  is scored with ``run.evaluate(model, "validation", ...)`` on ``run.primary_metric``; training stops after
  ``patience`` epochs without improvement and the best weights are restored from a CPU copy of the trainable
  parameters. Evaluation time is excluded from ``train_s`` and from step times.
* **Counting.** Non-padding tokens are the sum of ``attention_mask`` (all ``input_ids`` without a mask).
* **Out-of-memory back-off.** The micro-batch is a runtime value (:class:`BatchBackoff`), starting at ``batch_size //
  grad_accum_steps``. When a micro-batch's forward or backward pass runs out of memory (``is_out_of_memory``), the
  step's gradients are dropped, what the attempt held is freed (``gc.collect()``; ``torch.cuda.empty_cache()`` on
  CUDA), the micro-batch is halved (rounding up: 6 → 3 → 2 → 1; accumulation becomes ``ceil(batch_size / micro)``,
  the last chunk may be smaller) and the *current* step is redone from its start with the torch RNG state it started
  with: data order, dropout draws, step count and effective batch are those of a run configured with the smaller
  micro-batch from the start. The redone step's time includes its failed attempts. At a micro-batch of 1 (or in
  clipping or the optimizer step) the error propagates. Validation evaluations back off likewise
  (:func:`evaluate_with_backoff`). Each back-off writes a ``harness: out of memory ...`` line to stderr (the cell log).
* **Precision and compilation** (:mod:`harness.worker.precision`): forward passes and losses run under the
  precision's autocast (validation too), backward and the optimizer step through its gradient scaler (``fp16-mixed``:
  skipped steps still count as steps and advance the schedule); with ``budget.compile`` the steps run the
  ``torch.compile`` of the model, compiled and warmed up before the clock starts (``compile_s``, not ``train_s``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.api.budget import Budget, total_steps
from harness.api.components import TaskRun
from harness.errors import HarnessError
from harness.worker.measure import StepStats, StepTimer, step_stats, synchronize
from harness.worker.oom import (  # noqa: F401  (re-exported: the cell and tests import them from here)
    BatchBackoff,
    Log,
    accumulation_steps,
    evaluate_with_backoff,
    first_line,
    free_memory,
    is_out_of_memory,
    log_to_stderr,
    rng_state,
    set_rng_state,
)
from harness.worker.precision import GradientScaling, ModelRuntime, compile_for_training

#: Batches per mega-batch in length-grouped batching.
MEGA_BATCH_BATCHES = 50
#: Parameter-name patterns without weight decay (transformers' ``Trainer.get_decay_parameter_names``).
NO_DECAY_PATTERNS = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")
#: Seconds between progress calls.
PROGRESS_INTERVAL_S = 0.5

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainOutcome:
    """What training did and how long it took (evaluation excluded)."""

    steps: int
    epochs: float
    samples: int
    tokens: int
    early_stopped: bool
    best_epoch: int | None
    validation: tuple[float, ...]
    loss_first: float | None
    loss_last: float | None
    train_s: float
    step_stats: StepStats
    #: Host wall time per step (includes collation), for spotting data-loading stalls on a GPU.
    host_step_stats: StepStats
    #: ``cuda_events`` or ``host_clock``: the clock of :attr:`step_stats` and :attr:`step_times`.
    clock: str
    losses: tuple[float, ...]
    step_times: tuple[float, ...]
    host_step_times: tuple[float, ...]
    #: Out-of-memory back-offs of the micro-batch (steps redone), and the micro-batch and accumulation that ran last.
    oom_retries: int = 0
    micro_batch_size: int | None = None
    grad_accum_steps: int | None = None
    #: ``fp16-mixed``: optimizer steps the gradient scaler skipped (counted in ``steps``).
    scaler_skipped_steps: int = 0
    #: ``budget.compile``: seconds of ``torch.compile`` and its warm-up, before the training clock started.
    compile_s: float | None = None


def epoch_batches(n: int, batch_size: int, generator: Any, lengths: Sequence[int] | None = None) -> list[list[int]]:
    """Index batches covering ``range(n)`` exactly once, in a seeded order; length-grouped when ``lengths`` given."""
    import torch

    order = torch.randperm(n, generator=generator).tolist()
    if lengths is None:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    mega = batch_size * MEGA_BATCH_BATCHES
    batches: list[list[int]] = []
    for start in range(0, n, mega):
        chunk = sorted(order[start : start + mega], key=lambda i: lengths[i], reverse=True)
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def build_optimizer(model: Any, budget: Budget, device: str) -> Any:
    """AdamW over trainable parameters, without weight decay on biases and normalisation weights."""
    import torch
    from transformers.trainer_pt_utils import get_parameter_names

    decay_names = set(get_parameter_names(model, [torch.nn.LayerNorm], list(NO_DECAY_PATTERNS)))
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if name in decay_names else no_decay).append(param)
    if not decay and not no_decay:
        raise HarnessError("the strategy left no trainable parameters")
    groups = [
        g
        for g in ({"params": decay, "weight_decay": budget.weight_decay}, {"params": no_decay, "weight_decay": 0.0})
        if g["params"]
    ]
    return torch.optim.AdamW(groups, lr=budget.learning_rate, fused=_fused_supported(groups, device))


def _fused_supported(groups: list[dict[str, Any]], device: str) -> bool | None:
    """``True`` when torch's fused AdamW kernel can take these parameters (CUDA, and CPU since torch 2.4, floating
    point): one kernel for every parameter instead of a Python loop over them, as transformers' Trainer uses by
    default (``adamw_torch_fused``); ``None`` (torch's default) otherwise."""
    import torch

    kind = torch.device(device).type
    params = [p for group in groups for p in group["params"]]
    if kind not in ("cuda", "cpu") or not all(p.is_floating_point() and p.device.type == kind for p in params):
        return None
    try:
        torch.optim.AdamW([torch.zeros(1, device=params[0].device, dtype=params[0].dtype)], fused=True)
    except (RuntimeError, ValueError):  # a torch without the fused kernel for this device or dtype
        return None
    return True


def _loss(output: Any) -> Any:
    loss = output["loss"] if isinstance(output, Mapping) else getattr(output, "loss", None)
    if loss is None:
        raise HarnessError("the model returned no loss: the task's collate must provide labels")
    return loss


def _tokens(batch: Mapping[str, Any]) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def _to_device(batch: Mapping[str, Any], device: str) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if hasattr(v, "to") else v for k, v in batch.items()}


def _accumulate(
    model: Any, run: TaskRun, examples: Sequence[Any], batch: list[int], micro: int, device: str,
    runtime: ModelRuntime, scaling: GradientScaling,
) -> tuple[Any, int]:
    """Forward (under the precision's autocast) and backward (through its gradient scaling) of one optimizer step's
    micro-batches (chunks of ``micro`` examples), each loss weighted by its share of the step's loss units; returns
    ``(step loss, non-padding tokens)``. What it allocates is local, so an exception takes it away with this frame."""
    parts = [run.collate([examples[j] for j in batch[i : i + micro]]) for i in range(0, len(batch), micro)]
    if len(parts) == 1:
        weights = [1.0]
    else:
        units = [run.loss_units(p) for p in parts]
        weights = [u / sum(units) for u in units] if sum(units) else [1.0 / len(parts)] * len(parts)
    step_loss, tokens = None, 0
    for inputs, weight in zip(parts, weights, strict=True):
        tokens += _tokens(inputs)
        with runtime.autocast():
            loss = _loss(model(**_to_device(inputs, device))) * weight
        scaling.backward(loss)
        step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
    return step_loss, tokens


class _EarlyStopping:
    def __init__(self, run: TaskRun, patience: int):
        self.run, self.patience = run, patience
        self.history: list[float] = []
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict[str, Any] | None = None
        self.bad_epochs = 0

    def update(self, model: Any, metrics: Mapping[str, float], epoch: int) -> bool:
        """Record an epoch's validation metrics; return True when training should stop."""
        name = self.run.primary_metric
        if name not in metrics:
            raise HarnessError(f"early stopping needs validation metric {name!r}; the task returned {sorted(metrics)}")
        value = float(metrics[name])
        self.history.append(value)
        better = self.best is None or (value > self.best if self.run.greater_is_better else value < self.best)
        if better:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            self.best_state = {
                n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad
            }
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def restore(self, model: Any) -> None:
        if self.best_state is None:
            return
        import torch

        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in self.best_state:
                    param.copy_(self.best_state[name])


def train(
    model: Any,
    run: TaskRun,
    budget: Budget,
    device: str,
    seed: int,
    progress: Progress | None = None,
    *,
    cuda: Any | None = None,
    micro: BatchBackoff | None = None,
    eval_batch: BatchBackoff | None = None,
    log: Log = log_to_stderr,
    runtime: ModelRuntime | None = None,
) -> TrainOutcome:
    """Train ``model`` (already on ``device``) on ``run``'s training split under ``budget`` (see module docs).

    :param micro: the micro-batch size, halved in place on out-of-memory errors (default: ``batch_size //
        grad_accum_steps``); pass one to read what ran even when training fails.
    :param eval_batch: the validation batch size of early stopping, halved in place likewise (default:
        ``budget.eval_batch_size``).
    :param log: where back-off lines go (default: stderr, the cell log).
    :param runtime: precision and compilation (default: resolved from ``budget`` for ``device``); the model must
        already be prepared for it (:meth:`~harness.worker.precision.ModelRuntime.prepare`).
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    progress = progress or (lambda phase, done, total: None)
    examples = run.examples("train")
    n = len(examples)
    if n == 0:
        raise HarnessError("the task has no training examples")
    if budget.batch_size % budget.grad_accum_steps:
        raise HarnessError(
            f"budget.batch_size ({budget.batch_size}) must be a multiple of budget.grad_accum_steps "
            f"({budget.grad_accum_steps})"
        )
    micro = micro if micro is not None else BatchBackoff(budget.batch_size // budget.grad_accum_steps)
    eval_batch = eval_batch if eval_batch is not None else BatchBackoff(budget.eval_batch_size)
    planned = total_steps(n, budget)
    generator = torch.Generator().manual_seed(seed)
    lengths = [run.length(e) for e in examples] if budget.length_grouped else None
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(model, budget, device)
    warmup = budget.warmup_steps if budget.warmup_steps is not None else math.ceil(budget.warmup_ratio * planned)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, max(planned, 1))
    stopper = _EarlyStopping(run, budget.early_stopping_patience) if budget.early_stopping_patience else None
    timer = StepTimer(device, cuda)
    runtime = runtime if runtime is not None else ModelRuntime.for_cell(budget, device)
    scaling = runtime.scaler()

    step = epoch = samples = tokens = 0
    eval_s = 0.0
    early_stopped = False
    losses: list[Any] = []
    last_progress = 0.0
    model.train()
    forward, compile_s = model, None
    if budget.compile:
        first = list(range(min(micro.size, n)))
        plain = GradientScaling(None)
        forward, compile_s = compile_for_training(
            model, lambda compiled: _accumulate(compiled, run, examples, first, micro.size, device, runtime, plain),
            device,
        )
        optimizer.zero_grad(set_to_none=True)
    progress("train", 0, planned)
    started = time.perf_counter()
    while step < planned:
        batches = epoch_batches(n, budget.batch_size, generator, lengths)
        epoch += 1
        consumed = 0
        for batch in batches:
            if step >= planned:
                break
            timer.start()
            while True:
                largest = min(micro.size, len(batch))  # the largest micro-batch this step (the last batch may be short)
                rng = rng_state(device) if largest > 1 else None  # a micro-batch of 1 cannot back off
                try:
                    step_loss, step_tokens = _accumulate(
                        forward, run, examples, batch, micro.size, device, runtime, scaling
                    )
                    break
                except Exception as exc:
                    if rng is None or not is_out_of_memory(exc):
                        raise
                    message = first_line(exc)
                # outside the except block: the traceback (and the activations its frames hold) is gone
                optimizer.zero_grad(set_to_none=True)
                free_memory(device)
                before, micro.size = largest, largest
                micro.halve()
                set_rng_state(rng)
                log(
                    f"out of memory in training step {step + 1} at micro-batch {before} ({message}); redoing the "
                    f"step with micro-batch {micro.size} x {accumulation_steps(budget.batch_size, micro.size)} "
                    f"accumulation steps (batch {budget.batch_size})"
                )
            tokens += step_tokens
            scaling.step(optimizer, scheduler, trainable, budget.max_grad_norm)
            optimizer.zero_grad(set_to_none=True)
            timer.stop()
            losses.append(step_loss)
            samples += len(batch)
            consumed += len(batch)
            step += 1
            now = time.perf_counter()
            if step == planned or now - last_progress >= PROGRESS_INTERVAL_S:
                progress("train", step, planned)
                last_progress = now
        if stopper is not None and (consumed == n or step >= planned):
            synchronize(device, cuda)
            eval_started = time.perf_counter()
            with runtime.autocast():
                result = evaluate_with_backoff(run, model, "validation", eval_batch, device, log)
            stop = stopper.update(model, result.metrics, epoch)
            model.train()
            eval_s += time.perf_counter() - eval_started
            if stop:
                early_stopped = step < planned
                break
    synchronize(device, cuda)
    train_s = time.perf_counter() - started - eval_s
    timer.finish()
    if stopper is not None:
        stopper.restore(model)
    loss_values = torch.stack(losses).float().cpu().tolist() if losses else []
    step_times = timer.step_times()
    return TrainOutcome(
        steps=step,
        epochs=samples / n,
        samples=samples,
        tokens=tokens,
        early_stopped=early_stopped,
        best_epoch=stopper.best_epoch if stopper else None,
        validation=tuple(stopper.history) if stopper else (),
        loss_first=loss_values[0] if loss_values else None,
        loss_last=loss_values[-1] if loss_values else None,
        train_s=train_s,
        step_stats=step_stats(step_times, budget.warmup_steps_excluded),
        host_step_stats=step_stats(timer.host_times, budget.warmup_steps_excluded),
        clock=timer.clock,
        losses=tuple(loss_values),
        step_times=tuple(step_times),
        host_step_times=tuple(timer.host_times),
        oom_retries=micro.retries,
        micro_batch_size=micro.size,
        grad_accum_steps=accumulation_steps(budget.batch_size, micro.size),
        scaler_skipped_steps=scaling.skipped,
        compile_s=compile_s,
    )
