"""Measurement: step statistics, the step timer and GPU memory (with an honest fake CUDA), peak RSS."""

from __future__ import annotations

import numpy as np
import psutil
import pytest
import torch

from harness.worker.measure import (
    CUDA_EVENTS,
    HOST_CLOCK,
    GpuMemoryMeter,
    StepTimer,
    peak_rss_bytes,
    step_stats,
    synchronize,
)


class FakeCuda:
    """Stands in for ``torch.cuda``: logs every call in order and returns fixed numbers."""

    ELAPSED_MS = 25.0

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.synchronized = False
        fake = self

        class Event:
            def __init__(self, enable_timing: bool = False):
                assert enable_timing, "events must be created with enable_timing=True"
                fake.calls.append("Event")

            def record(self) -> None:
                fake.calls.append("record")

            def elapsed_time(self, end: Event) -> float:
                assert fake.synchronized, "elapsed_time read before synchronize()"
                fake.calls.append("elapsed_time")
                return fake.ELAPSED_MS

        self.Event = Event

    def synchronize(self) -> None:
        self.calls.append("synchronize")
        self.synchronized = True

    def reset_peak_memory_stats(self) -> None:
        self.calls.append("reset_peak_memory_stats")

    def memory_allocated(self) -> int:
        self.calls.append("memory_allocated")
        return 1_000

    def max_memory_allocated(self) -> int:
        assert self.synchronized, "peak read before synchronize()"
        self.calls.append("max_memory_allocated")
        return 5_000_000

    def max_memory_reserved(self) -> int:
        assert self.synchronized, "peak read before synchronize()"
        self.calls.append("max_memory_reserved")
        return 8_000_000


def test_step_stats_excludes_warmup_steps():
    samples = [9.0, 8.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    stats = step_stats(samples, warmup=2)
    kept = samples[2:]
    assert stats.count == 5 and stats.warmup_steps_excluded == 2
    assert stats.median == 3.0
    assert stats.mean == pytest.approx(3.0)
    assert stats.stdev == pytest.approx(np.std(kept, ddof=1))
    assert stats.p90 == pytest.approx(np.percentile(kept, 90))


def test_step_stats_uses_all_steps_when_too_few_and_says_so():
    stats = step_stats([4.0, 2.0, 3.0], warmup=3)
    assert stats.warmup_steps_excluded == 0 and stats.count == 3 and stats.median == 3.0
    one = step_stats([0.5], warmup=0)
    assert (one.median, one.p90, one.stdev, one.count) == (0.5, 0.5, None, 1)
    empty = step_stats([], warmup=5)
    assert empty.count == 0 and empty.median is None and empty.warmup_steps_excluded == 0


def test_host_clock_timer_on_cpu():
    timer = StepTimer("cpu")
    for _ in range(3):
        timer.start()
        sum(range(10_000))
        timer.stop()
    timer.finish()
    assert timer.clock == HOST_CLOCK
    assert len(timer.step_times()) == 3 and all(t > 0 for t in timer.step_times())
    assert timer.step_times() == timer.host_times


def test_cuda_timer_records_events_and_synchronizes_once_before_reading():
    cuda = FakeCuda()
    timer = StepTimer("cuda", cuda=cuda)
    for _ in range(4):
        timer.start()
        timer.stop()
    with pytest.raises(RuntimeError, match="finish"):
        timer.step_times()
    assert "synchronize" not in cuda.calls  # nothing blocks while steps run
    timer.finish()
    timer.finish()  # idempotent: still one synchronize
    assert cuda.calls.count("synchronize") == 1
    sync = cuda.calls.index("synchronize")
    assert cuda.calls[:sync] == ["Event", "record", "Event", "record"] * 4
    assert cuda.calls[sync + 1 :] == ["elapsed_time"] * 4
    assert timer.clock == CUDA_EVENTS
    assert timer.step_times() == [FakeCuda.ELAPSED_MS / 1000] * 4
    assert len(timer.host_times) == 4  # host wall time is kept too


def test_gpu_memory_meter_call_order():
    cuda = FakeCuda()
    meter = GpuMemoryMeter(cuda=cuda)
    with pytest.raises(RuntimeError):
        meter.finish()
    assert meter.start() == 1_000
    meter.reset_peak()
    memory = meter.finish()
    assert cuda.calls == [
        "reset_peak_memory_stats",
        "memory_allocated",
        "reset_peak_memory_stats",
        "synchronize",
        "max_memory_allocated",
        "max_memory_reserved",
    ]
    assert (memory.start_allocated, memory.peak_allocated, memory.peak_reserved) == (1_000, 5_000_000, 8_000_000)


def test_synchronize_only_on_cuda():
    cuda = FakeCuda()
    synchronize("cpu", cuda)
    assert cuda.calls == []
    synchronize("cuda", cuda)
    assert cuda.calls == ["synchronize"]


def test_peak_rss_is_in_bytes_and_rises():
    before = peak_rss_bytes()
    assert before is not None and before >= psutil.Process().memory_info().rss * 0.9
    block = bytearray(256 * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    after = peak_rss_bytes()
    assert after >= psutil.Process().memory_info().rss * 0.9
    assert after >= 200 * 1024 * 1024
    del block


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@gpu
def test_cuda_step_timer_on_a_real_gpu():
    a = torch.randn(2048, 2048, device="cuda")
    timer = StepTimer("cuda")
    for _ in range(3):
        timer.start()
        (a @ a).sum()
        timer.stop()
    timer.finish()
    times = timer.step_times()
    assert timer.clock == CUDA_EVENTS and len(times) == 3 and all(t > 0 for t in times)


@pytest.mark.gpu
@gpu
def test_gpu_memory_meter_on_a_real_gpu():
    meter = GpuMemoryMeter()
    start = meter.start()
    block = torch.empty(64 * 1024 * 1024, dtype=torch.uint8, device="cuda")
    del block
    memory = meter.finish()
    assert memory.start_allocated == start
    assert memory.peak_allocated >= start + 64 * 1024 * 1024
    assert memory.peak_reserved >= memory.peak_allocated
