"""The ``tensorboard`` reporter: run layout, scalars read back through TensorBoard's own data provider, no heavy
imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tensorboard")

from harness_plugins import tensorboard as tb  # noqa: E402

from harness.errors import HarnessError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class StandInReport:
    """The two attributes of :class:`harness.report.analysis.Report` the reporter uses."""

    rows: list[dict[str, Any]]
    dirs: dict[str, Path] = field(default_factory=dict)  # record key -> cell folder

    def cell_dir(self, row: Mapping[str, Any]) -> Path | None:
        return self.dirs.get(row["key"])


def record(key: str, status: str = "ok", **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "key": key,
        "cell_id": f"sst2--lora--tiny--seed{overrides.get('seed', 0)}",
        "task": "sst2",
        "strategy": "lora",
        "model": "tiny",
        "seed": 0,
        "status": status,
        "error": None,
        "metrics": {},
        "primary_metric": None,
        "params": {},
        "timing": {},
        "memory": {},
        "training": {"validation": []},
        "config": {"strategy": {"name": "lora", "options": {"r": 8}}},
        "finished_at": "2026-11-26T05:19:23+00:00",
    }
    if status == "ok":
        row.update(
            metrics={"accuracy": 0.8123456789, "macro_f1": 0.75, "n": 872.0, "flag": True},
            primary_metric="accuracy",
            params={"total": 4_000_000_123, "trainable": 123_456_789, "trainable_pct": 3.0864, "stored_bytes": 987},
            timing={"train_s": 12.5, "eval_s": 1.25, "train_samples_per_s": 40.0, "load_s": 3.0},
            memory={"peak_rss_bytes": 3 * 2**30, "gpu_peak_allocated_bytes": 1536 * 2**20},
            training={"validation": [0.7, 0.8]},
        )
    row.update(overrides)
    return row


def steps_dir(tmp_path: Path, name: str, loss: list[Any], step_s: list[float]) -> Path:
    folder = tmp_path / "cells" / name
    folder.mkdir(parents=True)
    steps = {"clock": "host_clock", "warmup_steps_excluded": 1, "step_s": step_s, "host_step_s": step_s, "loss": loss}
    (folder / "steps.json").write_text(json.dumps(steps))
    return folder


def read_back(logdir: Path) -> tuple[dict[str, dict[str, list[tuple[int, float]]]], dict[str, dict[str, str]], Any]:
    """What TensorBoard's dashboards see: {run: {tag: [(step, value)]}}, scalar descriptions, and text per run."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    ctx = context.RequestContext()
    scalars = provider.read_scalars(ctx, experiment_id="", plugin_name="scalars", downsample=10_000)
    points = {
        run: {tag: [(d.step, d.value) for d in data] for tag, data in tags.items()} for run, tags in scalars.items()
    }
    listing = provider.list_scalars(ctx, experiment_id="", plugin_name="scalars")
    notes = {run: {tag: series.description for tag, series in tags.items()} for run, tags in listing.items()}
    texts = provider.read_tensors(ctx, experiment_id="", plugin_name="text", downsample=10)
    text = {run: tags["cell"][0].numpy.item().decode() for run, tags in texts.items()}
    return points, notes, text


def test_ok_cell_scalars_equal_the_record_and_steps_json(tmp_path):
    row = record("aaaa1111")
    loss, step_s = [2.5, 1.75, None, 0.5], [0.3, 0.2, 0.25, 0.21]
    report = StandInReport([row], {"aaaa1111": steps_dir(tmp_path, "a", loss, step_s)})

    written = tb.TensorBoardReporter().write(report, tmp_path / "tb")

    assert written == [tmp_path / "tb" / "sst2" / "lora" / "tiny" / "seed0" / tb.EVENT_FILE]
    points, notes, text = read_back(tmp_path / "tb")
    run = points["sst2/lora/tiny/seed0"]
    assert run["metrics/accuracy"] == [(0, 0.8123456789)]  # double precision, exact
    assert run["metrics/macro_f1"] == [(0, 0.75)] and run["metrics/n"] == [(0, 872.0)]
    assert "metrics/flag" not in run  # booleans are not numbers
    assert run["cost/train_s"] == [(0, 12.5)] and run["cost/eval_s"] == [(0, 1.25)]
    assert run["cost/train_samples_per_s"] == [(0, 40.0)]
    assert run["cost/peak_gpu_mib"] == [(0, 1536.0)] and "cost/peak_rss_mib" not in run
    assert run["params/trainable"] == [(0, 123_456_789.0)] and run["params/trainable_pct"] == [(0, 3.0864)]
    assert run["params/stored_bytes"] == [(0, 987.0)]
    assert run["train/loss"] == [(1, 2.5), (2, 1.75), (4, 0.5)]  # the None step is left out
    assert run["train/step_s"] == [(i + 1, s) for i, s in enumerate(step_s)]
    assert run["validation/accuracy"] == [(1, 0.7), (2, 0.8)]
    assert notes["sst2/lora/tiny/seed0"]["metrics/accuracy"] == "primary metric of the task"
    assert "**ok**" in text["sst2/lora/tiny/seed0"] and '"r": 8' in text["sst2/lora/tiny/seed0"]


