"""The cell runtime: run_cell in-process, the worker protocol (in-process and as a subprocess), env info, `full`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import runtime_toys as rt
import torch

from harness.api.budget import Budget
from harness.api.cells import Cell
from harness.api.host import EXTRA_ENV, LOAD_ENV, PluginHost
from harness.errors import HarnessError
from harness.results.records import Record, read_record
from harness.worker.cell import count_params, run_cell, write_predictions
from harness.worker.envinfo import collect, cpu_model, git_commit
from harness.worker.main import ProgressFile, main
from harness.worker.oom import describe_error

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
HEAD = 32 * 2 + 2  # classifier: hidden 32 -> 2 labels


def make_cell(strategy: str = "full", seed: int = 0, strategy_options=None, **budget) -> Cell:
    values = dict(epochs=2, batch_size=16, learning_rate=5e-3, eval_batch_size=32, warmup_steps_excluded=1)
    values.update(budget)
    return Cell(
        suite="runtime",
        task="toy",
        task_type="toy-cls",
        task_options={"n_train": 64, "n_eval": 32},
        strategy=strategy,
        strategy_type=strategy,
        strategy_options=strategy_options
        if strategy_options is not None
        else ({"freeze_embeddings": False, "freeze_layers": 0} if strategy == "full" else {}),
        model="tiny",
        model_source="toy-bert",
        model_options={"dropout": 0.1},
        model_family="encoder",
        seed=seed,
        budget=Budget(**values),
    )


@pytest.fixture
def host(monkeypatch) -> PluginHost:
    """The real `full` entry point plus the toy plugin, nothing else."""
    monkeypatch.setenv(LOAD_ENV, "full")
    monkeypatch.delenv(EXTRA_ENV, raising=False)
    return PluginHost.load(extra=[("toyrt", rt)])


def test_run_cell_returns_a_complete_record(host, tmp_path):
    phases = []
    cell = make_cell(epochs=4)
    record = run_cell(cell, host, tmp_path, "cpu", "a1", suite_sha256="abc", progress=lambda *a: phases.append(a))
    assert record.status == "ok" and record.error is None
    assert (record.key, record.cell_id, record.task, record.strategy, record.seed) == (
        cell.key,
        cell.cell_id,
        "toy",
        "full",
        0,
    )
    assert record.primary_metric == "accuracy" and record.metrics["accuracy"] >= 0.9
    model = rt.tiny_bert()
    total = sum(p.numel() for p in model.parameters())
    assert record.params.total == record.params.trainable == total
    assert record.params.trainable_pct == 100.0 and record.params.head == HEAD
    t = record.timing
    assert all(
        v is not None and v > 0
        for v in (
            t.load_s,
            t.train_s,
            t.eval_s,
            t.total_s,
            t.train_samples_per_s,
            t.train_tokens_per_s,
            t.eval_samples_per_s,
            t.eval_tokens_per_s,
            t.step_s_median,
            t.step_s_p90,
            t.step_s_mean,
        )
    )
    assert t.total_s >= t.load_s + t.train_s + t.eval_s
    assert (t.step_count, t.warmup_steps_excluded, t.step_clock) == (15, 1, "host_clock")
    assert record.training.steps == 16 and record.training.samples == 256 and record.training.epochs == 4.0
    assert record.training.tokens == 4 * sum(len(e["input_ids"]) for e in rt.synthetic(64, 0))
    assert record.training.loss_last < record.training.loss_first
    assert record.memory.peak_rss_bytes > 50 * 2**20
    assert record.memory.gpu_peak_allocated_bytes is None and record.memory.gpu_peak_reserved_bytes is None
    assert record.config == cell.config()
    assert record.env["attempt"] == "a1" and record.env["seed"] == 0 and record.env["suite_sha256"] == "abc"
    assert record.env["plugins"].keys() == {"full", "toyrt"}
    assert record.log == "cell.log" and record.predictions == "predictions.jsonl"
    assert record.started_at.endswith("+00:00") and record.finished_at >= record.started_at
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 32 and list(rows[0]) == ["id", "input", "prediction", "reference"]
    steps = json.loads((tmp_path / "steps.json").read_text())
    assert len(steps["step_s"]) == len(steps["loss"]) == 16 and steps["clock"] == "host_clock"
    assert phases[0] == ("load", 0, 1) and ("train", 16, 16) in phases and phases[-1] == ("eval", 1, 1)
    assert Record.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_same_cell_same_seed_gives_identical_metrics_on_cpu(host, tmp_path):
    a = run_cell(make_cell(seed=1), host, tmp_path / "a", "cpu", "x")
    b = run_cell(make_cell(seed=1), host, tmp_path / "b", "cpu", "y")
    c = run_cell(make_cell(seed=2), host, tmp_path / "c", "cpu", "z")
    assert a.metrics == b.metrics and a.training.loss_last == b.training.loss_last
    assert (tmp_path / "a/predictions.jsonl").read_text() == (tmp_path / "b/predictions.jsonl").read_text()
    assert c.training.loss_last != a.training.loss_last


def test_full_strategy_freezing_and_eval_only_strategies(host, tmp_path):
    frozen = run_cell(
        make_cell(strategy_options={"freeze_embeddings": True, "freeze_layers": 1}, max_steps=2),
        host,
        tmp_path / "f",
        "cpu",
        "a",
    )
    model = rt.tiny_bert()
    embeddings = sum(p.numel() for p in model.bert.embeddings.parameters())
    layer = sum(p.numel() for p in model.bert.encoder.layer[0].parameters())
    assert frozen.params.trainable == frozen.params.total - embeddings - layer
    with pytest.raises(HarnessError, match="freeze_layers: 3 exceeds the model's layer count"):
        run_cell(
            make_cell(strategy_options={"freeze_embeddings": False, "freeze_layers": 3}),
            host,
            tmp_path / "g",
            "cpu",
            "a",
        )
    untrained = run_cell(make_cell("toy-eval-only"), host, tmp_path / "e", "cpu", "a")
    assert untrained.status == "ok" and untrained.training.steps == 0 and untrained.timing.train_s is None
    assert untrained.timing.eval_s > 0 and not (tmp_path / "e/steps.json").exists()


def test_save_artifacts_writes_safetensors(host, tmp_path):
    record = run_cell(make_cell(max_steps=1), host, tmp_path, "cpu", "a", save_artifacts=True)
    assert (tmp_path / "artifact" / "model.safetensors").is_file()
    assert (tmp_path / "artifact" / "config.json").is_file()
    on_disk = sum(p.stat().st_size for p in (tmp_path / "artifact").rglob("*") if p.is_file())
    assert record.params.artifact_bytes == on_disk > record.params.stored_bytes > 0
    assert record.params.stored_bytes == 4 * record.params.trainable  # float32 weights, every one trained


def test_stored_bytes_count_trainable_weights_and_skip_the_frozen_original_of_a_peft_head():
    model = rt.tiny_bert()
    for p in model.bert.parameters():
        p.requires_grad_(False)
    model.classifier.original_module = torch.nn.Linear(model.classifier.in_features, 2)  # as PEFT keeps it
    for p in model.classifier.original_module.parameters():
        p.requires_grad_(False)
    params = count_params(model, ("classifier.",))
    assert params.trainable == HEAD and params.stored_bytes == 4 * HEAD
    assert params.total == sum(p.numel() for n, p in model.named_parameters() if ".original_module." not in n)


def test_head_parameters_are_found_under_wrapper_prefixes():
    inner = rt.tiny_bert()
    wrapper = torch.nn.Module()
    wrapper.base_model = torch.nn.Module()
    wrapper.base_model.model = inner
    for p in inner.bert.parameters():
        p.requires_grad_(False)
    params = count_params(wrapper, ("classifier.",))
    assert params.head == params.trainable == HEAD
    assert params.total == sum(p.numel() for p in inner.parameters())


def test_predictions_file_has_one_row_per_line_for_any_line_reader(tmp_path):
    text = "tweet\x85with\u2028odd\nbreaks é"
    write_predictions(tmp_path / "p.jsonl", [{"extra": 1, "reference": 0, "prediction": 1, "input": text, "id": "a"}])
    lines = (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and "é" in lines[0]
    row = json.loads(lines[0])
    assert list(row) == ["id", "input", "prediction", "reference", "extra"] and row["input"] == text


def write_spec(cell_dir: Path, cell: Cell, attempt: str = "f00d") -> Path:
    spec = {
        "cell": cell.to_json(),
        "attempt": attempt,
        "device": "cpu",
        "out_dir": str(cell_dir),
        "save_artifacts": False,
        "suite_path": "suite.toml",
        "suite_sha256": "123",
    }
    cell_dir.mkdir(parents=True, exist_ok=True)
    (cell_dir / "spec.json").write_text(json.dumps(spec))
    return cell_dir / "spec.json"


def test_worker_runs_an_ok_cell_in_process(monkeypatch, tmp_path):
    monkeypatch.setenv(LOAD_ENV, "full")
    monkeypatch.setenv(EXTRA_ENV, "toyrt=runtime_toys")
    assert main([str(write_spec(tmp_path, make_cell(max_steps=2)))]) == 0
    record = read_record(tmp_path / "record.json")
    assert record.status == "ok" and record.env["attempt"] == "f00d" and record.env["suite_sha256"] == "123"
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["phase"] == "eval" and progress["done"] == progress["total"] == 1


def test_worker_records_a_failing_plugin_import_cleanly(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(LOAD_ENV, "full")
    monkeypatch.setenv(EXTRA_ENV, "broken=no_such_module_for_harness_tests")
    assert main([str(write_spec(tmp_path, make_cell()))]) == 1
    record = read_record(tmp_path / "record.json")
    assert record.status == "failed" and record.error.startswith("HarnessError: unknown task 'toy-cls'")
    assert "no_such_module_for_harness_tests" in record.error
    assert record.env["attempt"] == "f00d" and record.timing.total_s is not None
    assert "Traceback" in capsys.readouterr().err


def test_worker_subprocess_records_a_raising_strategy(tmp_path):
    spec = write_spec(tmp_path, make_cell("toy-raise"), attempt="beef")
    env = {
        **os.environ,
        LOAD_ENV: "",
        EXTRA_ENV: "toyrt=runtime_toys",
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "CUDA_VISIBLE_DEVICES": "",
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "harness.worker", str(spec)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    record = read_record(tmp_path / "record.json")
    assert record.status == "failed" and record.error == "RuntimeError: strategy exploded"
    assert record.env["attempt"] == "beef" and record.key == make_cell("toy-raise").key
    assert record.timing.total_s > 0 and record.timing.load_s is None and record.memory.peak_rss_bytes > 0
    assert "Traceback" in done.stderr and "strategy exploded" in done.stderr
    assert json.loads((tmp_path / "progress.json").read_text())["phase"] == "load"


def test_out_of_memory_errors_are_named():
    assert describe_error(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")).startswith(
        "out of memory: CUDA out of memory"
    )
    assert describe_error(RuntimeError("CUDA error: out of memory\nmore")) == "out of memory: CUDA error: out of memory"
    assert describe_error(ValueError("bad")) == "ValueError: bad"


def test_progress_file_is_throttled_but_shows_phase_changes(tmp_path):
    path = tmp_path / "progress.json"
    progress = ProgressFile(path, interval_s=60)
    progress("train", 1, 10)
    progress("train", 2, 10)  # within the interval: not written
    assert json.loads(path.read_text())["done"] == 1
    progress("train", 10, 10)  # the end of a phase always shows
    assert json.loads(path.read_text())["done"] == 10
    progress("eval", 0, 1)
    data = json.loads(path.read_text())
    assert data["phase"] == "eval" and abs(data["updated"] - time.time()) < 60


def test_envinfo_collects_versions_hardware_and_git(host, tmp_path):
    env = collect(host, suite_sha256="s", seed=7, device="cpu")
    assert env["torch"] == torch.__version__ and env["transformers"] and env["python"]
    assert env["plugins"]["full"] is not None and env["device_name"] == "CPU"
    assert env["cpu"] == cpu_model() and env["cpu_count"] >= 1 and env["hostname"]
    assert (env["seed"], env["suite_sha256"]) == (7, "s")
    assert git_commit(tmp_path) is None
    commit = git_commit(ROOT)
    assert commit is None or len(commit) == 40


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_run_cell_on_a_real_gpu(host, tmp_path):
    record = run_cell(make_cell(epochs=4), host, tmp_path, "cuda", "g1")
    assert record.status == "ok" and record.metrics["accuracy"] >= 0.9
    assert record.timing.step_clock == "cuda_events" and record.timing.step_s_median > 0
    memory = record.memory
    # other in-process GPU tests may have left tensors allocated; a worker process starts at 0
    assert memory.gpu_start_allocated_bytes is not None and memory.gpu_start_allocated_bytes >= 0
    assert memory.gpu_peak_reserved_bytes >= memory.gpu_peak_allocated_bytes > memory.gpu_start_allocated_bytes
    assert record.env["device_name"] != "CPU" and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    steps = json.loads((tmp_path / "steps.json").read_text())
    assert len(steps["step_s"]) == len(steps["host_step_s"]) == 16
