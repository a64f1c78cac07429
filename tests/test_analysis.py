"""harness report's analysis: seeds aggregated with confidence intervals, pivots, significance tests against the
best and the baseline (paired randomisation over saved predictions, else Welch over seeds), Holm correction,
rows and columns left out, the environment summary, step times and the report command's new options."""

from __future__ import annotations

import io
import json
import math
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from harness_plugins.reporters import CsvReporter, JsonReporter, TableReporter
from scipy import stats as sps

from harness.api.budget import Budget
from harness.api.cells import Cell
from harness.api.components import Reporter, Task
from harness.api.hookspecs import hookimpl
from harness.cli import cli
from harness.errors import HarnessError
from harness.report import stats
from harness.report.figures import plot_points, step_times
from harness.report.groups import group_rows
from harness.report.reporting import Report, ReportOptions, build_report, environment_summary
from harness.report.rows import load_rows
from harness.results.records import Memory, Params, Record, Timing
from harness.results.store import PREDICTIONS, STEPS, ResultStore

MIB = 2**20
T_975_2 = 4.302652729749463  # Student t quantile, 0.975, 2 degrees of freedom
SKIP = "strategy 'zero_shot' needs a decoder"


class CorrectnessTask(Task):
    """A task whose saved prediction rows carry ``correct`` (0/1): accuracy as ``[correct, 1]`` per item."""

    name = "correctness"
    description = "test task: accuracy from per-item correct flags"

    def setup(self, options: Mapping[str, Any], ctx: Any) -> Any:  # pragma: no cover - never run here
        raise NotImplementedError

    def item_statistics(
        self, predictions: Sequence[Mapping[str, Any]], metric: str, options: Mapping[str, Any]
    ) -> stats.ItemStats | None:
        if metric != "accuracy":
            return None
        return stats.ItemStats(
            ids=tuple(str(row["id"]) for row in predictions),
            values=[[float(row["correct"]), 1.0] for row in predictions],
            metric=lambda sums: float(sums[0] / sums[1]),
        )


TASK = CorrectnessTask()


def lookup(name: str) -> Task | None:
    return TASK if name == TASK.name else None


# -- writing results -------------------------------------------------------------------------------------------


def make_cell(model: str, task: str, strategy: str, seed: int) -> Cell:
    return Cell(
        suite="s", task=task, task_type=TASK.name, task_options={}, strategy=strategy, strategy_type=strategy,
        strategy_options={}, model=model, model_source="tiny", model_options={}, model_family="encoder", seed=seed,
        budget=Budget(),
    )


def write_cell(
    root: Path,
    model: str,
    task: str,
    strategy: str,
    seed: int,
    *,
    correct: Sequence[int] | None = None,
    value: float | None = None,
    status: str = "ok",
    env: Mapping[str, Any] | None = None,
    steps: Mapping[str, Any] | None = None,
) -> Cell:
    """One cell's record in ``root`` (a results directory): its accuracy is ``value``, or the share of ``correct``,
    whose flags are then saved as the cell's predictions."""
    cell = make_cell(model, task, strategy, seed)
    store = ResultStore(root)
    if correct is not None:
        value = sum(correct) / len(correct)
        directory = store.cell_dir(cell)
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / PREDICTIONS, "w", encoding="utf-8") as fh:
            for i, flag in enumerate(correct):
                fh.write(json.dumps({"id": f"item-{i}", "input": "x", "prediction": flag, "reference": 1,
                                     "correct": flag}) + "\n")
    ok = status == "ok"
    store.write(cell, Record(
        key=cell.key, suite=cell.suite, cell_id=cell.cell_id, task=task, strategy=strategy, model=model, seed=seed,
        status=status, error=None if ok else "RuntimeError: boom",
        metrics={"accuracy": value, "loss": 1.0 - value} if ok and value is not None else {},
        primary_metric="accuracy", predictions=PREDICTIONS if correct is not None else None,
        params=Params(total=1000, trainable=10 if strategy != "full" else 1000) if ok else Params(),
        timing=Timing(train_s=10.0 + seed) if ok else Timing(), memory=Memory(peak_rss_bytes=100 * MIB * seed),
        config=cell.config(), env=dict(env or {}),
    ))
    if steps is not None:
        (store.cell_dir(cell) / STEPS).write_text(json.dumps(steps), encoding="utf-8")
    return cell


