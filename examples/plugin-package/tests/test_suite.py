"""The example suite through the command line, as a user runs it: validate, run (every cell in its own worker
process), report."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[1] / "suites" / "example.toml"


def test_validate(example_plugin, harness_cli):
    done = subprocess.run([*harness_cli, "validate", str(SUITE)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 cells (0 skipped" in done.stdout


@pytest.mark.slow
def test_run_and_report(example_plugin, harness_cli, tmp_path):
    out = tmp_path / "results"
    run = subprocess.run(
        [*harness_cli, "run", str(SUITE), "--output", str(out), "--jobs", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    records = [json.loads(p.read_text()) for p in sorted(out.glob("cells/*/record.json"))]
    assert [(r["task"], r["strategy"], r["status"]) for r in records] == [
        ("scores", "bias_tuning", "ok"),
        ("scores", "full", "ok"),
        ("sentiment", "bias_tuning", "ok"),
        ("sentiment", "full", "ok"),
        ("tags", "bias_tuning", "ok"),
        ("tags", "full", "ok"),
    ], [r["error"] for r in records]
    metrics = {(r["task"], r["strategy"]): r["metrics"] for r in records}
    assert metrics[("scores", "full")]["pearson"] > 0.5
    assert metrics[("sentiment", "full")]["accuracy"] > 0.5
    assert metrics[("tags", "full")]["accuracy"] > 0.6
    assert metrics[("tags", "full")]["unaligned_words"] == 0  # [tasks.tags.budget] max_length = 64 keeps every word
    report = subprocess.run(
        [*harness_cli, "report", str(out), "--format", "json"], capture_output=True, text=True, timeout=120
    )
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert len(data["records"]) == 6
    # bias_tuning against full, paired item by item: the tasks' per-item statistics of Pearson's r and of accuracy
    [table] = data["tables"]
    methods = {tuple(c["cell"]): c["method"] for c in table["vs_baseline"]}
    assert methods[("scores", "bias_tuning")].startswith("paired approximate randomisation")
    assert methods[("sentiment", "bias_tuning")].startswith("paired approximate randomisation")
    assert methods[("tags", "bias_tuning")].startswith("paired approximate randomisation")
