"""Selecting each hyperparameter search's setting on validation data (:mod:`harness.planning.search` plans them).

A search is the trial cells of one (model, task, strategy) (``config.trial.search``). Its *settings* are the distinct
``config.trial.values``; a setting's score is the mean, over its seeds that ended ``ok``, of its validation metric
(``validation_metrics``): the search's ``metric``, else the task's primary metric. The selected setting has the
highest score. Ties (equal means) go to the setting with more seeds scored, then to the one planned first
(``config.trial.index``: grid order, or draw order of a random search). Test metrics are never read here.

The report shows the selected setting's cells as the strategy's result, and the search's cost beside it
(:class:`harness.report.groups.SearchCost`: trials, cells and the training time of all of them). A setting without
any scored seed cannot be selected; when none is scored, the search's first planned setting stands for it in the
tables (its failures show there). ``harness report --search`` lists every setting.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from harness.api.cells import format_value
from harness.report import stats
from harness.report.groups import Group, Row, SearchCost, number

#: The tie-breaking rule, for report footers.
TIE_RULE = ("highest mean validation metric over the seeds that finished; ties go to more seeds scored, then to the "
            "setting planned first")  # fmt: skip


@dataclass(frozen=True)
class Setting:
    """One setting of a search: its values and its cells' validation scores."""

    values: Mapping[str, Any]
    index: int
    metric: str | None
    #: seed -> the validation metric of the seeds that ended ok with it.
    validation: Mapping[int, float]
    failed: int
    train_s: float
    rows: tuple[Row, ...]

    @property
    def score(self) -> stats.Describe | None:
        return stats.describe([self.validation[s] for s in sorted(self.validation)])

    def to_json(self) -> dict[str, Any]:
        score = self.score
        return {
            "values": dict(self.values), "index": self.index, "metric": self.metric,
            "validation": score.to_json() if score else None,
            "seeds": {str(k): v for k, v in sorted(self.validation.items())}, "failed": self.failed,
            "train_s": self.train_s,
        }


@dataclass(frozen=True)
class Search:
    """One search: its settings in planned order and the selected one (``None`` when no setting has a score)."""

    model: str
    task: str
    strategy: str
    metric: str | None
    sampler: str
    planned: int
    settings: tuple[Setting, ...]
    selected: int | None
    cost: SearchCost

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.model, self.task, self.strategy)

    @property
    def chosen(self) -> Setting | None:
        return self.settings[self.selected] if self.selected is not None else None

    def to_json(self) -> dict[str, Any]:
        chosen = self.chosen
        return {
            "model": self.model, "task": self.task, "strategy": self.strategy, "metric": self.metric,
            "sampler": self.sampler, "planned": self.planned, "rule": TIE_RULE,
            "selected": dict(chosen.values) if chosen else None,
            "settings": [s.to_json() for s in self.settings], "cost": self.cost.to_json(),
        }


def trial_of(row: Row) -> Mapping[str, Any] | None:
    trial = (row.get("config") or {}).get("trial")
    return trial if isinstance(trial, Mapping) else None


def select(rows: Sequence[Row]) -> tuple[list[Row], list[Search]]:
    """The rows the tables show (every row outside a search, and each search's selected setting's rows, in their
    order) and the searches."""
    by_search: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        if trial_of(row) is not None:
            by_search.setdefault((str(row["model"]), str(row["task"]), str(row["strategy"])), []).append(row)
    searches = {key: _search(key, members) for key, members in by_search.items()}
    shown_ids = set()
    for search in searches.values():
        stand_in = search.chosen or (search.settings[0] if search.settings else None)
        if stand_in is not None:
            shown_ids.update(id(r) for r in stand_in.rows)
    kept = [r for r in rows if trial_of(r) is None or id(r) in shown_ids]
    return kept, list(searches.values())


def annotate(groups: Sequence[Group], searches: Sequence[Search]) -> list[Group]:
    """``groups`` with each search's cost attached to the group of its selected setting."""
    by_key = {s.key: s for s in searches}
    return [replace(g, search=by_key[g.key].cost) if g.key in by_key else g for g in groups]


