"""Bad input through the real command line: one clear line naming file and place, exit 2, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSV = "train.csv"

BASE = """
[suite]
name = "bad"
[models.tiny]
source = "tiny"
[tasks.sentiment]
type = "classification"
train = "train.csv"
[strategies.full]
"""


def harness(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture
def suite_dir(tmp_path):
    rows = ["text,label"] + [f"text number {i},{'pos' if i % 2 else 'neg'}" for i in range(40)]
    (tmp_path / CSV).write_text("\n".join(rows) + "\n")
    return tmp_path


def write(suite_dir: Path, text: str) -> Path:
    path = suite_dir / "suite.toml"
    path.write_text(textwrap.dedent(text))
    return path


def assert_usage_error(result: subprocess.CompletedProcess, *fragments: str) -> list[str]:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines, result.stderr
    text = "\n".join(lines)
    for fragment in fragments:
        assert fragment in text, text
    return lines


def test_validate_accepts_the_shipped_suites():
    for name in ("smoke", "nlp"):
        result = harness("validate", f"suites/{name}.toml")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"suites/{name}.toml: ok")


def test_validate_imports_no_torch_and_is_quick():
    probe = (
        "import sys, time\n"
        "from harness.cli import cli\n"
        "started = time.perf_counter()\n"
        "try:\n    cli(['validate', 'suites/smoke.toml'])\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'sklearn', 'pandas') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "print(time.perf_counter() - started)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip().splitlines()[-1]) < 5.0  # well under a second on an idle machine


def test_malformed_toml(suite_dir):
    path = write(suite_dir, "[suite\nname = 'x'\n")
    (line,) = assert_usage_error(harness("validate", str(path)), f"{path}: malformed TOML")
    assert "line 1" in line


def test_unknown_plugin_misspelled_key_wrong_type_and_missing_files_all_at_once(suite_dir):
    path = write(suite_dir, BASE.replace('type = "classification"', 'type = "clasification"')
                 .replace('source = "tiny"', 'source = "tiny"\nlayer = 2\nhidden = "64"')
                 + '[models.mine]\nsource = "local"\npath = "no/such/model"\n')
    lines = assert_usage_error(
        harness("validate", str(path)),
        "tasks.sentiment.type: unknown task 'clasification' (did you mean 'classification'?)",
        "models.tiny.layer: unknown key (did you mean 'layers'?)",
        "models.tiny.hidden: expected an integer, got str '64'",
        "models.mine.path: file not found",
    )
    assert len(lines) == 4
    assert all(line.startswith(f"error: {path}:") for line in lines)


def test_missing_data_file_and_missing_column(suite_dir):
    path = write(suite_dir, BASE.replace('train = "train.csv"', 'train = "nope.csv"'))
    assert_usage_error(harness("validate", str(path)), "tasks.sentiment.train: file not found")
    path = write(suite_dir, BASE.replace('train = "train.csv"', 'train = "train.csv"\ntext_column = "tweet"'))
    assert_usage_error(harness("validate", str(path)), "tasks.sentiment.text_column", "tweet")


def test_hub_id_while_offline_fails_within_seconds(suite_dir):
    path = write(suite_dir, BASE.replace('source = "tiny"', 'source = "hub"\nid = "bert-base-cased"'))
    started = time.perf_counter()
    result = harness("validate", str(path), env={"HF_HUB_OFFLINE": "1"})
    assert time.perf_counter() - started < 10
    assert_usage_error(result, "models.tiny", "'bert-base-cased' is not in the local Hugging Face cache")


def test_empty_matrix_after_exclusions(suite_dir):
    path = write(suite_dir, BASE + '[[exclude]]\nmodel = "*"\n')
    assert_usage_error(harness("validate", str(path)), "expands to no cells")


def test_run_validates_first_and_creates_nothing(suite_dir):
    path = write(suite_dir, BASE.replace('[strategies.full]', '[strategies.ful]'))
    out = suite_dir / "out"
    assert_usage_error(harness("run", str(path), "--output", str(out)), "unknown strategy 'ful'")
    assert not out.exists()


def test_model_path_that_is_a_file_and_an_unwritable_report(suite_dir):
    (suite_dir / "weights.bin").write_text("")
    path = write(suite_dir, BASE.replace('source = "tiny"', 'source = "local"\npath = "weights.bin"'))
    assert_usage_error(harness("validate", str(path)), "models.tiny.path", "config.json")
    from helpers import make_cell

    from harness.results.records import cell_record
    from harness.results.store import ResultStore

    cell = make_cell()
    ResultStore(suite_dir / "results").write(cell, cell_record(cell, "ok", metrics={"accuracy": 0.5}))
    target = suite_dir / "no" / "such" / "r.txt"
    assert_usage_error(harness("report", str(suite_dir / "results"), "-o", str(target)), f"{target}: cannot write")


def test_unwritable_output_directory(suite_dir):
    path = write(suite_dir, BASE)
    blocker = suite_dir / "a-file"
    blocker.write_text("")
    assert_usage_error(harness("run", str(path), "--output", str(blocker / "out")), "output directory is not writable")


def test_plugin_failing_at_import_is_a_warning_and_named_when_needed(suite_dir, tmp_path):
    site = tmp_path / "site"
    info = site / "broken_tasks-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-tasks\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[harness]\nbroken = broken_tasks_mod\n")
    (site / "broken_tasks_mod.py").write_text("raise ImportError('needs a library that is not installed')\n")
    env = {"PYTHONPATH": str(site)}
    ok = harness("validate", str(write(suite_dir, BASE)), env=env)
    assert ok.returncode == 0 and "warning: plugin 'broken' failed to import" in ok.stderr
    path = write(suite_dir, BASE.replace('type = "classification"', 'type = "qa"'))
    assert_usage_error(harness("validate", str(path), env=env),
                       "unknown task 'qa'", "plugins that failed to load: 'broken' (ImportError: needs a library")


@pytest.mark.slow
def test_a_cell_that_raises_is_recorded_and_the_run_goes_on(suite_dir):
    """A real worker: one strategy fails when the cell applies it (LoRA on modules the model does not have: only the
    loaded model can tell; bad data is caught earlier, by validation)."""
    text = BASE + textwrap.dedent("""
        [strategies.bad-lora]
        type = "lora"
        target_modules = ["no_such_module"]
        [budget]
        max_steps = 2
        batch_size = 8
        eval_size = 8
    """)
    path = write(suite_dir, text)
    out = suite_dir / "out"
    result = harness("run", str(path), "--output", str(out), "--jobs", "2")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    records = {p.parent.name.split("--")[1]: json.loads(p.read_text()) for p in out.glob("cells/*/record.json")}
    assert records["full"]["status"] == "ok"
    bad = records["bad-lora"]
    assert bad["status"] == "failed" and "strategies.bad-lora: peft cannot apply LoraConfig" in bad["error"]