def write_values(root: Path, spec: Mapping[tuple[str, str, str], Sequence[float]]) -> Path:
    """Cells with the given accuracy per seed (seeds 1, 2, ...), without predictions."""
    for (model, task, strategy), values in spec.items():
        for seed, value in enumerate(values, start=1):
            write_cell(root, model, task, strategy, seed, value=value)
    return root


def rows_of(spec: Mapping[tuple[str, str, str], Sequence[float | str]]) -> list[dict[str, Any]]:
    """In-memory rows: per (model, task, strategy) one value per seed, or ``"skipped"``/``"failed"``."""
    rows = []
    for (model, task, strategy), values in spec.items():
        for seed, value in enumerate(values, start=1):
            status = value if isinstance(value, str) else "ok"
            rows.append(Record(
                key=f"{model}/{task}/{strategy}/{seed}", suite="s", cell_id="c", task=task, strategy=strategy,
                model=model, seed=seed, status=status, error={"skipped": SKIP, "failed": "boom"}.get(status),
                metrics={"accuracy": value} if status == "ok" else {},
                primary_metric="accuracy" if status != "skipped" else None,
            ).to_json())
    return rows


def options(**kwargs: Any) -> ReportOptions:
    return ReportOptions(resamples=kwargs.pop("resamples", 1000), **kwargs)


def only_table(report: Report):
    (table,) = report.tables
    return table


# -- aggregation -----------------------------------------------------------------------------------------------


def test_three_seeds_give_a_student_t_interval():
    (group,) = group_rows(rows_of({("m", "sst2", "full"): [0.80, 0.85, 0.90]}))
    quality = group.quality
    assert (quality.mean, quality.std, quality.n) == (pytest.approx(0.85), pytest.approx(0.05), 3)
    half = T_975_2 * 0.05 / math.sqrt(3)
    assert half == pytest.approx(float(sps.t.ppf(0.975, 2)) * 0.05 / math.sqrt(3))
    assert quality.ci_low == pytest.approx(0.85 - half) and quality.ci_high == pytest.approx(0.85 + half)


def test_metric_option_replaces_the_primary_metric():
    rows = rows_of({("m", "sst2", "full"): [0.8, 0.9]})
    for row in rows:
        row["metrics"]["loss"] = 1 - row["metrics"]["accuracy"]
    (group,) = group_rows(rows, "loss")
    assert group.metric == "loss" and group.quality.mean == pytest.approx(0.15)
    report = build_report(rows, options(metric="loss"))
    assert only_table(report).label("task", "sst2") == "sst2 (loss)"


# -- significance ----------------------------------------------------------------------------------------------


def test_identical_predictions_tie_for_best_and_test_equal_to_the_baseline(tmp_path):
    flags = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1]
    for strategy in ("full", "lora"):
        for seed in (1, 2):
            write_cell(tmp_path, "m", "sst2", strategy, seed, correct=flags)
    report = build_report(load_rows(tmp_path), options(), task_lookup=lookup)
    table = only_table(report)
    assert table.best == {("sst2", "full"), ("sst2", "lora")} and table.vs_best == {}
    comparison = table.vs_baseline[("sst2", "lora")]
    assert comparison.against == ("sst2", "full") and comparison.delta == 0.0
    assert comparison.test.p_value == 1.0 and comparison.p_holm == 1.0
    assert comparison.test.method == stats.RANDOMIZATION_METHOD.format(resamples=1000)


