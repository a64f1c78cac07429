"""End to end through the CLI: the smoke suite runs, reports, resumes after SIGKILL, and is deterministic."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "suites" / "smoke.toml"
STRATEGIES = ("full", "zero_shot", "few_shot", "lora", "adalora", "ia3", "prompt_tuning", "prefix_tuning", "p_tuning",
              "bottleneck")  # fmt: skip
CONTRACT = {"task", "strategy", "model", "seed", "status", "error", "metrics", "primary_metric", "metric_info", "params", "timing",
            "memory", "config", "env"}
TIMING = {"load_s", "train_s", "eval_s", "total_s", "train_samples_per_s", "train_tokens_per_s", "step_s_median"}
MEMORY = {"peak_rss_bytes", "gpu_peak_allocated_bytes", "gpu_peak_reserved_bytes"}

pytestmark = pytest.mark.slow


def harness(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def records(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("cells/*/record.json")}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    started = time.perf_counter()
    result = harness("run", str(SMOKE), "--output", str(out), "--jobs", "2")
    return out, result, time.perf_counter() - started


def test_validate_smoke_is_quick_and_clean():
    result = harness("validate", str(SMOKE))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def recompute(task_type: str, rows: list[dict]) -> tuple[str, float]:
    """The primary metric recomputed from saved predictions with the metric library alone."""
    predictions = [r["prediction"] for r in rows]
    references = [r.get("references") or [r["reference"]] for r in rows]
    if task_type == "classification":
        return "accuracy", sum(r["prediction"] == r["reference"] for r in rows) / len(rows)
    if task_type == "ner":
        from seqeval.metrics import f1_score

        return "f1", f1_score([r["reference"] for r in rows], predictions)
    if task_type == "translation":
        from sacrebleu.metrics import BLEU

        width = max(len(refs) for refs in references)
        streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]
        return "bleu", BLEU(trg_lang="de").corpus_score(predictions, streams).score
    if task_type == "summarization":
        from rouge_score.rouge_scorer import RougeScorer

        scorer = RougeScorer(["rougeL"], use_stemmer=True)
        scores = [max(scorer.score(ref, pred)["rougeL"].fmeasure for ref in refs)
                  for pred, refs in zip(predictions, references, strict=True)]
        return "rougeL", sum(scores) / len(scores)
    raise AssertionError(task_type)


def test_smoke_suite_runs_every_cell(smoke_run):
    out, result, seconds = smoke_run
    assert result.returncode == 0, result.stdout + result.stderr
    assert seconds < 360, f"smoke suite took {seconds:.0f} s"
    found = records(out)
    ran = {k: r for k, r in found.items() if r["status"] != "skipped"}
    assert all(r["status"] == "ok" for r in ran.values()), [r["error"] for r in ran.values()]
    all_types = {"classification", "ner", "translation", "summarization"}
    by_strategy: dict[str, set[str]] = {}
    for r in ran.values():
        by_strategy.setdefault(r["strategy"], set()).add(r["config"]["task"]["type"])
    has_adapters = importlib.util.find_spec("adapters") is not None  # only in .venv-compat
    expected = {s: all_types for s in STRATEGIES if s != "bottleneck" or has_adapters}
    assert by_strategy == expected  # each strategy on every task type
    assert {r["seed"] for r in ran.values() if r["task"] == "sentiment"} == {0, 1}
    skipped = [r for r in found.values() if r["status"] == "skipped"]
    reasons = ("does not support", "needs a decoder or encoder-decoder model", "needs the optional `adapters`")
    assert skipped and all(any(reason in r["error"] for reason in reasons) for r in skipped)
    assert has_adapters or "bottleneck" in {r["strategy"] for r in skipped}
    for name, record in ran.items():
        cell_dir = out / "cells" / name
        assert (cell_dir / "cell.log").exists()
        params, timing = record["params"], record["timing"]
        if record["strategy"] == "full":
            assert params["trainable"] == params["total"] > 0 and params["stored_bytes"] == 4 * params["total"]
        elif record["strategy"] in ("zero_shot", "few_shot"):
            assert params["trainable"] == params["stored_bytes"] == 0 and timing["train_s"] is None
            assert record["evaluation"]["tokens"] > 0
        else:
            assert 0 < params["trainable"] < params["total"] and 0 < params["stored_bytes"] < 4 * params["total"]
        if record["strategy"] not in ("zero_shot", "few_shot"):
            assert timing["train_s"] > 0 and timing["step_count"] > 0
        assert record["memory"]["peak_rss_bytes"] > 50 * 2**20
        assert record["metric_info"]["metric_library"]
        # every metric recomputes from the saved predictions
        rows = [json.loads(line) for line in (cell_dir / "predictions.jsonl").read_text().split("\n") if line]
        metric, value = recompute(record["config"]["task"]["type"], rows)
        assert record["primary_metric"] == metric
        assert value == pytest.approx(record["metrics"][metric], abs=1e-9), name
    sentiment = [r for r in ran.values() if r["task"] == "sentiment" and r["strategy"] == "full"]
    assert all(r["metrics"]["accuracy"] > 0.5 for r in sentiment)  # learns: the majority class is 0.47
    few = [r for r in ran.values() if r["strategy"] == "few_shot"]
    assert all(r["evaluation"]["shots"] is not None and "k=2" in r["metric_info"]["demonstrations"] for r in few)


def test_report_json_contract(smoke_run):
    out, _, _ = smoke_run
    result = harness("report", str(out), "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    rows = data["records"]
    assert rows and all(CONTRACT <= set(row) for row in rows)
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(TIMING <= set(r["timing"]) and MEMORY <= set(r["memory"]) for r in ok)
    assert all({"total", "trainable"} <= set(r["params"]) for r in ok)
    assert all(r["memory"]["gpu_peak_allocated_bytes"] is None for r in ok)  # no GPU here
    table = harness("report", str(out))
    assert table.returncode == 0 and "sentiment" in table.stdout and "aclsum" in table.stdout
    # Every comparison of a table of real cells is a paired test on per-item statistics recomputed from the saved
    # predictions (each task type's item_statistics gives back the recorded metric, or the report says not).
    comparisons = [c for t in data["tables"] for c in (*t["vs_best"], *t["vs_baseline"])]
    assert comparisons
    for comparison in comparisons:
        assert comparison["method"].startswith("paired approximate randomisation"), comparison
        assert 0 < comparison["p_value"] <= 1 and comparison["p_holm"] >= comparison["p_value"]
    tested = {tuple(c["cell"]) for c in comparisons} | {tuple(c["against"]) for c in comparisons}
    assert {task for task, _ in tested} >= {"sentiment", "ner", "aclsum"}


@pytest.mark.parametrize("fmt", ["markdown", "latex", "html", "csv"])
def test_report_formats_and_plots_of_a_real_run(smoke_run, tmp_path, fmt):
    out, _, _ = smoke_run
    target = tmp_path / f"report.{fmt}"
    plots = tmp_path / "plots"
    result = harness("report", str(out), "--format", fmt, "-o", str(target), "--plots", str(plots))
    assert result.returncode == 0, result.stderr
    text = target.read_text(encoding="utf-8")
    assert "sentiment" in text and "full" in text
    written = sorted(p.name for p in plots.iterdir())
    assert any(name.endswith("quality-vs-trainable.svg") for name in written)
    assert any(name.endswith("step-times.png") for name in written)
    assert all((plots / name).stat().st_size > 0 for name in written)


def test_rerun_skips_done_cells(smoke_run):
    out, _, _ = smoke_run
    before = {k: v["finished_at"] for k, v in records(out).items() if v["status"] == "ok"}
    result = harness("run", str(SMOKE), "--output", str(out), "--dry-run")
    assert result.returncode == 0 and "done" in result.stdout.lower()
    result = harness("run", str(SMOKE), "--output", str(out))
    assert result.returncode == 0, result.stderr
    after = {k: v["finished_at"] for k, v in records(out).items() if v["status"] == "ok"}
    assert after == before


def smoke_subset(tmp_path: Path) -> Path:
    """The smoke suite without most strategies and the fixture-based task: the same cells (and cell keys) as the
    reference run for what it keeps, in half the time."""
    text = SMOKE.read_text(encoding="utf-8").replace('"../tests/', f'"{ROOT.as_posix()}/tests/')
    rest = [s for s in STRATEGIES if s not in ("full", "zero_shot", "lora")]
    text += f"\n[[exclude]]\nstrategy = {json.dumps(rest)}\n\n[[exclude]]\ntask = \"en-de\"\n"
    path = tmp_path / "smoke.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_sigkill_mid_run_loses_only_cells_in_flight_and_resume_is_deterministic(smoke_run, tmp_path):
    reference, _, _ = smoke_run
    out = tmp_path / "killed"
    subset = smoke_subset(tmp_path)
    process = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(subset), "--output", str(out),
                                "--jobs", "2"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not [r for r in records(out).values() if r["status"] == "ok"]:
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    survived = {k: v for k, v in records(out).items() if v["status"] == "ok"}
    assert survived, "no cell finished before the kill"
    assert not list(out.glob("cells/*/.record.json.*.tmp")), "a half-written record was left"
    time.sleep(1)
    # the same --jobs as the reference run: CPU threads per cell (cores // jobs) are part of bitwise reproducibility
    result = harness("run", str(subset), "--output", str(out), "--jobs", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    after = records(out)
    assert all(r["status"] in ("ok", "skipped") for r in after.values())
    assert len([r for r in after.values() if r["status"] == "ok"]) == 18  # full, zero_shot and lora cells
    for key, record in survived.items():
        assert after[key]["finished_at"] == record["finished_at"], "a completed cell was run again"
    # same cell, same seed, same machine: identical metrics in two independent runs
    expected = records(reference)
    for key, record in after.items():
        if record["status"] == "ok":
            assert record["metrics"] == expected[key]["metrics"], key
