"""The ``bottleneck`` strategy end to end through ``harness run`` (worker processes, records, saved adapters) on tiny
models for every task type it supports. Needs AdapterHub's ``adapters`` (``.venv-compat``); skips without it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

pytestmark = [
    pytest.mark.adapters,
    pytest.mark.skipif(importlib.util.find_spec("adapters") is None, reason="needs AdapterHub's `adapters`"),
]

SUITE = """
[suite]
name = "bottleneck-e2e"
seeds = [0]

[budget]
max_steps = 8
batch_size = 8
max_length = 48
eval_size = 16

[models.bert]
source = "tiny"
architecture = "bert"
layers = 2
hidden = 64
heads = 2

[models.gpt2]
source = "tiny"
architecture = "gpt2"
layers = 2
hidden = 64
heads = 2

[models.t5]
source = "tiny"
architecture = "t5"
layers = 2
hidden = 64
heads = 2

[tasks.sentiment]
type = "classification"
train = "train.csv"

[tasks.ner]
type = "ner"
train = "{fixtures}/ner/conll2003_iob1.txt"

[tasks.en-de]
type = "translation"
source_lang = "en"
target_lang = "de"
train = "{fixtures}/t2t/smoke.en"
train_target = "{fixtures}/t2t/smoke.de"
max_new_tokens = 8

[tasks.summaries]
type = "summarization"
train = "docs.jsonl"
max_new_tokens = 8

[strategies.bottleneck]

[[exclude]]
task = ["sentiment", "ner"]
model = ["gpt2", "t5"]

[[exclude]]
task = "en-de"
model = "t5"

[[exclude]]
task = "summaries"
model = "gpt2"
"""


def test_bottleneck_cells_run_through_the_cli_and_save_their_adapters(tmp_path):
    rows = ["text,label"] + [f"text {i} is {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}" for i in range(40)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    docs = [{"document": f"document {i} says {i} things about cats", "summary": f"{i} things"} for i in range(40)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE.replace("{fixtures}", FIXTURES.as_posix()), encoding="utf-8")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(suite), "--output", str(out), "--jobs", "2",
         "--save-artifacts"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    records = {p.parent: json.loads(p.read_text()) for p in out.glob("cells/*/record.json")}
    ran = {cell_dir: r for cell_dir, r in records.items() if r["status"] != "skipped"}
    assert {r["config"]["task"]["type"] for r in ran.values()} == {"classification", "ner", "translation", "summarization"}
    for cell_dir, record in ran.items():
        assert record["status"] == "ok", record["error"]
        params = record["params"]
        assert 0 < params["trainable"] < params["total"] and params["stored_bytes"] > 0
        assert record["env"]["adapters"] and record["env"]["transformers"].startswith("4.57")
        assert (cell_dir / "artifact" / "adapter.safetensors").is_file()
        assert params["artifact_bytes"] == sum(p.stat().st_size for p in (cell_dir / "artifact").rglob("*") if p.is_file())