def test_one_differing_item_is_not_significantly_worse(tmp_path):
    flags = [1] * 10
    for seed in (1, 2):
        write_cell(tmp_path, "m", "sst2", "full", seed, correct=flags)
        write_cell(tmp_path, "m", "sst2", "lora", seed, correct=[0, *flags[1:]] if seed == 1 else flags)
    report = build_report(load_rows(tmp_path), options(), task_lookup=lookup)
    table = only_table(report)
    assert table.best == {("sst2", "full")}
    comparison = table.vs_best[("sst2", "lora")]
    # Every resample swaps the one differing (seed, item) unit or not: |Δ| is always the observed one.
    assert comparison.test.p_value == 1.0 and comparison.p_holm == 1.0
    assert comparison.test.n == 20 and comparison.test.delta == pytest.approx(-0.05)  # pooled (seed, item) units
    assert "randomisation" in comparison.test.method
    assert table.not_worse(("sst2", "lora")) and not table.not_worse(("sst2", "full"))
    text = TableReporter().render(report)
    assert "1.000 ± 0.000 *" in text and "0.9500 ± 0.0707 †" in text


def test_a_large_gap_is_significant_with_paired_items(tmp_path):
    for seed in (1, 2, 3):
        write_cell(tmp_path, "m", "sst2", "x", seed, correct=[1] * 180 + [0] * 20)
        write_cell(tmp_path, "m", "sst2", "y", seed, correct=[1] * 60 + [0] * 140)
    report = build_report(load_rows(tmp_path), options(resamples=2000), task_lookup=lookup)
    table = only_table(report)
    assert table.best == {("sst2", "x")} and table.baseline is None  # no `full`: no baseline
    comparison = table.vs_best[("sst2", "y")]
    assert comparison.test.method == stats.RANDOMIZATION_METHOD.format(resamples=2000)
    assert comparison.test.p_value == pytest.approx(1 / 2001)  # no resample reaches the observed gap
    assert comparison.test.p_value < 0.001 and comparison.p_holm < 0.001
    assert comparison.test.n == 600 and comparison.delta == pytest.approx(-0.6)
    assert not table.not_worse(("sst2", "y"))
    assert "†" not in TableReporter().render(report).split("Mean ±")[0]  # no mark in the tables


def test_without_item_statistics_seeds_are_compared_with_welch(tmp_path):
    spec = {("m", "sst2", "x"): [0.90, 0.92, 0.91], ("m", "sst2", "y"): [0.80, 0.85, 0.83]}
    expected = sps.ttest_ind(spec[("m", "sst2", "y")], spec[("m", "sst2", "x")], equal_var=False).pvalue
    # No task lookup; then a lookup whose task is not installed; then cells without saved predictions.
    for report in (
        build_report(rows_of(spec), options()),
        build_report(load_rows(write_values(tmp_path / "a", spec)), options(), task_lookup=lambda name: None),
        build_report(load_rows(write_values(tmp_path / "b", spec)), options(), task_lookup=lookup),
    ):
        comparison = only_table(report).vs_best[("sst2", "y")]
        assert "Welch" in comparison.test.method and comparison.test.method == stats.WELCH_METHOD
        assert comparison.test.p_value == pytest.approx(expected) and comparison.p_holm == pytest.approx(expected)
        assert comparison.delta == pytest.approx(-0.0833333333)


def test_items_of_only_one_side_fall_back_to_welch(tmp_path):
    for seed in (1, 2):
        write_cell(tmp_path, "m", "sst2", "x", seed, correct=[1] * 9 + [0] * seed)
        write_cell(tmp_path, "m", "sst2", "y", seed, value=0.5 + 0.01 * seed)  # no predictions saved
    comparison = only_table(build_report(load_rows(tmp_path), options(), task_lookup=lookup)).vs_best[("sst2", "y")]
    assert comparison.test.method == stats.WELCH_METHOD


def test_predictions_that_do_not_give_back_the_recorded_metric_are_not_used(tmp_path):
    for seed in (1, 2):
        write_cell(tmp_path, "m", "sst2", "x", seed, correct=[1] * 9 + [0] * seed)
        cell = write_cell(tmp_path, "m", "sst2", "y", seed, correct=[1] * 5 + [0] * 5)
        record = ResultStore(tmp_path).record_path(cell)
        data = json.loads(record.read_text())
        data["metrics"]["accuracy"] = 0.4 + 0.01 * seed  # not what its predictions.jsonl gives (0.5)
        record.write_text(json.dumps(data))
    comparison = only_table(build_report(load_rows(tmp_path), options(), task_lookup=lookup)).vs_best[("sst2", "y")]
    assert comparison.test.method == stats.WELCH_METHOD and comparison.test.note
    assert comparison.delta == pytest.approx(0.415 - (9 / 10 + 9 / 11) / 2)


