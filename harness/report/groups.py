"""Groups: the rows of one (model, task, strategy) aggregated over seeds, with their cost figures.

:mod:`harness.report.analysis` pivots and compares them; :mod:`harness.report.search` reduces a search's trials to
the group of the selected setting, with the search's cost (:class:`SearchCost`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.report import stats

Row = Mapping[str, Any]
Key = tuple[str, str, str]  # (model, task, strategy)
DIMENSIONS = ("task", "strategy", "model")
MIB = 2**20


def number(value: Any) -> float | None:
    """A finite number as a float; ``None`` for anything else (booleans, text, NaN and infinities: a diverged run's
    NaN metric is no value to average or rank)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _peak_memory_mib(row: Row, kind: str) -> float | None:
    memory = row.get("memory") or {}
    value = number(memory.get("gpu_peak_allocated_bytes" if kind == "GPU" else "peak_rss_bytes"))
    return None if value is None else value / MIB


#: Cost figures aggregated per group: name -> (label, getter(row, memory_kind)).
COST_FIGURES: dict[str, tuple[str, Callable[[Row, str], float | None]]] = {
    "trainable": ("trainable parameters", lambda r, _: number((r.get("params") or {}).get("trainable"))),
    "trainable_pct": ("trainable %", lambda r, _: number((r.get("params") or {}).get("trainable_pct"))),
    "stored_bytes": ("stored bytes", lambda r, _: number((r.get("params") or {}).get("stored_bytes"))),
    "peak_memory_mib": ("peak memory MiB", _peak_memory_mib),
    "train_s": ("train s", lambda r, _: number((r.get("timing") or {}).get("train_s"))),
    "train_samples_per_s": ("train samples/s", lambda r, _: number((r.get("timing") or {}).get("train_samples_per_s"))),
    "eval_samples_per_s": ("eval samples/s", lambda r, _: number((r.get("timing") or {}).get("eval_samples_per_s"))),
    "total_s": ("cell total s", lambda r, _: number((r.get("timing") or {}).get("total_s"))),
    "train_flops": ("training FLOPs", lambda r, _: number((r.get("compute") or {}).get("train_flops"))),
    "mfu": ("MFU", lambda r, _: number((r.get("compute") or {}).get("mfu"))),
    "energy_j": ("GPU energy J", lambda r, _: number((r.get("compute") or {}).get("energy_j"))),
}


@dataclass(frozen=True)
class SearchCost:
    """The hyperparameter search behind a group: what selected it and what the search cost.

    :param trials: settings of the search with at least one record; ``planned``: settings the suite planned.
    :param cells: trial cells (all seeds) with a record; ``train_s``: their training time summed (failed cells
        included where they measured it): the search's cost, beside the selected setting's own ``train_s``.
    :param gpu_hours: ``train_s`` times the GPUs of each cell, in hours; ``None`` when no trial ran on a GPU.
    :param values: the selected setting; ``metric``: the validation metric that selected it.
    """

    trials: int
    planned: int
    cells: int
    train_s: float
    gpu_hours: float | None
    values: Mapping[str, Any]
    metric: str | None

    def to_json(self) -> dict[str, Any]:
        return {"trials": self.trials, "planned": self.planned, "cells": self.cells, "train_s": self.train_s,
                "gpu_hours": self.gpu_hours, "values": dict(self.values), "metric": self.metric}


@dataclass(frozen=True)
class Group:
    """One (model, task, strategy) over its seeds.

    :param values: seed -> metric value, for the ``ok`` seeds that reported the metric.
    :param failed: seed -> error of failed seeds; ``skipped``: seed -> reason.
    :param memory_kind: ``GPU`` when every ok seed has a GPU peak (``peak_memory_mib`` is then torch's peak allocated
        memory), else ``RSS`` (peak resident set size of the cell process).
    """

    model: str
    task: str
    strategy: str
    metric: str | None
    quality: stats.Describe | None
    values: Mapping[int, float] = field(default_factory=dict)
    failed: Mapping[int, str] = field(default_factory=dict)
    skipped: Mapping[int, str] = field(default_factory=dict)
    cost: Mapping[str, stats.Describe] = field(default_factory=dict)
    memory_kind: str | None = None
    pending: int = 0
    #: The hyperparameter search whose selected setting this group is (:mod:`harness.report.search`).
    search: SearchCost | None = None

    @property
    def key(self) -> Key:
        return (self.model, self.task, self.strategy)

    def value(self, dimension: str) -> str:
        return {"task": self.task, "strategy": self.strategy, "model": self.model}[dimension]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "task": self.task, "strategy": self.strategy, "metric": self.metric,
            "quality": self.quality.to_json() if self.quality else None,
            "seeds": {str(k): v for k, v in sorted(self.values.items())},
            "failed": {str(k): v for k, v in sorted(self.failed.items())},
            "skipped": {str(k): v for k, v in sorted(self.skipped.items())},
            "cost": {name: d.to_json() for name, d in self.cost.items()},
            "memory_kind": self.memory_kind,
            "search": self.search.to_json() if self.search else None,
        }


def group_rows(rows: Sequence[Row], metric: str | None = None) -> list[Group]:
    """Groups per (model, task, strategy), in the order each first appears in ``rows``; ``metric`` replaces every
    task's primary metric."""
    members: dict[Key, list[Row]] = {}
    for row in rows:
        members.setdefault((str(row["model"]), str(row["task"]), str(row["strategy"])), []).append(row)
    return [_group(key, group, metric) for key, group in members.items()]


def _group(key: Key, rows: list[Row], chosen: str | None) -> Group:
    ok = [r for r in rows if r["status"] == "ok"]
    metric = chosen or next((r["primary_metric"] for r in ok + rows if r.get("primary_metric")), None)
    values: dict[int, float] = {}
    for row in ok:
        value = number((row.get("metrics") or {}).get(metric)) if metric else None
        if value is not None:
            values[int(row["seed"])] = value
    memory_kind = "GPU" if ok and all(_peak_memory_mib(r, "GPU") is not None for r in ok) else "RSS"
    cost = {}
    for name, (_, get) in COST_FIGURES.items():
        described = stats.describe([v for v in (get(r, memory_kind) for r in ok) if v is not None])
        if described is not None:
            cost[name] = described
    return Group(
        model=key[0], task=key[1], strategy=key[2], metric=metric,
        quality=stats.describe([values[s] for s in sorted(values)]), values=dict(sorted(values.items())),
        failed={int(r["seed"]): str(r.get("error") or "no error recorded") for r in rows if r["status"] == "failed"},
        skipped={int(r["seed"]): str(r.get("error") or "no reason recorded") for r in rows if r["status"] == "skipped"},
        cost=cost, memory_kind=memory_kind if "peak_memory_mib" in cost else None,
    )
