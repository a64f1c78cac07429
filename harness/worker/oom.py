"""Out-of-memory back-off: a batch size that halves when a step runs out of memory, and what a retry needs.

Training (:func:`harness.worker.training.train`) halves the per-device micro-batch and raises the gradient accumulation so
the effective batch stays the same, and redoes the current optimizer step from its start: gradients zeroed, the
random-number state the step began with restored, so the run equals one configured from the start with the smaller
micro-batch. Evaluation (:func:`evaluate_with_backoff`) redoes the whole evaluation with half the batch. Both stop
at a batch of 1: the cell then fails with the out-of-memory error. The record says what ran (``training.
oom_retries``, ``micro_batch_size``, ``grad_accum_steps``; ``evaluation.oom_retries``, ``eval_batch_size``).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.components import EvalResult, TaskRun

Log = Callable[[str], None]


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM: ``torch.cuda.OutOfMemoryError``, or a ``RuntimeError`` saying "out of memory"."""
    torch = sys.modules.get("torch")
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def describe_error(exc: BaseException) -> str:
    """The ``error`` of a failed record."""
    message = str(exc).strip()
    if is_out_of_memory(exc):
        return f"out of memory: {message.splitlines()[0] if message else type(exc).__name__}"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


@dataclass
class BatchBackoff:
    """A per-device batch size (examples) that halves, rounding up, each time it runs out of memory, down to 1."""

    size: int
    #: Times the size was halved.
    retries: int = 0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"a batch size must be at least 1, got {self.size}")

    def halve(self) -> bool:
        """Halve the size (``ceil(size / 2)``) and count a retry; False (nothing changed) when it is already 1."""
        if self.size <= 1:
            return False
        self.size = (self.size + 1) // 2
        self.retries += 1
        return True


def accumulation_steps(batch_size: int, micro_batch_size: int) -> int:
    """Micro-batches of a full optimizer step: ``ceil(batch_size / micro_batch_size)``."""
    return -(-batch_size // micro_batch_size)


def log_to_stderr(message: str) -> None:
    """Write one ``harness: ...`` line to stderr, which the executor keeps as the cell log."""
    print(f"harness: {message}", file=sys.stderr, flush=True)


def free_memory(device: str) -> None:
    """Release what a failed attempt left: collect garbage (frames held by the traceback) and, on CUDA, return the
    caching allocator's unused blocks."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
        # the cell's peak is that of what ran: from the back-off on, not the failed attempt's near-capacity peak
        torch.cuda.reset_peak_memory_stats()


def evaluate_with_backoff(
    run: TaskRun, model: Any, split: str, batch: BatchBackoff, device: str, log: Log = log_to_stderr
) -> EvalResult:
    """``run.evaluate(model, split, batch.size, device)``; when it runs out of memory the whole evaluation is redone
    with half the batch (``batch`` keeps the smaller size for later evaluations), down to 1. Evaluation draws no
    random numbers and no state survives a failed attempt, so the result equals a run with the final batch size."""
    while True:
        try:
            return run.evaluate(model, split, batch.size, device)
        except Exception as exc:
            if not is_out_of_memory(exc) or batch.size <= 1:
                raise
            message = first_line(exc)
        # outside the except block: the traceback (and the tensors its frames hold) is gone
        free_memory(device)
        before = batch.size
        batch.halve()
        log(f"out of memory evaluating {split!r} at batch {before} ({message}); redoing it at batch {batch.size}")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def rng_state(device: str) -> tuple[Any, Any]:
    import torch

    return torch.get_rng_state(), torch.cuda.get_rng_state() if device.startswith("cuda") else None


def set_rng_state(state: tuple[Any, Any]) -> None:
    import torch

    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1])