def test_one_seed_each_has_no_p_value_and_no_mark():
    report = build_report(rows_of({("m", "sst2", "x"): [0.9], ("m", "sst2", "y"): [0.8]}), options())
    table = only_table(report)
    comparison = table.vs_best[("sst2", "y")]
    assert comparison.test.p_value is None and comparison.p_holm is None
    assert comparison.test.note == "needs at least 2 seeds per side"
    assert not table.not_worse(("sst2", "y"))
    data = json.loads(JsonReporter().render(report))
    (entry,) = data["tables"][0]["vs_best"]
    assert entry["p_value"] is None and entry["note"] == "needs at least 2 seeds per side"
    text = TableReporter().render(report)
    assert "│ 0.8000 " in text and "0.8000 †" not in text and "0.9000 *" in text


def test_alpha_decides_the_mark():
    spec = {("m", "sst2", "x"): [0.90, 0.92, 0.91], ("m", "sst2", "y"): [0.86, 0.92, 0.88]}
    p = only_table(build_report(rows_of(spec), options())).vs_best[("sst2", "y")].p_holm
    assert 0.05 < p < 0.5
    assert only_table(build_report(rows_of(spec), options(alpha=0.05))).not_worse(("sst2", "y"))
    assert not only_table(build_report(rows_of(spec), options(alpha=0.5))).not_worse(("sst2", "y"))


def test_holm_corrects_all_comparisons_of_a_table_together():
    spec = {
        ("m", "sst2", "full"): [0.90, 0.91, 0.92],
        ("m", "sst2", "lora"): [0.85, 0.86, 0.88],
        ("m", "sst2", "prefix"): [0.80, 0.83, 0.81],
        ("m", "sst2", "ia3"): [0.89, 0.90, 0.93],
        ("m", "rte", "full"): [0.60, 0.65, 0.62],
        ("m", "rte", "lora"): [0.70, 0.71, 0.69],
        ("m", "rte", "prefix"): [0.50, 0.55, 0.58],
        ("m", "rte", "ia3"): [0.66, 0.64, 0.69],
    }
    table = only_table(build_report(rows_of(spec), options()))
    assert table.best == {("sst2", "full"), ("rte", "lora")}
    assert [c.against for c in table.vs_best.values()] == [("sst2", "full")] * 3 + [("rte", "lora")] * 3
    raw = [c.test.p_value for c in table.vs_best.values()]
    assert all(p is not None for p in raw) and len(set(raw)) == 6
    assert [c.p_holm for c in table.vs_best.values()] == stats.holm(raw)  # one family: the whole table
    assert any(c.p_holm > c.test.p_value for c in table.vs_best.values())
    # Against the baseline (full): a family of its own, the baseline itself not tested.
    assert set(table.vs_baseline) == {(t, s) for t in ("sst2", "rte") for s in ("lora", "prefix", "ia3")}
    raw_baseline = [c.test.p_value for c in table.vs_baseline.values()]
    assert [c.p_holm for c in table.vs_baseline.values()] == stats.holm(raw_baseline)
    assert table.vs_baseline[("rte", "lora")].delta == pytest.approx(0.70 - 0.6233333333)


# -- baseline, metric and pivot options ------------------------------------------------------------------------

SPEC = {
    ("bert", "sst2", "full"): [0.80, 0.85, 0.90],
    ("bert", "sst2", "lora"): [0.70, 0.76, 0.72],
    ("bert", "ner", "full"): [0.50, 0.60, 0.70],
    ("bert", "ner", "lora"): [0.45, 0.55, 0.50],
    ("gpt", "sst2", "full"): [0.60, 0.62, 0.61],
    ("gpt", "sst2", "lora"): [0.91, 0.93, 0.95],
    ("gpt", "ner", "full"): [0.40, 0.41, 0.45],
    ("gpt", "ner", "lora"): [0.45, 0.50, 0.55],
}


