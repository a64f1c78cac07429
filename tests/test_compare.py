"""harness compare: two results directories cell by cell, with known significance outcomes."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner

from harness.api.budget import Budget
from harness.api.cells import Cell
from harness.cli import cli
from harness.report import compare as comparing
from harness.report.rows import load_rows
from harness.results.records import Params, Record, Timing, write_json_atomic
from harness.results.store import ResultStore

ITEMS = 200
SEEDS = (0, 1, 2)


def make_cell(strategy: str, seed: int, learning_rate: float = 5e-5, task: str = "sst2") -> Cell:
    return Cell(
        suite="s", task=task, task_type="classification", task_options={"labels": ["neg", "pos"]},
        strategy=strategy, strategy_type=strategy, strategy_options={}, model="m", model_source="tiny",
        model_options={}, model_family="encoder", seed=seed, budget=Budget(learning_rate=learning_rate),
    )


def write_cell(root, cell: Cell, correct: int, *, train_s: float = 10.0, torch: str = "2.13.0",
               status: str = "ok") -> None:
    """A cell whose first ``correct`` of ITEMS predictions are right (the seed shifts which ones by a few)."""
    store = ResultStore(root)
    directory = store.cell_dir(cell)
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(ITEMS):
        reference = "pos" if i % 2 else "neg"
        right = (i + cell.seed * 3) % ITEMS < correct
        rows.append({"id": f"test-{i}", "input": f"text {i}", "reference": reference,
                     "prediction": reference if right else ("neg" if reference == "pos" else "pos")})
    with open(directory / "predictions.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    ok = status == "ok"
    store.write(cell, Record(
        key=cell.key, suite=cell.suite, cell_id=cell.cell_id, task=cell.task, strategy=cell.strategy,
        model=cell.model, seed=cell.seed, status=status, error=None if ok else "RuntimeError: boom",
        metrics={"accuracy": correct / ITEMS} if ok else {}, primary_metric="accuracy",
        params=Params(total=100, trainable=10, trainable_pct=10.0), timing=Timing(train_s=train_s),
        config=cell.config(), env={"torch": torch}, predictions="predictions.jsonl" if ok else None,
    ))


def results(root, accuracy: dict[str, int], **kwargs) -> None:
    for strategy, correct in accuracy.items():
        for seed in SEEDS:
            write_cell(root, make_cell(strategy, seed), correct, **kwargs)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["compare", *args])
    return result.exit_code, result.output


def test_identical_results_differ_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "classification")
    results(tmp_path / "a", {"full": 150, "lora": 120})
    results(tmp_path / "b", {"full": 150, "lora": 120})
    code, out = run(str(tmp_path / "a"), str(tmp_path / "b"), "--format", "json", "--resamples", "1000")
    assert code == 0, out
    data = json.loads(out)
    assert [p["strategy"] for p in data["pairs"]] == ["full", "lora"]
    for pair in data["pairs"]:
        assert pair["delta"] == 0 and pair["p_value"] == 1.0 and pair["p_holm"] == 1.0
        assert pair["method"].startswith("paired approximate randomisation")
        assert pair["config_differences"] == [] and pair["ratios"]["train_s"] == 1.0
    assert data["environment_differences"] == []


def test_a_large_consistent_gap_is_significant_and_marked(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "classification")
    results(tmp_path / "a", {"full": 60, "lora": 100})
    results(tmp_path / "b", {"full": 180, "lora": 101}, train_s=20.0, torch="2.11.0+cu130")
    rows_a, rows_b = load_rows(tmp_path / "a"), load_rows(tmp_path / "b")
    from harness.api.host import PluginHost

    host = PluginHost.load()
    pairs = comparing.compare(rows_a, rows_b, task_lookup=host.task, resamples=2000)
    full, lora = pairs
    assert full.delta == pytest.approx(0.6) and full.test.p_value < 0.001 and full.p_holm < 0.001
    assert full.test.n == ITEMS * len(SEEDS)  # (seed, item) pairs
    # 3 items of 600 differ, all one way: p = P(|sum of 3 random signs| = 3) = 2/8
    assert lora.delta == pytest.approx(0.005) and lora.test.p_value == pytest.approx(0.25, abs=0.03)
    assert full.ratio("train_s") == pytest.approx(2.0)
    text = comparing.render(pairs, "table", a="A", b="B", rows_a=rows_a, rows_b=rows_b, alpha=0.05, resamples=2000)
    full_line = next(line for line in text.splitlines() if line.startswith("full "))
    assert "+0.6000 *" in full_line and "<0.001" in full_line and "2×" in full_line
    lora_line = next(line for line in text.splitlines() if line.startswith("lora "))
    assert "*" not in lora_line
    assert "environment differences: torch: 2.13.0 → 2.11.0+cu130" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_without_per_item_scores_seeds_are_compared_with_welch(tmp_path):
    results(tmp_path / "a", {"full": 100})
    results(tmp_path / "b", {"full": 100})
    pairs = comparing.compare(load_rows(tmp_path / "a"), load_rows(tmp_path / "b"), task_lookup=None)
    assert pairs[0].test.method.startswith("Welch") and pairs[0].test.p_value == 1.0


def test_cells_on_one_side_failed_or_reconfigured_are_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "classification")
    results(tmp_path / "a", {"full": 100, "lora": 100})
    results(tmp_path / "b", {"full": 100})
    for seed in SEEDS:  # B ran lora with another learning rate, and it failed; B alone ran prefix
        write_cell(tmp_path / "b", make_cell("lora", seed, learning_rate=1e-3), 0, status="failed")
        write_cell(tmp_path / "b", make_cell("prefix", seed), 90)
    code, out = run(str(tmp_path / "a"), str(tmp_path / "b"), "--resamples", "500")
    assert code == 0, out
    lines = out.splitlines()
    assert "3 failed" in next(line for line in lines if line.startswith("lora "))
    prefix = next(line for line in lines if line.startswith("prefix "))
    assert prefix.split()[1] == "absent"
    assert "configuration differs for m/sst2/lora: budget.learning_rate" in out


def test_csv_reads_back_with_pandas(tmp_path, monkeypatch):
    pd = pytest.importorskip("pandas")
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "classification")
    results(tmp_path / "a", {"full": 60})
    results(tmp_path / "b", {"full": 180})
    code, out = run(str(tmp_path / "a"), str(tmp_path / "b"), "--format", "csv", "--resamples", "500")
    assert code == 0, out
    frame = pd.read_csv(io.StringIO(out))
    row = frame.iloc[0]
    assert (row.strategy, row.metric, row.n_a, row.n_b) == ("full", "accuracy", 3, 3)
    assert row.mean_a == pytest.approx(0.3) and row.mean_b == pytest.approx(0.9) and row.delta == pytest.approx(0.6)
    assert row.p_holm < 0.01 and row.ratio_train_s == 1.0


@pytest.mark.parametrize("extra, message", [
    (["--metric", "bleu"], "--metric bleu: no record of"),
    (["--format", "latex"], "Invalid value for '--format'"),
])
def test_usage_errors_are_one_line_exit_2(tmp_path, extra, message):
    results(tmp_path / "a", {"full": 60})
    code, out = run(str(tmp_path / "a"), str(tmp_path / "a"), *extra)
    assert code == 2 and message in out and "Traceback" not in out


def test_a_missing_directory_is_one_line(tmp_path):
    results(tmp_path / "a", {"full": 60})
    code, out = run(str(tmp_path / "a"), str(tmp_path / "nope"))
    assert code == 2 and out.strip().splitlines() == [f"error: {tmp_path / 'nope'}: no such results directory"]


def test_predictions_that_do_not_reproduce_the_record_are_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "classification")
    results(tmp_path / "a", {"full": 60})
    results(tmp_path / "b", {"full": 60})
    store = ResultStore(tmp_path / "b")
    cell = make_cell("full", 0)
    record = json.loads(store.record_path(cell).read_text())
    record["metrics"]["accuracy"] = 0.9
    write_json_atomic(store.record_path(cell), record)
    code, out = run(str(tmp_path / "a"), str(tmp_path / "b"), "--format", "json", "--resamples", "500")
    pair = json.loads(out)["pairs"][0]
    assert pair["method"].startswith("Welch")
    assert "saved predictions give accuracy 0.3, the record says 0.9" in pair["note"]


def test_a_changed_hub_model_id_is_a_configuration_difference():
    a = [{"config": {"model": {"options": {"id": "prajjwal1/bert-tiny", "path": "/home/a/data.csv"}}, "seed": 0}}]
    b = [{"config": {"model": {"options": {"id": "prajjwal1/bert-mini", "path": "/home/b/data.csv"}}, "seed": 1}}]
    assert comparing._config_differences(a, b) == ("model.options.id",)  # absolute paths differ between machines
