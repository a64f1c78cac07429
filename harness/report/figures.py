"""The plots of a :class:`~harness.report.reporting.Report` (``harness report --plots DIR``, the HTML report): its groups
as :class:`harness.report.plots.Point` and its cells' training step times, handed to :func:`harness.report.plots.write_plots`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.report.plots import Point, write_plots

if TYPE_CHECKING:  # pragma: no cover
    from harness.report.reporting import Report


def plot_points(report: Report) -> list[Point]:
    """One point per group with a quality value: its mean (± std) and mean cost figures over ok seeds."""
    points = []
    for group in report.groups:
        if group.quality is None or not group.metric:
            continue
        cost = group.cost
        mean = {name: described.mean for name, described in cost.items()}.get
        points.append(
            Point(
                task=group.task, model=group.model, strategy=group.strategy, metric=group.metric,
                quality=group.quality.mean, quality_std=group.quality.std if group.quality.n > 1 else None,
                trainable=mean("trainable"), peak_mib=mean("peak_memory_mib"), memory_kind=group.memory_kind,
                train_s=mean("train_s"),
            )
        )
    return points


def step_times(report: Report) -> dict[tuple[str, str, str], list[float]]:
    """(task, model, strategy) -> the measured seconds per training step of its ok cells (all seeds pooled), the
    warm-up steps the cell excluded from its statistics left out here too (steps.json ``warmup_steps_excluded``)."""
    out: dict[tuple[str, str, str], list[float]] = {}
    for row in report.table_rows:  # a search's selected setting, not every trial
        directory = report.cell_dir(row)
        if row["status"] != "ok" or directory is None:
            continue
        try:
            steps = json.loads((directory / "steps.json").read_text("utf-8"))
            times = [float(t) for t in steps.get("step_s") or []][int(steps.get("warmup_steps_excluded") or 0):]
        except (OSError, ValueError, TypeError, AttributeError):
            continue
        if times:
            out.setdefault((str(row["task"]), str(row["model"]), str(row["strategy"])), []).extend(times)
    return out


def write_report_plots(report: Report, directory: Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write every plot of ``report`` into ``directory``; the written files."""
    from harness.report.searchplots import write_search_plots

    directory.mkdir(parents=True, exist_ok=True)
    written = write_plots(plot_points(report), directory, step_times=step_times(report), formats=formats)
    return sorted(written + write_search_plots(report.searches, directory, formats))