def test_baseline_is_full_by_default_or_the_one_chosen():
    rows = rows_of(SPEC)
    table = build_report(rows, options()).tables[0]
    assert table.baseline == "full" and set(table.vs_baseline) == {("ner", "lora"), ("sst2", "lora")}
    assert table.vs_baseline[("sst2", "lora")].delta == pytest.approx(0.7266666667 - 0.85)
    table = build_report(rows, options(baseline="lora")).tables[0]
    assert table.baseline == "lora" and set(table.vs_baseline) == {("ner", "full"), ("sst2", "full")}
    assert table.vs_baseline[("sst2", "full")].delta == pytest.approx(0.85 - 0.7266666667)
    assert "Δ +0.1233" in TableReporter().render(build_report(rows, options(baseline="lora")))
    no_full = [r for r in rows if r["strategy"] != "full"]
    assert all(t.baseline is None and not t.vs_baseline for t in build_report(no_full, options()).tables)


@pytest.mark.parametrize(
    "chosen, message",
    [
        ({"baseline": "nope"}, "--baseline nope: not a strategy of these results (full, lora)"),
        ({"metric": "bleu"}, "--metric bleu: no record has it; metrics in these records: accuracy"),
        ({"rows": "task", "cols": "task"}, "--rows and --cols are both task: choose two different dimensions"),
        ({"rows": "seed"}, "--rows seed: expected one of task, strategy, model"),
    ],
)
def test_bad_options_are_one_line_errors(chosen, message):
    with pytest.raises(HarnessError) as caught:
        build_report(rows_of(SPEC), options(**chosen))
    assert str(caught.value) == message and caught.value.exit_code == 2


def test_strategies_by_tasks_compare_along_the_rows():
    report = build_report(rows_of(SPEC), options(rows="strategy", cols="task"))
    assert [(t.page_dim, t.page) for t in report.tables] == [("model", "bert"), ("model", "gpt")]
    bert = report.tables[0]
    assert (bert.axis, bert.row_values, bert.col_values) == ("rows", ("full", "lora"), ("sst2", "ner"))
    assert bert.cells[("lora", "ner")].key == ("bert", "ner", "lora")
    assert bert.best == {("full", "sst2"), ("full", "ner")}
    assert {cell: c.against for cell, c in bert.vs_best.items()} == {
        ("lora", "sst2"): ("full", "sst2"), ("lora", "ner"): ("full", "ner")  # within a column: one task
    }
    assert bert.baseline == "full" and {c.against for c in bert.vs_baseline.values()} == {("full", "sst2"), ("full", "ner")}
    assert bert.label("task", "ner") == "ner (accuracy)"
    assert "best of its column" in report.methods[1]
    text = TableReporter().render(report)
    assert "│ strategy " in text and "sst2 (accuracy)" in text


def test_models_by_strategies_give_one_table_per_task():
    report = build_report(rows_of(SPEC), options(rows="model", cols="strategy"))
    assert [(t.page_dim, t.page) for t in report.tables] == [("task", "sst2"), ("task", "ner")]
    sst2 = report.tables[0]
    assert (sst2.axis, sst2.row_values, sst2.col_values) == ("cols", ("bert", "gpt"), ("full", "lora"))
    assert sst2.best == {("bert", "full"), ("gpt", "lora")}
    assert sst2.vs_best[("gpt", "full")].against == ("gpt", "lora")  # within a row: one model
    assert sst2.baseline == "full"
    assert "best of its row" in report.methods[1]
    assert TableReporter().render(report).startswith("task sst2 (accuracy): ")


def test_models_by_tasks_have_no_default_baseline():
    report = build_report(rows_of(SPEC), options(rows="model", cols="task"))
    assert [t.page for t in report.tables] == ["full", "lora"]
    full = report.tables[0]
    assert full.axis == "rows" and full.baseline is None
    assert full.best == {("bert", "sst2"), ("bert", "ner")}
    report = build_report(rows_of(SPEC), options(rows="model", cols="task", baseline="gpt"))
    assert set(report.tables[0].vs_baseline) == {("bert", "sst2"), ("bert", "ner")}