def test_rss_when_no_gpu_and_missing_numbers_are_left_out(tmp_path):
    row = record("bbbb2222", memory={"peak_rss_bytes": 512 * 2**20, "gpu_peak_allocated_bytes": None})
    row["timing"] = {"train_s": None, "eval_s": 4.0}
    row["training"] = {"validation": []}
    report = StandInReport([row])  # no cell folder: no steps.json

    tb.TensorBoardReporter().write(report, tmp_path)

    run = read_back(tmp_path)[0]["sst2/lora/tiny/seed0"]
    assert run["cost/peak_rss_mib"] == [(0, 512.0)] and "cost/peak_gpu_mib" not in run
    assert "cost/train_s" not in run and run["cost/eval_s"] == [(0, 4.0)]
    assert not any(tag.startswith(("train/", "validation/")) for tag in run)


def test_failed_cells_get_text_only_and_skipped_cells_no_run(tmp_path):
    failed = record("cccc3333", status="failed", seed=1, error="CUDA out of memory")
    skipped = record("dddd4444", status="skipped", seed=2, error="task does not support decoder models")
    ok = record("eeee5555", seed=3)
    report = StandInReport([failed, skipped, ok])

    written = tb.TensorBoardReporter().write(report, tmp_path)

    assert [p.parent.name for p in written] == ["seed1", "seed3"]
    assert not (tmp_path / "sst2" / "lora" / "tiny" / "seed2").exists()
    points, _, text = read_back(tmp_path)
    assert set(points) == {"sst2/lora/tiny/seed3"}  # no scalars for failed or skipped cells
    assert "**failed**" in text["sst2/lora/tiny/seed1"] and "CUDA out of memory" in text["sst2/lora/tiny/seed1"]
    assert set(text) == {"sst2/lora/tiny/seed1", "sst2/lora/tiny/seed3"}


def test_run_names_are_path_safe_and_shared_names_get_the_key(tmp_path):
    variant = record("ffff6666", strategy="few_shot@k=3", model="org/model name", task="..")
    first, second = record("1234567890", seed=5), record("abcdef0123", seed=5)
    report = StandInReport([variant, first, second])

    written = tb.TensorBoardReporter().write(report, tmp_path)

    names = [p.parent.relative_to(tmp_path).as_posix() for p in written]
    assert names == [
        "_/few_shot@k=3/org_model_name/seed0",
        "sst2/lora/tiny/seed5-12345678",
        "sst2/lora/tiny/seed5-abcdef01",
    ]
    assert set(read_back(tmp_path)[0]) == set(names)


def test_writing_again_replaces_the_event_file(tmp_path):
    report = StandInReport([record("aaaa1111")], {"aaaa1111": steps_dir(tmp_path, "a", [1.0, 0.5], [0.1, 0.1])})
    reporter = tb.TensorBoardReporter()

    reporter.write(report, tmp_path / "tb")
    written = reporter.write(report, tmp_path / "tb")

    assert [p.name for p in written[0].parent.iterdir()] == [tb.EVENT_FILE]
    assert read_back(tmp_path / "tb")[0]["sst2/lora/tiny/seed0"]["train/loss"] == [(1, 1.0), (2, 0.5)]


def test_unreadable_steps_json_and_render_are_errors(tmp_path):
    folder = tmp_path / "cell"
    folder.mkdir()
    (folder / "steps.json").write_text("{not json")
    with pytest.raises(HarnessError, match="steps.json"):
        tb.TensorBoardReporter().write(StandInReport([record("aaaa1111")], {"aaaa1111": folder}), tmp_path / "tb")
    with pytest.raises(HarnessError, match="--output DIR"):
        tb.TensorBoardReporter().render(StandInReport([]))


def test_registered_always_and_says_what_to_install_without_tensorboard(monkeypatch, tmp_path):
    """Registered with or without the tensorboard package (a plugin that registers nothing is a problem that
    `harness plugins --check` reports); without it, using the reporter is one line saying what to install."""
    registered: list[Any] = []
    tb.harness_register_reporters(registered.append)
    assert [(r.name, r.output) for r in registered] == [("tensorboard", "directory")]
    assert "tuning-harness[tensorboard]" in registered[0].description

    monkeypatch.setattr(tb.importlib.util, "find_spec", lambda name: None)
    registered.clear()
    tb.harness_register_reporters(registered.append)
    assert [r.name for r in registered] == ["tensorboard"]
    with pytest.raises(HarnessError, match=r"needs the tensorboard package: pip install 'tuning-harness\[tensorboard\]'"):
        registered[0].write(StandInReport([record("aaaa1111")]), tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


def test_neither_import_nor_write_loads_torch_or_tensorflow(tmp_path):
    # Empty stand-ins for torch and TensorFlow shadow any real ones: importing either would show in sys.modules
    # (tensorboard's EventFileWriter, for one, imports TensorFlow where it is installed).
    fakes = tmp_path / "fakes"
    for name in ("torch", "tensorflow"):
        (fakes / name).mkdir(parents=True)
        (fakes / name / "__init__.py").write_text("")
    (tmp_path / "rows.json").write_text(json.dumps([record("aaaa1111")]))
    steps_dir(tmp_path, "a", [1.0], [0.1])
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from types import SimpleNamespace\n"
        "import harness_plugins.tensorboard as tb\n"
        "assert 'tensorboard' not in sys.modules, 'tensorboard imported with the plugin'\n"
        f"root = Path({str(tmp_path)!r})\n"
        "report = SimpleNamespace(rows=json.loads((root / 'rows.json').read_text()), cell_dir=lambda row: root / 'cells/a')\n"
        "print(len(tb.TensorBoardReporter().write(report, root / 'tb')))\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'transformers') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fakes), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["1", "[]"]
