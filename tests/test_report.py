"""harness report: loading a results directory, aggregation by hand, and the four built-in formats."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys

import pytest
from click.testing import CliRunner
from harness_plugins.reporters import CsvReporter, JsonReporter, MarkdownReporter, TableReporter

from harness.api.budget import Budget
from harness.api.cells import Cell
from harness.cli import cli
from harness.report.groups import group_rows
from harness.report.reporting import Report, ReportOptions, build_report
from harness.report.rows import load_rows, pending_count
from harness.report.tables import cost_table, format_mean_std, format_value
from harness.results.records import Memory, Params, Record, Timing, write_json_atomic
from harness.results.store import ResultStore

MIB = 2**20
SKIP_REASON = "strategy 'lora' does not support token classification"
OOM = "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"

#: (model, task, strategy) -> [(seed, status, primary metric value)]
SPEC: dict[tuple[str, str, str], list[tuple[int, str, float | None]]] = {
    ("bert-tiny", "sst2", "full"): [(1, "ok", 0.80), (2, "ok", 0.85), (3, "ok", 0.90)],
    ("bert-tiny", "sst2", "lora"): [(1, "ok", 0.70), (2, "ok", 0.76), (3, "failed", None)],
    ("bert-tiny", "ner", "full"): [(1, "ok", 0.5), (2, "ok", 0.6), (3, "ok", 0.7)],
    ("bert-tiny", "ner", "lora"): [(1, "skipped", None), (2, "skipped", None), (3, "skipped", None)],
    ("minilm", "sst2", "full"): [(1, "failed", None), (2, "failed", None), (3, "failed", None)],
    ("minilm", "sst2", "lora"): [(1, "ok", 0.91), (2, "ok", 0.93), (3, "ok", 0.95)],
    ("minilm", "ner", "full"): [(1, "ok", 0.40)],
    ("minilm", "ner", "lora"): [(1, "ok", 0.45), (2, "ok", 0.55), (3, "ok", 0.50)],
}
METRIC = {"sst2": "accuracy", "ner": "f1"}


def make_cell(model: str, task: str, strategy: str, seed: int, learning_rate: float = 5e-5) -> Cell:
    skipped = (model, task, strategy) == ("bert-tiny", "ner", "lora")
    return Cell(
        suite="nlp", task=task, task_type="classification", task_options={}, strategy=strategy,
        strategy_type=strategy, strategy_options={}, model=model, model_source="tiny", model_options={},
        model_family="encoder", seed=seed, budget=Budget(learning_rate=learning_rate),
        skip_reason=SKIP_REASON if skipped else None,
    )


def make_record(cell: Cell, status: str, value: float | None, finished_at: str = "2025-01-01T00:00:00+00:00") -> Record:
    gpu = cell.model == "minilm"
    ok = status == "ok"
    return Record(
        key=cell.key, suite=cell.suite, cell_id=cell.cell_id, task=cell.task, strategy=cell.strategy,
        model=cell.model, seed=cell.seed, status=status,
        error={"failed": OOM if cell.model == "minilm" else "RuntimeError: boom", "skipped": SKIP_REASON}.get(status),
        metrics={METRIC[cell.task]: value, "loss": 1.0 - value} if ok else {},
        primary_metric=METRIC[cell.task] if status != "skipped" else None,
        params=Params(total=1000, trainable=100 if cell.strategy == "lora" else 1000,
                      trainable_pct=10.0 if cell.strategy == "lora" else 100.0) if ok else Params(),
        timing=Timing(load_s=1.0, train_s=10.0 * cell.seed, eval_s=0.5, total_s=11.5) if ok else Timing(),
        memory=Memory(peak_rss_bytes=100 * MIB * cell.seed,
                      gpu_peak_allocated_bytes=200 * MIB * cell.seed if gpu else None) if ok else Memory(),
        config=cell.config(), env={"attempt": "a" * 32}, finished_at=finished_at,
    )


def write_results(root, with_plan: bool = True, skipped_records: bool = True) -> list[Cell]:
    store = ResultStore(root)
    cells = []
    for (model, task, strategy), seeds in SPEC.items():
        for seed, status, value in seeds:
            cell = make_cell(model, task, strategy, seed)
            cells.append(cell)
            if status != "skipped" or skipped_records:
                store.write(cell, make_record(cell, status, value))
    if with_plan:
        store.write_plan(cells, "suites/nlp.toml", "0" * 64)
    return cells


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    write_results(root)
    return root


def report_of(rows, **options) -> Report:
    """The report of ``rows`` with few resamples (no test here depends on their count)."""
    return build_report(rows, ReportOptions(resamples=1000, **options))


def group_of(rows, model, task, strategy):
    return next(g for g in group_rows(rows) if g.key == (model, task, strategy))


def table_of(report: Report, page: str):
    return next(t for t in report.tables if t.page == page)


# -- loading and aggregation -----------------------------------------------------------------------------------


def test_rows_are_records_sorted_by_model_task_strategy_seed(results):
    rows = load_rows(results)
    assert len(rows) == sum(len(v) for v in SPEC.values()) and pending_count(rows) == 0
    keys = [(r["model"], r["task"], r["strategy"], r["seed"]) for r in rows]
    assert keys == sorted(keys)
    assert all(Record.from_json(r).to_json() == r for r in rows)
    # Every row knows its cell folder (predictions, steps.json, log).
    assert set(rows.dirs) == {r["key"] for r in rows}
    assert all((rows.dirs[r["key"]] / "record.json").is_file() for r in rows if r["status"] != "skipped")


def test_aggregates_match_hand_computation(results):
    rows = load_rows(results)
    full = group_of(rows, "bert-tiny", "sst2", "full")
    assert (full.metric, full.quality.n, full.failed, full.skipped) == ("accuracy", 3, {}, {})
    assert full.quality.mean == pytest.approx(0.85) and full.quality.std == pytest.approx(0.05)  # sqrt((.05²+0+.05²)/2)
    half = 4.302652729749463 * 0.05 / math.sqrt(3)  # t(0.975, 2) · s / √n
    assert (full.quality.ci_low, full.quality.ci_high) == (pytest.approx(0.85 - half), pytest.approx(0.85 + half))
    assert full.values == {1: 0.80, 2: 0.85, 3: 0.90}
    assert full.cost["train_s"].mean == pytest.approx(20.0)  # (10 + 20 + 30) / 3
    assert full.memory_kind == "RSS" and full.cost["peak_memory_mib"].mean == pytest.approx(200.0)

    lora = group_of(rows, "bert-tiny", "sst2", "lora")  # the failed seed is kept with its error, never averaged
    assert (lora.quality.n, lora.failed) == (2, {3: "RuntimeError: boom"})
    assert lora.quality.mean == pytest.approx(0.73) and lora.quality.std == pytest.approx(math.sqrt(2 * 0.03**2))
    assert lora.cost["train_s"].mean == pytest.approx(15.0) and lora.cost["peak_memory_mib"].mean == pytest.approx(150.0)
    assert (lora.cost["trainable"].mean, lora.cost["trainable_pct"].mean) == (100, 10.0)

    skipped = group_of(rows, "bert-tiny", "ner", "lora")
    assert (skipped.quality, skipped.values, skipped.failed) == (None, {}, {})
    assert skipped.skipped == {1: SKIP_REASON, 2: SKIP_REASON, 3: SKIP_REASON}
    assert skipped.cost == {} and skipped.memory_kind is None

    oom = group_of(rows, "minilm", "sst2", "full")
    assert (oom.quality, oom.metric, oom.failed) == (None, "accuracy", {1: OOM, 2: OOM, 3: OOM})
    assert "train_s" not in oom.cost

    gpu = group_of(rows, "minilm", "sst2", "lora")  # GPU figures win over RSS when every ok seed has one
    assert gpu.quality.mean == pytest.approx(0.93) and gpu.quality.std == pytest.approx(0.02)
    assert gpu.memory_kind == "GPU" and gpu.cost["peak_memory_mib"].mean == pytest.approx(400.0)

    single = group_of(rows, "minilm", "ner", "full")
    assert (single.quality.n, single.quality.mean, single.quality.std) == (1, pytest.approx(0.4), 0.0)
    assert (single.quality.ci_low, single.quality.ci_high) == (None, None)  # no interval from one seed

    assert [g.key for g in group_rows(rows)] == list(dict.fromkeys((r["model"], r["task"], r["strategy"]) for r in rows))


def test_memory_kind_is_rss_when_any_ok_seed_lacks_a_gpu_peak():
    rows = [
        Record(key=f"k{seed}", suite="s", cell_id="c", task="t", strategy="s", model="m", seed=seed, status="ok",
               primary_metric="accuracy", metrics={"accuracy": 0.5},
               memory=Memory(peak_rss_bytes=100 * MIB, gpu_peak_allocated_bytes=50 * MIB if seed == 1 else None)
               ).to_json()
        for seed in (1, 2)
    ]
    (group,) = group_rows(rows)
    assert group.memory_kind == "RSS" and group.cost["peak_memory_mib"].mean == pytest.approx(100.0)


def test_plan_reports_exactly_the_current_cells(results):
    cells = write_results(results.parent / "unused", with_plan=False)  # just to get the cell list
    store = ResultStore(results)
    # A record of an older configuration in its own folder, newer than everything: not in the plan, ignored.
    old = make_cell("bert-tiny", "sst2", "full", 1, learning_rate=1e-3)
    store.write(old, make_record(old, "ok", 0.01, finished_at="2030-01-01T00:00:00+00:00"))
    # A planned folder holding a record whose key is not the plan's: ignored, the cell counts as pending.
    planned = cells[0]
    stale = make_record(planned, "ok", 0.02)
    write_json_atomic(store.record_path(planned), {**stale.to_json(), "key": "0123456789abcdef"})

    rows = load_rows(results)
    assert pending_count(rows) == 1
    assert len(rows) == len(cells) - 1
    values = [r["metrics"].get("accuracy") for r in rows if r["task"] == "sst2"]
    assert 0.01 not in values and 0.02 not in values
    report = report_of(rows)
    assert report.pending == 1
    text = TableReporter().render(report)
    assert "1 planned cell has no record yet." in text


def test_plan_turns_planned_skipped_cells_into_skipped_rows(tmp_path):
    write_results(tmp_path, skipped_records=False)
    rows = load_rows(tmp_path)
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert len(skipped) == 3 and pending_count(rows) == 0
    assert {(r["model"], r["task"], r["strategy"], r["error"]) for r in skipped} == {
        ("bert-tiny", "ner", "lora", SKIP_REASON)
    }
    assert skipped[0]["config"]["strategy"]["name"] == "lora"


def test_without_plan_the_newest_record_per_cell_wins(tmp_path):
    write_results(tmp_path, with_plan=False)
    rerun = make_cell("bert-tiny", "sst2", "full", 1, learning_rate=1e-3)  # another key, another folder
    ResultStore(tmp_path).write(rerun, make_record(rerun, "ok", 0.99, finished_at="2030-01-01T00:00:00+00:00"))
    rows = load_rows(tmp_path)
    assert len(rows) == sum(len(v) for v in SPEC.values())
    seed1 = [r for r in rows if (r["model"], r["task"], r["strategy"], r["seed"]) == ("bert-tiny", "sst2", "full", 1)]
    assert [r["metrics"]["accuracy"] for r in seed1] == [0.99]
    assert rows.dirs[seed1[0]["key"]] == ResultStore(tmp_path).cell_dir(rerun)  # the winner's folder


def test_format_mean_std_uses_four_significant_digits():
    assert format_mean_std(0.85, 0.05) == "0.8500 ± 0.0500"
    assert format_mean_std(0.05123, 0.001) == "0.05123 ± 0.00100"
    assert format_mean_std(1.0, 0.0) == "1.000 ± 0.000"
    assert format_mean_std(1234.56, 12.3) == "1235 ± 12"
    assert format_mean_std(0.0, 0.0) == "0.0000 ± 0.0000"


def test_format_value_shows_one_seed_without_a_spread():
    assert format_value(0.4) == "0.4000"
    assert format_value(0.05123) == "0.05123"
    assert format_value(1234.56) == "1235"
    assert format_value(0.0) == "0.0000"


# -- formats ---------------------------------------------------------------------------------------------------


def test_table_shows_values_failures_and_skips(results):
    text = TableReporter().render(report_of(load_rows(results)))
    assert "0.8500 ± 0.0500 *" in text and "0.7300 ± 0.0424" in text  # * the best of its row
    assert "0.4000 ± 0.0000" not in text and "│ 0.4000 " in text  # one seed: no spread
    assert "(n=3)" in text and "(n=2)" in text and "(n=1)" in text
    assert "Δ −0.1200" in text and "Δ: difference of the means to full." in text  # full is the default baseline
    assert "+1 failed [2]" in text  # footnotes are numbered in reading order: ner comes before sst2
    assert "skipped [1]" in text and "failed (3) [3]" in text
    assert f"[1] skipped: {SKIP_REASON}" in text
    assert "[2] failed: RuntimeError: boom" in text
    assert "[3] failed: out of memory" in text
    assert "sst2" in text and "(accuracy)" in text and "(f1)" in text
    assert "model bert-tiny: primary metric" in text and "model minilm: cost, means over ok seeds" in text
    assert "│ RSS MiB " in text and "│ GPU MiB " in text  # peak memory in MiB, labelled per table
    assert "95% Student-t interval" in text and "Welch" in text and "Holm" in text  # the methods footer
    assert max(len(line) for line in text.splitlines()) <= 100


def test_cost_table_columns_and_compact_counts(results):
    report = report_of(load_rows(results))
    headers, body = cost_table(table_of(report, "bert-tiny"))
    assert headers == ["task", "strategy", "n", "trainable", "stored", "RSS MiB", "train s", "train/s"]
    assert body == [  # the skipped ner/lora cell has no line: the quality table says why
        ["ner", "full", "3/3", "1k 100%", "-", "200", "20 ± 10", "-"],
        ["sst2", "full", "3/3", "1k 100%", "-", "200", "20 ± 10", "-"],
        ["sst2", "lora", "2/3", "100 10%", "-", "150", "15 ± 7.1", "-"],
    ]
    headers, body = cost_table(table_of(report, "minilm"))
    assert headers[5] == "GPU MiB"
    assert ["ner", "full", "1/1", "1k 100%", "-", "200", "10", "-"] in body  # one seed: no ± on the train time
    assert ["sst2", "full", "0/3", "-", "-", "-", "-", "-"] in body  # every seed failed


def test_cost_table_labels_each_row_when_memory_kinds_mix():
    rows = [
        Record(key=f"{strategy}{seed}", suite="s", cell_id="c", task="t", strategy=strategy, model="m", seed=seed,
               status="ok", primary_metric="accuracy", metrics={"accuracy": 0.5 + 0.01 * seed},
               params=Params(total=22_713_216, trainable=trainable, trainable_pct=100 * trainable / 22_713_216,
                             stored_bytes=1_800_000),
               timing=Timing(train_s=10.0, train_samples_per_s=1234.5),
               memory=Memory(peak_rss_bytes=300 * MIB, gpu_peak_allocated_bytes=120 * MIB if strategy == "a" else None),
               ).to_json()
        for strategy, trainable in (("a", 22_713_216), ("b", 120_000))
        for seed in (1, 2)
    ]
    headers, body = cost_table(report_of(rows).tables[0])
    assert headers[5] == "peak MiB"
    assert body == [
        ["t", "a", "2/2", "22.71M 100%", "1.72 MiB", "120 GPU", "10 ± 0", "1234"],
        ["t", "b", "2/2", "120k 0.53%", "1.72 MiB", "300 RSS", "10 ± 0", "1234"],
    ]


def test_terminal_table_with_four_long_strategies_fits_100_columns():
    strategies = ["full-finetuning", "lora-r8-query-value", "prefix-tuning-20-tokens", "houlsby-bottleneck-16"]
    rows = [
        Record(
            key=f"{strategy}-{seed}", suite="s", cell_id="c", task="tweet-sentiment-classification",
            strategy=strategy, model="all-MiniLM-L6-v2", seed=seed, status="failed" if failed else "ok",
            error="RuntimeError: boom" if failed else None, primary_metric="macro_f1",
            metrics={} if failed else {"macro_f1": 0.1234 + 0.01 * seed},
            params=Params(total=22_713_216, trainable=22_713_216, trainable_pct=100.0),
            timing=Timing(train_s=123.456), memory=Memory(peak_rss_bytes=1234 * MIB),
        ).to_json()
        for strategy in strategies
        for seed in (1, 2, 3)
        for failed in [(strategy, seed) == ("lora-r8-query-value", 3)]
    ]
    text = TableReporter().render(report_of(rows))
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "0.1434 ± 0.0100" in text and "+1 failed [1]" in text
    assert "│ 1234 " in text and "22.71M 100%" in text
    assert text.count("│ tweet-") == 2  # one comparison table (not split); the cost table names it once
    assert text.count("┌") == 2


def test_terminal_table_splits_many_strategies_over_tables_that_fit():
    strategies = [f"strategy-number-{i}" for i in range(7)]
    rows = [
        Record(key=strategy, suite="s", cell_id="c", task="sst2", strategy=strategy, model="m", seed=1, status="ok",
               primary_metric="accuracy", metrics={"accuracy": 0.5}).to_json()
        for strategy in strategies
    ]
    text = TableReporter().render(report_of(rows))
    assert max(len(line) for line in text.splitlines()) <= 100
    assert text.count("┌") == 3  # the comparison in two tables, each repeating the task column; the cost table
    assert text.count("0.5000 *") == 7  # one seed each: no spread; all tie for the best


def cells_of(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_markdown_has_a_heading_and_pipe_tables_per_model(results):
    text = MarkdownReporter().render(report_of(load_rows(results)))
    lines = text.splitlines()
    assert lines[0] == "# Results"
    assert [line for line in lines if line.startswith("## ")] == ["## model bert-tiny", "## model minilm"]
    header = next(i for i, line in enumerate(lines) if line.startswith("| task (metric)"))
    assert cells_of(lines[header]) == ["task (metric)", "full", "lora"]
    assert set(lines[header + 1]) <= {"|", "-", " ", ":"}
    assert cells_of(lines[header + 2]) == ["ner (f1)", "**0.6000 ± 0.1000** (n=3)", "skipped [1]"]
    assert cells_of(lines[header + 3]) == [
        "sst2 (accuracy)", "**0.8500 ± 0.0500** (n=3)", "0.7300 ± 0.0424 † (n=2) Δ −0.1200 +1 failed [2]"
    ]
    table_rows = [line for line in lines if line.startswith("|")]
    assert all(line.count("|") == table_rows[0].count("|") for line in table_rows[:4])
    assert f"- [1] skipped: {SKIP_REASON}" in lines
    assert "- [3] failed: out of memory: CUDA out of memory. Tried to allocate 2.00 GiB" in lines
    cost_header = next(line for line in lines if line.startswith("| task   | strategy"))
    assert cells_of(cost_header) == ["task", "strategy", "n", "trainable", "stored", "RSS MiB", "train s", "train/s"]
    assert cells_of(next(line for line in lines if line.startswith("| sst2   | lora"))) == [
        "sst2", "lora", "2/3", "100 10%", "-", "150", "15 ± 7.1", "-"
    ]
    minilm = lines.index("## model minilm")
    assert "| ner (f1)        | 0.4000 (n=1)" in "\n".join(lines[minilm:])  # one seed: no ± 0.0000


def test_csv_is_tidy_and_reads_back_with_pandas(results):
    pd = pytest.importorskip("pandas")
    rows = load_rows(results)
    frame = pd.read_csv(io.StringIO(CsvReporter().render(report_of(rows))))
    assert list(frame.columns) == ["model", "task", "strategy", "seed", "status", "metric", "statistic", "value"]
    seeds = frame[frame.status != "aggregate"]
    assert seeds.seed.notna().all() and set(seeds.statistic.dropna()) == {"value"}
    acc = seeds[(seeds.model == "bert-tiny") & (seeds.task == "sst2") & (seeds.strategy == "full")
                & (seeds.metric == "accuracy")]
    assert sorted(acc.value) == [0.80, 0.85, 0.90]
    assert acc.value.mean() == pytest.approx(0.85) and acc.value.std() == pytest.approx(0.05)
    train = seeds[(seeds.model == "minilm") & (seeds.strategy == "lora") & (seeds.task == "ner")
                  & (seeds.metric == "timing.train_s")]
    assert sorted(train.value) == [10.0, 20.0, 30.0]
    gpu = seeds[(seeds.model == "minilm") & (seeds.metric == "memory.gpu_peak_allocated_bytes")]
    assert gpu.value.max() == 600 * MIB
    failed = seeds[seeds.status == "failed"]
    assert len(failed) == 4 and failed.metric.isna().all()  # one line each, no figures
    assert set(seeds[seeds.status == "skipped"].strategy) == {"lora"}

    aggregate = frame[frame.status == "aggregate"]
    assert aggregate.seed.isna().all()
    full = aggregate[(aggregate.model == "bert-tiny") & (aggregate.task == "sst2") & (aggregate.strategy == "full")]
    quality = dict(zip(full[full.metric == "accuracy"].statistic, full[full.metric == "accuracy"].value, strict=True))
    described = group_of(rows, "bert-tiny", "sst2", "full").quality
    assert quality == {
        "mean": pytest.approx(described.mean), "std": pytest.approx(described.std), "n": 3,
        "ci_low": pytest.approx(described.ci_low), "ci_high": pytest.approx(described.ci_high),
    }
    train_s = full[full.metric == "cost.train_s"]
    assert dict(zip(train_s.statistic, train_s.value, strict=True))["mean"] == pytest.approx(20.0)
    lora = aggregate[(aggregate.model == "bert-tiny") & (aggregate.task == "sst2") & (aggregate.strategy == "lora")]
    tests = dict(zip(lora.statistic, lora.value, strict=False))
    assert tests["delta_vs_best"] == pytest.approx(-0.12) and tests["delta_vs_baseline"] == pytest.approx(-0.12)
    assert 0 < tests["p_vs_best"] <= tests["p_vs_best_holm"] <= 1
    # A skipped group has no aggregate line; a group that only failed has none either.
    assert aggregate[(aggregate.model == "bert-tiny") & (aggregate.task == "ner") & (aggregate.strategy == "lora")].empty
    assert aggregate[(aggregate.model == "minilm") & (aggregate.task == "sst2") & (aggregate.strategy == "full")].empty


CONTRACT = {
    "task", "strategy", "model", "seed", "status", "error", "metrics", "primary_metric", "params", "timing",
    "memory", "config", "env",
}


def test_report_json_through_the_cli(results, monkeypatch):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "reporters")
    result = CliRunner().invoke(cli, ["report", str(results), "--format", "json", "--resamples", "1000"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) >= {"schema_version", "options", "methods", "environment", "records", "groups", "tables"}
    assert report["options"]["resamples"] == 1000 and report["options"]["rows"] == "task"
    data = report["records"]
    assert len(data) == sum(len(v) for v in SPEC.values())
    assert all(CONTRACT <= set(row) for row in data)
    assert list(data[0]) == list(Record.from_json(data[0]).to_json())  # stable key order: the record's
    first = data[0]  # sorted: bert-tiny, ner, full, seed 1
    assert (first["model"], first["task"], first["strategy"], first["seed"]) == ("bert-tiny", "ner", "full", 1)
    assert first["status"] == "ok" and first["error"] is None
    assert first["metrics"] == {"f1": 0.5, "loss": 0.5} and first["primary_metric"] == "f1"
    assert {"total", "trainable"} <= set(first["params"]) and first["params"]["trainable"] == 1000
    assert {"load_s", "train_s", "eval_s", "total_s", "train_samples_per_s", "train_tokens_per_s",
            "step_s_median"} <= set(first["timing"])
    assert first["memory"]["gpu_peak_allocated_bytes"] is None and first["memory"]["peak_rss_bytes"] == 100 * MIB
    assert first["config"]["task"]["name"] == "ner" and first["config"]["seed"] == 1
    failed = [r for r in data if r["status"] == "failed"]
    assert {r["error"] for r in failed} == {"RuntimeError: boom", OOM}

    groups = {(g["model"], g["task"], g["strategy"]): g for g in report["groups"]}
    lora = groups[("bert-tiny", "sst2", "lora")]
    assert lora["seeds"] == {"1": 0.70, "2": 0.76} and lora["failed"] == {"3": "RuntimeError: boom"}
    assert lora["quality"]["n"] == 2 and lora["quality"]["mean"] == pytest.approx(0.73)
    assert [t["model"] for t in report["tables"]] == ["bert-tiny", "minilm"]


def test_report_table_through_the_cli_to_a_file(results, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "reporters")
    out = tmp_path / "report.md"
    result = CliRunner().invoke(cli, ["report", str(results), "--format", "markdown", "-o", str(out),
                                      "--resamples", "1000"])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("# Results\n")


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "no such results directory"),
        (lambda p: p.mkdir(), "no records found"),
        (lambda p: (p / "cells" / "x").mkdir(parents=True), "no records found"),
    ],
)
def test_missing_or_empty_results_are_one_line_errors(tmp_path, monkeypatch, setup, message):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "reporters")
    path = tmp_path / "results"
    setup(path)
    result = CliRunner().invoke(cli, ["report", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}:") and message in lines[0]


def test_plan_without_records_says_how_many_cells_wait(tmp_path):
    cells = [make_cell("m", "sst2", "full", seed) for seed in (1, 2)]
    ResultStore(tmp_path).write_plan(cells, "suites/nlp.toml", "0" * 64)
    with pytest.raises(Exception, match=r"no records found \(2 planned cells have no record yet\)"):
        load_rows(tmp_path)
    (tmp_path / "plan.json").write_text("{not json")
    with pytest.raises(Exception, match="plan.json: not a plan written by `harness run`"):
        load_rows(tmp_path)


def test_default_pivot_is_tasks_by_strategies_per_model(results):
    report = report_of(load_rows(results))
    assert [(t.page_dim, t.page) for t in report.tables] == [("model", "bert-tiny"), ("model", "minilm")]
    first = report.tables[0]
    assert (first.rows_dim, first.cols_dim, first.axis, first.baseline) == ("task", "strategy", "cols", "full")
    assert first.row_values == ("ner", "sst2") and first.col_values == ("full", "lora")
    assert first.cells[("sst2", "lora")].key == ("bert-tiny", "sst2", "lora")
    assert {task: first.label("task", task) for task in first.row_values} == {"ner": "ner (f1)", "sst2": "sst2 (accuracy)"}
    assert first.best == {("ner", "full"), ("sst2", "full")}
    assert first.omitted == ()  # lora has values on sst2: its column stays


def test_report_modules_do_not_import_torch():
    code = (
        "import sys, harness.report.rows, harness.report.analysis, harness.report.reporting, harness.report.stats, harness.report.figures\n"
        "import harness_plugins.reporters, harness_plugins.report_data\n"
        "heavy = [m for m in ('torch', 'transformers', 'sklearn', 'pandas', 'tabulate') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_building_and_rendering_a_report_does_not_import_torch(results):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from harness.report.rows import load_rows\n"
        "from harness.report.reporting import ReportOptions, build_report\n"
        "from harness_plugins.reporters import REPORTERS\n"
        f"report = build_report(load_rows(Path({str(results)!r})), ReportOptions(resamples=100))\n"
        "for make in REPORTERS:\n"
        "    make().render(report)\n"
        "print(','.join(m for m in ('torch', 'transformers', 'sklearn', 'pandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_harness_register_reporters_registers_the_built_in_formats(monkeypatch):
    import harness_plugins.reporters as reporters

    from harness.api.host import PluginHost

    registered = []
    reporters.harness_register_reporters(register=registered.append)
    assert [r.name for r in registered] == ["table", "markdown", "latex", "html", "csv", "json"]
    assert all(r.description for r in registered)
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "")
    host = PluginHost.load(extra=[("reporters", reporters)])
    assert host.problems == [] and isinstance(host.reporter("markdown"), MarkdownReporter)
    assert isinstance(host.reporter("json"), JsonReporter) and isinstance(host.reporter("csv"), CsvReporter)


def test_cost_table_adds_mfu_and_energy_only_when_measured():
    from harness.report.analysis import build_tables, rows_by_group
    from harness.report.groups import group_rows
    from harness.report.tables import cost_table

    def row(strategy, compute):
        return Record(key=strategy, suite="s", cell_id="c", task="sst2", strategy=strategy, model="m", seed=1,
                      status="ok", primary_metric="accuracy", metrics={"accuracy": 0.5},
                      timing=Timing(train_s=10.0)).to_json() | {"compute": compute}

    plain = [row("full", {}), row("lora", {})]
    [table] = build_tables(group_rows(plain), rows_by_group(plain))
    assert "MFU %" not in cost_table(table)[0]
    gpu = [row("full", {"mfu": 0.41, "energy_j": 1234.5}), row("lora", {"mfu": None, "energy_j": 99.0})]
    [table] = build_tables(group_rows(gpu), rows_by_group(gpu))
    headers, body = cost_table(table)
    assert headers[-2:] == ["MFU %", "energy J"]
    assert [line[-2:] for line in body] == [["41", "1234"], ["-", "99"]]
