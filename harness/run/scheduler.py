"""Placing cells on GPUs: a packing policy, its event-driven simulation, the makespan report.

Pure planning logic: no torch, no processes, no clock of its own. The estimates it packs by come from
:mod:`harness.run.estimates`. The ``local`` executor drives a :class:`Planner`
with real workers; :func:`simulate` drives the same planner with a simulated clock (tests, benchmarks).

**Placement** (:class:`Planner`). Pending cells are taken longest first (longest-processing-time order: expected
duration, unknown durations counting as the mean of the known ones; then larger memory estimates; then plan order).
A cell goes to a GPU running fewer than ``max_cells_per_gpu`` cells whose free memory — total minus the estimates
of the cells running on it, minus a reserve of 5 % (at least 256 MiB) — holds its estimate; among those, the GPU
running the fewest cells, then the one with most free memory. A cell with an unknown estimate, and every cell on a
GPU of unknown size, runs alone. A cell larger than every GPU runs alone on an idle largest one (and may run out of
memory: recorded as failed, as before). A cell that does not fit now holds back the GPU it waits for (the least
loaded one that can ever hold it) from smaller cells behind it, so large cells are not starved. With
``max_cells_per_gpu = 1`` (the default) every GPU runs one cell at a time.

**Makespan report** (:func:`makespan_report`): per device the seconds it ran at least one cell (``busy_s``), the
rest of the suite's wall time (``idle_s``), its cells, their summed seconds and ``utilisation = busy_s / wall_s``;
for the suite ``ideal_s = Σ cell seconds / G`` over ``G`` lanes (GPUs, or ``--jobs`` on the CPU) and
``efficiency = ideal_s / wall_s``.
"""

from __future__ import annotations

import heapq
import math
import statistics
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.run.estimates import MIB, Demand

#: Part of each GPU kept free when cells share it, and its minimum.
RESERVE_FRACTION = 0.05
RESERVE_MIN_BYTES = 256 * MIB

# -- placement ------------------------------------------------------------------------------------------------------
def reserve_bytes(total: int | None) -> int:
    """Bytes kept free on a GPU of ``total`` bytes: 5 %, at least 256 MiB."""
    return max(RESERVE_MIN_BYTES, int(RESERVE_FRACTION * total)) if total else 0


def priority(demands: Sequence[tuple[Hashable, Demand]]) -> list[Hashable]:
    """Keys longest first (unknown durations count as the mean known one), then largest memory (unknown first),
    then as given."""
    known = [d.duration_s for _, d in demands if d.duration_s is not None]
    default = statistics.fmean(known) if known else 0.0

    def order(item: tuple[int, tuple[Hashable, Demand]]) -> tuple[float, float, int]:
        position, (_, demand) = item
        duration = demand.duration_s if demand.duration_s is not None else default
        memory = demand.memory_bytes if demand.memory_bytes is not None else math.inf
        return -duration, -memory, position

    return [key for _, (key, _) in sorted(enumerate(demands), key=order)]


@dataclass
class _Gpu:
    total: int | None
    reserve: int
    used: int = 0
    running: dict[Hashable, int] = field(default_factory=dict)
    #: Running cells that need the GPU to themselves.
    alone: set[Hashable] = field(default_factory=set)

    @property
    def room(self) -> int | None:
        """Bytes a new cell may take now (``None``: unknown size)."""
        return None if self.total is None else self.total - self.reserve - self.used


class Planner:
    """Decides which pending cell starts next on which GPU (see the module docstring for the policy).

    :param demands: ``(key, Demand)`` per cell, in plan order (keys are any hashable: cell keys, indices).
    :param gpus: each GPU's total memory in bytes (``None``: unknown).
    :param max_cells_per_gpu: cells one GPU may run at once.

    Call :meth:`place` whenever something changed (at first, after a cell ended); it marks the cells it returns as
    running. Call :meth:`release` when a cell ends, or when a placed cell could not start.
    """

    def __init__(
        self, demands: Sequence[tuple[Hashable, Demand]], gpus: Sequence[int | None], max_cells_per_gpu: int = 1
    ) -> None:
        if max_cells_per_gpu < 1:
            raise ValueError(f"max_cells_per_gpu must be at least 1, got {max_cells_per_gpu}")
        if not gpus:
            raise ValueError("no GPU to place cells on")
        self.max_cells_per_gpu = max_cells_per_gpu
        self._gpus = [_Gpu(total, reserve_bytes(total)) for total in gpus]
        rooms = [g.room for g in self._gpus if g.room is not None]
        #: The most any GPU can give one cell; a cell needing more is oversize.
        self._capacity = max(rooms) if rooms else None
        self._demand = dict(demands)
        self._pending = priority(demands)
        self._where: dict[Hashable, int] = {}

    @property
    def pending(self) -> list[Hashable]:
        """Keys not placed yet, in the order they are taken."""
        return list(self._pending)

    def running(self, gpu: int) -> list[Hashable]:
        return list(self._gpus[gpu].running)

    def used_bytes(self, gpu: int) -> int:
        """The estimates of the cells running on ``gpu`` (a cell that needs it alone counts as all of it)."""
        return self._gpus[gpu].used

    def _fits(self, index: int, need: int | None) -> bool:
        gpu = self._gpus[index]
        if gpu.alone or len(gpu.running) >= self.max_cells_per_gpu:
            return False
        room = gpu.room
        if need is None or room is None:
            return not gpu.running
        if need <= room:
            return True
        return not gpu.running and self._oversize(need) and room == self._capacity

    def _oversize(self, need: int) -> bool:
        return self._capacity is not None and need > self._capacity

    def _could_ever_hold(self, index: int, need: int | None) -> bool:
        gpu = self._gpus[index]
        if need is None or gpu.total is None:
            return True
        full = gpu.total - gpu.reserve
        return need <= full or (self._oversize(need) and full == self._capacity)

    def _open(self, index: int) -> bool:
        gpu = self._gpus[index]
        return not gpu.alone and len(gpu.running) < self.max_cells_per_gpu

    def place(self) -> list[tuple[Hashable, int]]:
        """The cells to start now, as ``(key, gpu index)``, best first; they count as running from now."""
        placed: list[tuple[Hashable, int]] = []
        waiting: list[Hashable] = []
        held: set[int] = set()
        for position, key in enumerate(self._pending):
            usable = [i for i in range(len(self._gpus)) if i not in held and self._open(i)]
            if not usable:
                waiting.extend(self._pending[position:])
                break
            need = self._demand[key].memory_bytes
            fitting = [i for i in usable if self._fits(i, need)]
            if fitting:
                best = min(fitting, key=lambda i: (len(self._gpus[i].running), -(self._gpus[i].room or 0), i))
                self._start(key, best, need)
                placed.append((key, best))
                continue
            waiting.append(key)
            targets = [i for i in usable if self._could_ever_hold(i, need)]
            if targets:  # hold back the GPU it waits for from the smaller cells behind it
                held.add(min(targets, key=lambda i: (len(self._gpus[i].running), self._gpus[i].used, i)))
        self._pending = waiting
        return placed

    def _start(self, key: Hashable, index: int, need: int | None) -> None:
        gpu = self._gpus[index]
        alone = need is None or gpu.room is None or need > gpu.room
        charge = (gpu.total or 0) if alone else need
        gpu.running[key] = charge
        gpu.used += charge
        if alone:
            gpu.alone.add(key)
        self._where[key] = index

    def release(self, key: Hashable) -> None:
        """``key`` ended (or did not start): its GPU's memory and place are free again."""
        index = self._where.pop(key)
        gpu = self._gpus[index]
        gpu.used -= gpu.running.pop(key)
        gpu.alone.discard(key)


