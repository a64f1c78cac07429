"""Measuring a cell honestly (see ``../shared/docs/MEASUREMENT.md``): step times, GPU memory, peak RSS.

GPU work is asynchronous, so on CUDA each step is bracketed by a pair of ``torch.cuda.Event(enable_timing=True)``
and all elapsed times are read after ONE ``synchronize()`` at the end; the host wall time of every step is kept as
well, so data-loading stalls show. On CPU the host clock is the step clock.

Every CUDA path takes an injectable ``cuda`` object (default :mod:`torch.cuda`) so tests can pass an honest fake
that records the calls made and returns fixed numbers.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CUDA_EVENTS = "cuda_events"
HOST_CLOCK = "host_clock"


def _torch_cuda() -> Any:
    import torch

    return torch.cuda


@dataclass(frozen=True)
class StepStats:
    """Summary of per-step times in seconds, warm-up steps excluded.

    ``p90`` is the 90th percentile by linear interpolation between the two closest ranks, i.e. the value at position
    ``0.9 * (count - 1)`` of the sorted samples (``statistics.quantiles(method="inclusive")``, the same as NumPy's
    default ``"linear"`` percentile); with one sample it is that sample. ``stdev`` is the sample standard
    deviation (``None`` with fewer than two samples). All values are ``None`` when there are no samples.
    """

    median: float | None
    p90: float | None
    mean: float | None
    stdev: float | None
    count: int
    warmup_steps_excluded: int


def step_stats(samples: Sequence[float], warmup: int) -> StepStats:
    """Statistics of ``samples`` without the first ``warmup`` steps.

    When there are not more than ``warmup`` samples, all of them are used and ``warmup_steps_excluded`` is 0, so
    the result says what was actually done.
    """
    excluded = warmup if len(samples) > warmup else 0
    kept = list(samples[excluded:])
    if not kept:
        return StepStats(None, None, None, None, 0, excluded)
    return StepStats(
        median=statistics.median(kept),
        p90=statistics.quantiles(kept, n=10, method="inclusive")[8] if len(kept) > 1 else kept[0],
        mean=statistics.fmean(kept),
        stdev=statistics.stdev(kept) if len(kept) > 1 else None,
        count=len(kept),
        warmup_steps_excluded=excluded,
    )


class StepTimer:
    """Times training steps: CUDA events on a GPU (read after one synchronize), the host clock always.

    Use :meth:`start` and :meth:`stop` around each step, then :meth:`finish` once, after the last step.
    """

    def __init__(self, device: str, cuda: Any | None = None):
        self.use_events = device.startswith("cuda")
        self.cuda = (cuda if cuda is not None else _torch_cuda()) if self.use_events else None
        self.host_times: list[float] = []
        self._events: list[tuple[Any, Any]] = []
        self._host_start: float | None = None
        self._device_times: list[float] | None = None

    @property
    def clock(self) -> str:
        """``"cuda_events"`` or ``"host_clock"``: what :meth:`step_times` are measured with."""
        return CUDA_EVENTS if self.use_events else HOST_CLOCK

    def start(self) -> None:
        self._host_start = time.perf_counter()
        if self.cuda is not None:
            event = self.cuda.Event(enable_timing=True)
            event.record()
            self._events.append((event, None))

    def stop(self) -> None:
        if self._host_start is None:
            raise RuntimeError("StepTimer.stop() without start()")
        if self.cuda is not None:
            end = self.cuda.Event(enable_timing=True)
            end.record()
            self._events[-1] = (self._events[-1][0], end)
        self.host_times.append(time.perf_counter() - self._host_start)
        self._host_start = None

    def finish(self) -> None:
        """Synchronize once and read every step's device time (a no-op on CPU)."""
        if self.cuda is None or self._device_times is not None:
            return
        self.cuda.synchronize()
        self._device_times = [start.elapsed_time(end) / 1000.0 for start, end in self._events]

    def step_times(self) -> list[float]:
        """Per-step seconds on :attr:`clock` (call :meth:`finish` first on CUDA)."""
        if self.cuda is None:
            return list(self.host_times)
        if self._device_times is None:
            raise RuntimeError("StepTimer.finish() must be called before reading CUDA step times")
        return list(self._device_times)


@dataclass(frozen=True)
class GpuMemory:
    """GPU memory of one cell, in bytes."""

    start_allocated: int
    peak_allocated: int
    peak_reserved: int


class GpuMemoryMeter:
    """Peak GPU memory: ``reset_peak_memory_stats()`` -> run -> ``synchronize()`` -> ``max_memory_*()``."""

    def __init__(self, cuda: Any | None = None):
        self.cuda = cuda if cuda is not None else _torch_cuda()
        self.start_allocated: int | None = None

    def start(self) -> int:
        """Reset the peak statistics and record what is already allocated (non-zero: the GPU was not clean)."""
        self.cuda.reset_peak_memory_stats()
        self.start_allocated = int(self.cuda.memory_allocated())
        return self.start_allocated

    def reset_peak(self) -> None:
        """Start the peak window again (e.g. after loading, before training)."""
        self.cuda.reset_peak_memory_stats()

    def finish(self) -> GpuMemory:
        """Wait for queued work, then read the peaks."""
        if self.start_allocated is None:
            raise RuntimeError("GpuMemoryMeter.finish() without start()")
        self.cuda.synchronize()
        return GpuMemory(
            start_allocated=self.start_allocated,
            peak_allocated=int(self.cuda.max_memory_allocated()),
            peak_reserved=int(self.cuda.max_memory_reserved()),
        )


def synchronize(device: str, cuda: Any | None = None) -> None:
    """Wait for queued GPU work before reading a host clock (no-op on CPU)."""
    if device.startswith("cuda"):
        (cuda if cuda is not None else _torch_cuda()).synchronize()


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process in bytes (``ru_maxrss`` only rises: valid with one process per cell).

    ``ru_maxrss`` is in KiB on Linux and in bytes on macOS; ``None`` where :mod:`resource` does not exist (Windows).
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(value) if sys.platform == "darwin" else int(value) * 1024