# -- rows and columns left out ---------------------------------------------------------------------------------


def test_rows_and_columns_planned_only_as_skipped_are_not_shown():
    spec: dict[tuple[str, str, str], list[float | str]] = {
        ("enc", "sst2", "full"): [0.8, 0.9],
        ("enc", "sst2", "zero_shot"): ["skipped", "skipped"],
        ("enc", "ner", "full"): [0.5, 0.6],
        ("enc", "ner", "zero_shot"): ["skipped", "skipped"],
        ("enc", "gen", "full"): ["skipped", "skipped"],
        ("enc", "gen", "zero_shot"): ["skipped", "skipped"],
        ("dec", "sst2", "full"): [0.7, 0.75],
        ("dec", "sst2", "zero_shot"): [0.6, 0.65],
        ("dec", "ner", "full"): ["failed", "failed"],  # failed is never left out
        ("dec", "ner", "zero_shot"): ["skipped", "skipped"],
    }
    report = build_report(rows_of(spec), options())
    enc, dec = report.tables
    assert enc.row_values == ("sst2", "ner") and enc.col_values == ("full",)
    assert set(enc.omitted) == {("task", "gen", SKIP), ("strategy", "zero_shot", SKIP)}
    assert ("sst2", "zero_shot") in enc.cells  # still in the data, not in the table
    assert dec.row_values == ("sst2", "ner") and dec.col_values == ("full", "zero_shot") and dec.omitted == ()
    text = TableReporter().render(report)
    assert "not shown: task gen, every cell skipped [1]" in text
    assert "not shown: strategy zero_shot, every cell skipped [1]" in text
    assert f"[1] skipped: {SKIP}" in text and "failed (2) [2]" in text
    enc_text = text.split("model dec:")[0]
    assert "zero_shot  " not in enc_text.split("not shown")[0] and "│ gen" not in enc_text
    data = json.loads(JsonReporter().render(report))
    assert {"dimension": "task", "value": "gen", "reason": SKIP} in data["tables"][0]["omitted"]


# -- environment and step times --------------------------------------------------------------------------------


def test_environment_summary_counts_cells_per_value():
    rows = rows_of({("m", "sst2", "full"): [0.8, 0.9, 0.85, "failed"]})
    torch = ["2.5.1", "2.5.1", "2.6.0", "1.0"]  # the failed cell's environment is not counted
    for row, version in zip(rows, torch, strict=True):
        row["env"] = {"torch": version, "python": "3.12.3", "hostname": None}
    assert environment_summary(rows) == [("python", "3.12.3"), ("torch", "2.5.1 (2 cells); 2.6.0 (1 cell)")]
    assert environment_summary(rows_of({("m", "sst2", "full"): [0.8]})) == []
    report = build_report(rows, options())
    assert report.environment == (("python", "3.12.3"), ("torch", "2.5.1 (2 cells); 2.6.0 (1 cell)"))


def test_step_times_leave_out_warm_up_and_pool_seeds(tmp_path):
    write_cell(tmp_path, "m", "sst2", "full", 1, value=0.8,
               steps={"clock": "cuda", "warmup_steps_excluded": 2, "step_s": [9.0, 8.0, 1.0, 2.0]})
    write_cell(tmp_path, "m", "sst2", "full", 2, value=0.9,
               steps={"clock": "cuda", "warmup_steps_excluded": 1, "step_s": [7.0, 3.0, 4.0]})
    write_cell(tmp_path, "m", "sst2", "full", 3, status="failed", steps={"step_s": [100.0]})  # failed: left out
    write_cell(tmp_path, "m", "sst2", "lora", 1, value=0.7, steps={"step_s": [0.5, 0.25]})  # none excluded
    write_cell(tmp_path, "m", "sst2", "lora", 2, value=0.7)  # no steps.json
    report = build_report(load_rows(tmp_path), options())
    assert step_times(report) == {("sst2", "m", "full"): [1.0, 2.0, 3.0, 4.0], ("sst2", "m", "lora"): [0.5, 0.25]}
    points = {p.strategy: p for p in plot_points(report)}
    assert points["full"].quality == pytest.approx(0.85) and points["full"].quality_std == pytest.approx(0.0707106781)
    assert points["full"].train_s == pytest.approx(11.5) and points["full"].peak_mib == pytest.approx(150.0)
    assert points["lora"].trainable == 10 and points["full"].memory_kind == "RSS"


