"""``harness compare A B``: two results directories (two library versions, two machines), cell by cell.

Cells are matched by (model, task, strategy); each side is aggregated over its ok seeds (:func:`group_rows`). For
every pair with values on both sides: the means, Δ = B − A, and a test of the difference — paired approximate
randomisation over the (seed, test item) units both ran when the task gives per-item statistics (the same test
items on both sides), else Welch's t-test over the seeds — with Holm's correction across all pairs. Cost figures
are compared as ratios B / A (train time, throughput, peak memory). Cells present on one side only, and cells whose
resolved configuration differs (other than absolute paths), are listed, as are the environment fields that differ.
"""

from __future__ import annotations

import csv
import io
import json
import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.report import stats
from harness.report.analysis import ItemSource, compare_groups, rows_by_group
from harness.report.groups import Group, Key, Row, group_rows
from harness.report.reporting import environment_summary
from harness.report.search import annotate, select
from harness.report.tables import format_delta, format_mean_std, format_value

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.components import Task
    from harness.report.rows import Rows

FORMATS = ("table", "markdown", "csv", "json")
#: Cost figures compared as a ratio B / A.
RATIOS = ("train_s", "train_samples_per_s", "eval_samples_per_s", "peak_memory_mib")


@dataclass(frozen=True)
class Pair:
    """One (model, task, strategy) on both sides."""

    key: Key
    a: Group | None
    b: Group | None
    test: stats.TestResult | None = None
    p_holm: float | None = None
    #: Configuration keys whose values differ between the two sides (paths left out).
    config_differences: tuple[str, ...] = ()

    @property
    def delta(self) -> float | None:
        if self.a is None or self.b is None or self.a.quality is None or self.b.quality is None:
            return None
        return self.b.quality.mean - self.a.quality.mean

    def ratio(self, figure: str) -> float | None:
        if self.a is None or self.b is None or figure not in self.a.cost or figure not in self.b.cost:
            return None
        denominator = self.a.cost[figure].mean
        return self.b.cost[figure].mean / denominator if denominator else None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.key[0], "task": self.key[1], "strategy": self.key[2],
            "a": self.a.to_json() if self.a else None, "b": self.b.to_json() if self.b else None,
            "delta": self.delta, "method": self.test.method if self.test else None,
            "p_value": self.test.p_value if self.test else None, "p_holm": self.p_holm,
            "note": self.test.note if self.test else None,
            "ratios": {figure: self.ratio(figure) for figure in RATIOS},
            "config_differences": list(self.config_differences),
        }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def _config_differences(rows_a: Sequence[Row], rows_b: Sequence[Row]) -> tuple[str, ...]:
    """Keys of the resolved configuration that differ, ignoring the seed and file system paths (two machines)."""
    if not rows_a or not rows_b:
        return ()
    a = _flatten(rows_a[0].get("config") or {})
    b = _flatten(rows_b[0].get("config") or {})

    def comparable(key: str, value: Any) -> bool:  # absolute paths differ between machines; hub ids are relative
        return key != "seed" and not (isinstance(value, str) and (os.path.isabs(value) or value.startswith("~")))

    keys = sorted(k for k in set(a) | set(b) if comparable(k, a.get(k)) and comparable(k, b.get(k)))
    return tuple(k for k in keys if a.get(k) != b.get(k))


def compare(
    rows_a: Rows,
    rows_b: Rows,
    *,
    metric: str | None = None,
    task_lookup: Callable[[str], Task | None] | None = None,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[Pair]:
    """The pairs of two result sets, in A's order then B's cells that A lacks, tested and Holm-corrected."""
    dirs_a: Mapping[str, Path] = getattr(rows_a, "dirs", {})
    dirs_b: Mapping[str, Path] = getattr(rows_b, "dirs", {})
    shown_a, searches_a = select(rows_a)  # a search is compared by its selected setting (harness.report.search)
    shown_b, searches_b = select(rows_b)
    groups_a = {g.key: g for g in annotate(group_rows(shown_a, metric), searches_a)}
    groups_b = {g.key: g for g in annotate(group_rows(shown_b, metric), searches_b)}
    by_a, by_b = rows_by_group(shown_a), rows_by_group(shown_b)
    items_a = items_b = None
    if task_lookup is not None:
        items_a = ItemSource(task_lookup, lambda row: dirs_a.get(str(row.get("key"))))
        items_b = ItemSource(task_lookup, lambda row: dirs_b.get(str(row.get("key"))))
    pairs = []
    for key in dict.fromkeys([*groups_a, *groups_b]):
        a, b = groups_a.get(key), groups_b.get(key)
        test = None
        if a is not None and b is not None and a.quality is not None and b.quality is not None:
            if a.metric != b.metric:
                test = stats.TestResult("none", None, None, 0, f"metrics differ: {a.metric} vs {b.metric}")
            else:
                test = compare_groups(b, a, by_b.get(key, ()), by_a.get(key, ()), items_b, items_a,
                                      resamples=resamples, seed=seed)
        differences = _config_differences(by_a.get(key, []), by_b.get(key, []))
        pairs.append(Pair(key, a, b, test, None, differences))
    adjusted = iter(stats.holm([p.test.p_value if p.test else None for p in pairs]))
    return [Pair(p.key, p.a, p.b, p.test, next(adjusted), p.config_differences) for p in pairs]


def environment_differences(rows_a: Sequence[Row], rows_b: Sequence[Row]) -> list[tuple[str, str, str]]:
    """(field, A's value, B's value) for environment fields that differ between the two sides' ok cells."""
    a, b = dict(environment_summary(rows_a)), dict(environment_summary(rows_b))
    return [(name, a.get(name, "-"), b.get(name, "-")) for name in dict.fromkeys([*a, *b]) if a.get(name) != b.get(name)]


def _quality(group: Group | None) -> str:
    if group is None:
        return "absent"
    if group.quality is None:
        return f"{len(group.failed)} failed" if group.failed else "skipped" if group.skipped else "no value"
    q = group.quality
    return format_mean_std(q.mean, q.std) if q.n > 1 else format_value(q.mean)


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}" if value >= 0.001 else "<0.001"