# -- simulation and the makespan report ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    """One cell's time on a device, in seconds since the suite began; ``status`` as recorded (``stopped``: in
    flight when the run was interrupted)."""

    cell: str
    device: str
    start_s: float
    end_s: float
    status: str | None = None


def simulate(
    demands: Sequence[tuple[Hashable, Demand]],
    gpus: Sequence[int | None],
    max_cells_per_gpu: int = 1,
    actual_s: Mapping[Hashable, float] | None = None,
) -> list[Interval]:
    """Run the :class:`Planner` on a simulated clock: each cell takes ``actual_s[key]`` seconds (default: its
    ``duration_s``, which must then be known) from the moment it is placed; devices are named ``gpu0``, ``gpu1``..."""
    planner = Planner(demands, gpus, max_cells_per_gpu)
    seconds = dict(actual_s) if actual_s is not None else {k: d.duration_s for k, d in demands}
    clock, events, out, order = 0.0, [], [], 0
    while planner.pending or events:
        for key, gpu in planner.place():
            if seconds.get(key) is None:
                raise ValueError(f"no duration for {key!r}")
            heapq.heappush(events, (clock + float(seconds[key]), order, key, gpu, clock))
            order += 1
        if not events:  # pragma: no cover - the planner always places a cell on an idle machine
            raise RuntimeError("the planner placed nothing on idle GPUs")
        clock, _, key, gpu, start = heapq.heappop(events)
        planner.release(key)
        out.append(Interval(str(key), f"gpu{gpu}", start, clock))
    return out


def _union(spans: list[tuple[float, float]]) -> tuple[float, int]:
    """Length of the union of ``spans`` and the most of them overlapping at once."""
    busy, end, most = 0.0, -math.inf, 0
    for start, stop in sorted(spans):
        if start > end:
            busy += stop - start
            end = stop
        elif stop > end:
            busy += stop - end
            end = stop
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    level = 0
    for _, step in edges:
        level += step
        most = max(most, level)
    return busy, most


def makespan_report(
    intervals: Sequence[Interval], devices: Sequence[str], wall_s: float, lanes: int | None = None
) -> dict[str, Any]:
    """Busy and idle time per device over a suite's ``wall_s`` seconds, and the ideal ``Σ/G`` (``G = lanes``, by
    default the number of devices). Devices in ``intervals`` but not in ``devices`` are added."""
    names = list(dict.fromkeys([*devices, *(i.device for i in intervals)]))
    lanes = lanes or len(names) or 1
    per_device = []
    for name in names:
        spans = [(i.start_s, i.end_s) for i in intervals if i.device == name]
        busy, most = _union(spans)
        per_device.append(
            {
                "device": name,
                "cells": len(spans),
                "busy_s": round(busy, 3),
                "idle_s": round(max(0.0, wall_s - busy), 3),
                "cell_s": round(sum(e - s for s, e in spans), 3),
                "utilisation": round(busy / wall_s, 4) if wall_s > 0 else None,
                "max_concurrent": most,
            }
        )
    cell_s = sum(i.end_s - i.start_s for i in intervals)
    ideal = cell_s / lanes
    return {
        "wall_s": round(wall_s, 3),
        "lanes": lanes,
        "cells": len(intervals),
        "cell_s": round(cell_s, 3),
        "ideal_s": round(ideal, 3),
        "efficiency": round(ideal / wall_s, 4) if wall_s > 0 else None,
        "devices": per_device,
        "intervals": [
            {"cell": i.cell, "device": i.device, "start_s": round(i.start_s, 3), "end_s": round(i.end_s, 3),
             "status": i.status}
            for i in intervals
        ],
    }