# -- the report command ----------------------------------------------------------------------------------------


@pytest.fixture
def results(tmp_path):
    return write_values(tmp_path / "results", SPEC)


def invoke(monkeypatch, *args: str):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "reporters")
    return CliRunner().invoke(cli, ["report", *args])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--baseline", "nope"], "error: --baseline nope: not a strategy of these results (full, lora)"),
        (["--metric", "bleu"], "error: --metric bleu: no record has it; metrics in these records: accuracy, loss"),
        (["--rows", "task", "--cols", "task"], "error: --rows and --cols are both task"),
    ],
)
def test_cli_option_mistakes_are_one_line_errors(results, monkeypatch, args, message):
    result = invoke(monkeypatch, str(results), *args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.output


def test_cli_writes_plots_and_says_how_many(tmp_path, monkeypatch):
    results = write_values(tmp_path / "results", {k: v for k, v in SPEC.items() if k[:2] == ("bert", "sst2")})
    plots = tmp_path / "plots"
    result = invoke(monkeypatch, str(results), "--format", "json", "--plots", str(plots), "--resamples", "1000")
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in plots.iterdir())
    assert files and {Path(f).suffix for f in files} == {".png", ".svg"}
    assert {Path(f).stem for f in files if f.endswith(".png")} == {Path(f).stem for f in files if f.endswith(".svg")}
    assert f"{len(files)} plot files written to {plots}" in result.stderr
    assert any("quality-vs-trainable" in f for f in files)
    json.loads(result.stdout)  # stdout holds the report alone


def test_cli_csv_matches_the_aggregation(results, monkeypatch):
    pd = pytest.importorskip("pandas")
    result = invoke(monkeypatch, str(results), "--format", "csv", "--resamples", "1000")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout))
    aggregate = frame[(frame.status == "aggregate") & (frame.metric == "accuracy")]
    per_seed = frame[(frame.statistic == "value") & (frame.metric == "accuracy")]
    groups = group_rows(load_rows(results))
    assert len(groups) == len(SPEC)
    for group in groups:
        mine = aggregate[(aggregate.model == group.model) & (aggregate.task == group.task)
                         & (aggregate.strategy == group.strategy)]
        got = dict(zip(mine.statistic, mine.value, strict=False))
        for statistic in ("mean", "std", "n", "ci_low", "ci_high"):
            assert got[statistic] == pytest.approx(getattr(group.quality, statistic)), (group.key, statistic)
        seeds = per_seed[(per_seed.model == group.model) & (per_seed.task == group.task)
                         & (per_seed.strategy == group.strategy)]
        assert dict(zip(seeds.seed.astype(int), seeds.value, strict=True)) == pytest.approx(group.values)


def test_cli_json_tables_carry_the_tests(results, monkeypatch):
    result = invoke(monkeypatch, str(results), "--format", "json", "--resamples", "1000", "--baseline", "lora",
                    "--alpha", "0.1")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["options"]["baseline"] == "lora" and data["options"]["alpha"] == 0.1
    assert any("Welch" in line for line in data["methods"])
    bert = data["tables"][0]
    assert (bert["model"], bert["rows"], bert["cols"], bert["baseline"]) == ("bert", "task", "strategy", "lora")
    assert bert["best"] == [["ner", "full"], ["sst2", "full"]]
    assert {tuple(c["cell"]) for c in bert["vs_best"]} == {("sst2", "lora"), ("ner", "lora")}
    for comparison in bert["vs_best"] + bert["vs_baseline"]:
        assert {"p_value", "p_holm", "method", "delta", "against"} <= set(comparison)
        assert comparison["method"] == stats.WELCH_METHOD  # the correctness task is not installed here
        assert 0 < comparison["p_value"] <= comparison["p_holm"] <= 1