def _search(key: tuple[str, str, str], rows: list[Row]) -> Search:
    settings: dict[str, list[Row]] = {}
    for row in rows:
        values = trial_of(row)["values"]  # type: ignore[index]
        settings.setdefault(json.dumps(values, sort_keys=True, default=str), []).append(row)
    first = trial_of(rows[0]) or {}
    metric = first.get("metric") or next((r.get("primary_metric") for r in rows if r.get("primary_metric")), None)
    built = sorted((_setting(members, metric) for members in settings.values()), key=lambda s: s.index)
    ranked = [(i, s.score) for i, s in enumerate(built) if s.score is not None]
    selected = None
    if ranked:
        selected = min(ranked, key=lambda item: (-item[1].mean, -item[1].n, built[item[0]].index))[0]  # type: ignore[union-attr]
    gpu_s = [(_train_s(r) * _gpus(r)) for r in rows if _gpus(r)]
    chosen = built[selected] if selected is not None else None
    cost = SearchCost(
        trials=len(built), planned=int(first.get("trials") or len(built)), cells=len(rows),
        train_s=sum(_train_s(r) for r in rows), gpu_hours=sum(gpu_s) / 3600 if gpu_s else None,
        values=dict(chosen.values) if chosen else {}, metric=metric,
    )
    return Search(
        model=key[0], task=key[1], strategy=key[2], metric=metric, sampler=str(first.get("sampler") or "grid"),
        planned=cost.planned, settings=tuple(built), selected=selected, cost=cost,
    )


def _setting(rows: list[Row], metric: str | None) -> Setting:
    trial = trial_of(rows[0]) or {}
    validation: dict[int, float] = {}
    for row in rows:
        value = number((row.get("validation_metrics") or {}).get(metric)) if metric else None
        if row["status"] == "ok" and value is not None:
            validation[int(row["seed"])] = value
    return Setting(
        values=dict(trial.get("values") or {}), index=int(trial.get("index") or 0), metric=metric,
        validation=dict(sorted(validation.items())), failed=sum(r["status"] == "failed" for r in rows),
        train_s=sum(_train_s(r) for r in rows), rows=tuple(rows),
    )


def _train_s(row: Row) -> float:
    value = number((row.get("timing") or {}).get("train_s"))
    return value if value is not None and not math.isnan(value) else 0.0


def _gpus(row: Row) -> int:
    """GPUs the cell ran on (0 on a CPU): one per ``cuda`` device in its ``env.device`` (``cuda:0,cuda:1``)."""
    device = str((row.get("env") or {}).get("device") or "")
    return sum(part.strip().startswith("cuda") for part in device.split(","))


# -- the --search view -------------------------------------------------------------------------------------------


def search_table(search: Search) -> tuple[list[str], list[list[str]]]:
    """Headers and lines of one search's settings: its values, the validation metric (mean ± std, n seeds), failed
    seeds and training seconds; ``*`` marks the selected setting."""
    keys = list(dict.fromkeys(k for s in search.settings for k in s.values))
    headers = ["", "#", *keys, f"validation {search.metric or 'metric'}", "n", "failed", "train s"]
    body = []
    for position, setting in enumerate(search.settings):
        score = setting.score
        shown = "-" if score is None else f"{score.mean:.4g}" + (f" ± {score.std:.2g}" if score.n > 1 else "")
        body.append([
            "*" if position == search.selected else "", str(setting.index),
            *(format_value(setting.values[k]) if k in setting.values else "-" for k in keys),
            shown, str(score.n if score else 0), str(setting.failed), f"{setting.train_s:.4g}",
        ])
    return headers, body


def render_searches(searches: Sequence[Search], fmt: str) -> str:
    """``harness report --search``: one table per search (``table`` or ``markdown``), or their JSON (``json``)."""
    if fmt == "json":
        return json.dumps({"rule": TIE_RULE, "searches": [s.to_json() for s in searches]}, indent=2)
    from tabulate import tabulate

    if not searches:
        return "no hyperparameter searches in these records"
    parts = []
    for search in searches:
        headers, body = search_table(search)
        cost = search.cost
        gpu = f", {cost.gpu_hours:.3g} GPU h" if cost.gpu_hours is not None else ""
        title = (f"{search.strategy} on {search.task} ({search.model}): {search.sampler} search, {cost.trials} of "
                 f"{cost.planned} trials with records, {cost.cells} cells, {cost.train_s:.4g} s training{gpu}")  # fmt: skip
        heading = f"### {title}" if fmt == "markdown" else title
        parts.append(heading + "\n\n" + tabulate(body, headers, tablefmt="github" if fmt == "markdown" else "simple"))
    parts.append(f"* selected: {TIE_RULE}. Test metrics take no part in the choice.")
    return "\n\n".join(parts)