HEADERS = ["strategy", "A", "B", "n A/B", "Δ B−A", "p Holm", "time B/A", "mem B/A"]


def _only_skipped(pair: Pair) -> bool:
    groups = [g for g in (pair.a, pair.b) if g is not None]
    return all(g.quality is None and not g.failed for g in groups)


def sections(pairs: Sequence[Pair], alpha: float) -> list[tuple[str, list[list[str]]]]:
    """Per (model, task) a heading and one line per strategy (see :data:`HEADERS`); pairs skipped on both sides
    are left out (:func:`render` counts them)."""
    out: dict[tuple[str, str], list[list[str]]] = {}
    metrics: dict[tuple[str, str], str] = {}
    for pair in pairs:
        if _only_skipped(pair):
            continue
        group = pair.a or pair.b
        assert group is not None
        section = (pair.key[0], pair.key[1])
        if group.metric:
            metrics.setdefault(section, group.metric)
        shown_delta = "-"
        if pair.delta is not None and pair.a and pair.a.quality and pair.b and pair.b.quality:
            shown_delta = format_delta(pair.delta, max(abs(pair.a.quality.mean), abs(pair.b.quality.mean)))
            if pair.p_holm is not None and pair.p_holm < alpha:
                shown_delta += " *"
        ratios = [pair.ratio("train_s"), pair.ratio("peak_memory_mib")]
        out.setdefault(section, []).append([
            pair.key[2], _quality(pair.a), _quality(pair.b), f"{_n(pair.a)}/{_n(pair.b)}", shown_delta,
            _p(pair.p_holm), *("-" if r is None else f"{r:.3g}×" for r in ratios),
        ])
    return [(f"{model} · {task}" + (f" ({metrics[(model, task)]})" if (model, task) in metrics else ""), body)
            for (model, task), body in out.items()]


def _n(group: Group | None) -> str:
    return "-" if group is None else str(len(group.values))


def render(pairs: Sequence[Pair], fmt: str, *, a: str, b: str, rows_a: Sequence[Row], rows_b: Sequence[Row],
           alpha: float, resamples: int) -> str:
    """The comparison as ``table`` (terminal), ``markdown``, ``csv`` (one line per pair) or ``json``."""
    if fmt not in FORMATS:
        raise HarnessError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    env = environment_differences(rows_a, rows_b)
    if fmt == "json":
        return json.dumps({
            "a": a, "b": b, "alpha": alpha, "pairs": [p.to_json() for p in pairs],
            "environment_differences": [{"field": f, "a": x, "b": y} for f, x, y in env],
        }, indent=2, default=str)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["model", "task", "strategy", "metric", "mean_a", "n_a", "mean_b", "n_b", "delta",
                         "p_value", "p_holm", "method", *(f"ratio_{r}" for r in RATIOS)])
        for pair in pairs:
            group = pair.a or pair.b
            qa = pair.a.quality if pair.a else None
            qb = pair.b.quality if pair.b else None
            writer.writerow([
                *pair.key, group.metric if group else "", qa.mean if qa else "", qa.n if qa else "",
                qb.mean if qb else "", qb.n if qb else "", "" if pair.delta is None else pair.delta,
                "" if not pair.test or pair.test.p_value is None else pair.test.p_value,
                "" if pair.p_holm is None else pair.p_holm, pair.test.method if pair.test else "",
                *("" if pair.ratio(r) is None else pair.ratio(r) for r in RATIOS),
            ])
        return buffer.getvalue()
    from tabulate import tabulate

    tablefmt = "github" if fmt == "markdown" else "simple"
    lines = [f"A: {a}", f"B: {b}", ""]
    for heading, body in sections(pairs, alpha):
        lines += [f"## {heading}" if fmt == "markdown" else heading, ""]
        lines += [tabulate(body, HEADERS, tablefmt=tablefmt, disable_numparse=True), ""]
    skipped = sum(1 for p in pairs if _only_skipped(p))
    if skipped:
        lines.append(f"{skipped} cells skipped on both sides are not shown.")
    lines.append(
        f"Δ: difference of the means over ok seeds; * significant at α = {alpha:g} after Holm's correction across "
        f"all {sum(1 for p in pairs if p.test and p.test.p_value is not None)} tested pairs "
        f"({stats.RANDOMIZATION_METHOD.format(resamples=resamples)} over (seed, test item) pairs where per-item "
        "scores exist, else Welch's t-test over seeds). Ratios: B's mean over A's."
    )
    for pair in pairs:
        if pair.config_differences:
            lines.append(f"configuration differs for {'/'.join(pair.key)}: {', '.join(pair.config_differences)}")
    if env:
        lines.append("environment differences: " + "; ".join(f"{f}: {x} → {y}" for f, x, y in env))
    if fmt == "table":
        lines = [line if len(line) <= 100 or "──" in line or "--" in line else textwrap.fill(line, 100)
                 for line in lines]
    return "\n".join(lines) + "\n"