def add_plugin(monkeypatch, **hooks: Any) -> None:
    """Every PluginHost the CLI loads also gets a plugin module with these ``harness_register_*`` hooks."""
    from harness.api.host import PluginHost

    plugin = types.ModuleType("report_test_plugin")
    for name, hook in hooks.items():
        setattr(plugin, name, hookimpl(hook))
    load = PluginHost.load.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(PluginHost, "load", classmethod(lambda cls, extra=(): load(cls, [*extra, ("fake", plugin)])))


def test_cli_uses_the_installed_task_for_paired_tests(tmp_path, monkeypatch):
    for seed in (1, 2):
        write_cell(tmp_path, "m", "sst2", "full", seed, correct=[1] * 50 + [0] * 10)
        write_cell(tmp_path, "m", "sst2", "lora", seed, correct=[1] * 20 + [0] * 40)
    add_plugin(monkeypatch, harness_register_tasks=lambda register: register(CorrectnessTask()))
    result = invoke(monkeypatch, str(tmp_path), "--format", "json", "--resamples", "1000")
    assert result.exit_code == 0, result.output
    (comparison,) = json.loads(result.stdout)["tables"][0]["vs_best"]
    assert comparison["method"] == stats.RANDOMIZATION_METHOD.format(resamples=1000)
    assert comparison["n"] == 120 and comparison["p_value"] == pytest.approx(1 / 1001)


class FolderReporter(Reporter):
    name = "folder"
    description = "test reporter: one file per group"
    output = "directory"

    def write(self, report: Report, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / f"{'-'.join(g.key)}.txt" for g in report.groups]
        for path, group in zip(paths, report.groups, strict=True):
            path.write_text(f"{group.quality.mean}\n", encoding="utf-8")
        return paths


def test_cli_directory_reporters_need_an_output_folder(results, tmp_path, monkeypatch):
    add_plugin(monkeypatch, harness_register_reporters=lambda register: register(FolderReporter()))
    result = invoke(monkeypatch, str(results), "--format", "folder")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip() == "error: --format folder writes a directory: give it with --output DIR"
    out = tmp_path / "folder"
    result = invoke(monkeypatch, str(results), "--format", "folder", "-o", str(out), "--resamples", "1000")
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and f"{len(SPEC)} files written to {out}" in result.stderr
    assert float((out / "bert-sst2-full.txt").read_text()) == pytest.approx(0.85)


def test_json_report_is_plain_json_with_numbers(results):
    data = json.loads(JsonReporter().render(build_report(load_rows(results), options())))
    group = next(g for g in data["groups"] if (g["model"], g["task"], g["strategy"]) == ("bert", "sst2", "full"))
    assert group["quality"]["ci_high"] == pytest.approx(0.85 + T_975_2 * 0.05 / math.sqrt(3))
    assert group["cost"]["train_s"]["mean"] == pytest.approx(12.0) and group["memory_kind"] == "RSS"
    assert np.isclose(group["cost"]["peak_memory_mib"]["mean"], 200.0)
    csv_text = CsvReporter().render(build_report(load_rows(results), options()))
    assert csv_text.splitlines()[0] == "model,task,strategy,seed,status,metric,statistic,value"


def test_a_nan_metric_is_no_value_and_never_the_best():
    from harness.report.analysis import build_tables, rows_by_group
    from harness.report.groups import group_rows

    rows = [
        {"key": f"{s}{seed}", "model": "m", "task": "t", "strategy": s, "seed": seed, "status": "ok",
         "primary_metric": "mse", "metrics": {"mse": v}}
        for s, values in {"a": [float("nan"), float("nan")], "b": [0.5, 0.6], "c": [0.4, 0.45]}.items()
        for seed, v in enumerate(values)
    ]
    groups = group_rows(rows)
    assert next(g for g in groups if g.strategy == "a").quality is None
    [table] = build_tables(groups, rows_by_group(rows))
    assert table.best == frozenset({("t", "b")})
