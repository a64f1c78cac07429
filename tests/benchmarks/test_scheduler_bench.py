"""The scheduler's makespan and decision time, with fake cells of known durations on G fake GPUs (no processes).

Makespan: the balanced suite of ``tests/test_scheduler.py`` (40 cells of 1 GiB, durations drawn uniformly from 60
to 600 s with a fixed seed) on G = 2, 4 and 8 GPUs of 80 GiB, one cell per GPU, simulated by
:func:`harness.run.scheduler.simulate` — the :class:`~harness.run.scheduler.Planner` the local executor uses, on an
event-driven clock. The makespan must be within 10 % of the ideal Σ/G with the durations known; the ratios with
±20 % noise on the actual durations and with no durations known (plan order) are printed beside it.
(``tests/test_scheduler.py`` asserts the same bound in every test run.)

Decision time: one :meth:`Planner.place` over 1,000 pending cells of mixed sizes on 8 GPUs with up to 4 cells per
GPU, and a whole simulated run of those 1,000 cells.

Run with ``pytest tests/benchmarks/test_scheduler_bench.py -o addopts=--import-mode=importlib -s``; the ratios and
times are printed and stored in the benchmark JSON (``extra_info``).
"""

from __future__ import annotations

import random

import pytest
from test_scheduler import GIB, balanced_suite, makespan_ratio

from harness.run.estimates import Demand
from harness.run.scheduler import Planner, simulate


@pytest.mark.parametrize("gpus", [2, 4, 8])
def test_balanced_suite_makespan(benchmark, gpus):
    items = balanced_suite()
    ratio = benchmark(makespan_ratio, items, gpus)
    rng = random.Random(gpus)
    noisy = makespan_ratio(items, gpus, actual={k: d.duration_s * rng.lognormvariate(0, 0.2) for k, d in items})
    blind = makespan_ratio([(k, Demand(d.memory_bytes)) for k, d in items], gpus,
                           actual={k: d.duration_s for k, d in items})
    benchmark.extra_info.update(gpus=gpus, cells=len(items), ratio=ratio, ratio_noisy=noisy, ratio_unknown=blind)
    print(f"\nG={gpus}: makespan / (Σ/G) = {ratio:.4f} known durations, {noisy:.4f} with ±20 % noise, "
          f"{blind:.4f} unknown (plan order)")
    assert ratio <= 1.10


def mixed_cells(n: int, seed: int = 1) -> list[tuple[int, Demand]]:
    rng = random.Random(seed)
    return [(i, Demand(int(rng.choice([2, 6, 12, 24, 40, 70]) * GIB), rng.uniform(30, 3600))) for i in range(n)]


def test_decision_time_for_1000_cells(benchmark):
    cells, gpus = mixed_cells(1000), [80 * GIB] * 8

    def first_decision() -> int:
        return len(Planner(cells, gpus, max_cells_per_gpu=4).place())

    placed = benchmark(first_decision)
    seconds = benchmark.stats.stats.mean
    intervals = simulate(cells, gpus, max_cells_per_gpu=4)
    benchmark.extra_info.update(cells=len(cells), gpus=len(gpus), placed_first=placed)
    print(f"\n1,000 cells on 8 GPUs (up to 4 each): first decision {seconds * 1e3:.2f} ms, {placed} placed; "
          f"{len(intervals)} cells simulated")
    assert placed >= 8 and len(intervals) == 1000


def test_whole_simulated_run_of_1000_cells(benchmark):
    cells, gpus = mixed_cells(1000), [80 * GIB] * 8
    intervals = benchmark(simulate, cells, gpus, 4)
    decisions = len(intervals)
    per = benchmark.stats.stats.mean / decisions
    benchmark.extra_info.update(cells=decisions, seconds_per_cell=per)
    print(f"\n1,000 cells on 8 GPUs: a whole simulated run {benchmark.stats.stats.mean * 1e3:.1f} ms, "
          f"{per * 1e6:.1f} µs per cell placed and released")
    assert decisions == 1000
