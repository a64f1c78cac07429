"""Part of a suite from the command line: ``--only`` and ``--exclude`` for ``harness run`` (dry runs included) and
``harness report``, with ``[[exclude]]``'s syntax and matching."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from test_cli import BASE, assert_usage_error, harness, suite_dir, write  # noqa: F401 (suite_dir: a fixture)
from test_report import results, write_results  # noqa: F401 (results: a fixture)

from harness.cli import cli
from harness.errors import HarnessError
from harness.planning.select import Selection, parse_rule

SUITE = BASE.replace('name = "bad"', 'name = "bad"\nseeds = [0, 1]') + """
[models.tiny-gpt2]
source = "tiny"
architecture = "gpt2"
[strategies.lora]
[strategies.few_shot]
k = [0, 2]
"""


def test_rules_parse_like_exclude_tables():
    assert parse_rule("task=ner,strategy=lora*", "--only") == {"task": ["ner"], "strategy": ["lora*"]}
    assert parse_rule("task=ner, task=sst2,seed=3", "--only") == {"task": ["ner", "sst2"], "seed": [3]}
    for text, message in [("task", "expected KEY=PATTERN"), ("tsk=ner", "unknown key 'tsk' (did you mean 'task'?)"),
                          ("seed=x", "seed must be an integer, got 'x'"), ("task=", "expected KEY=PATTERN")]:
        with pytest.raises(HarnessError, match=re.escape(message)):
            parse_rule(text, "--only")


def test_only_any_rule_and_exclude_none():
    selection = Selection.parse(["task=ner,strategy=lora*", "model=minilm"], ["seed=2"])
    assert selection.keeps("ner", "lora", "bert", 0) and selection.keeps("sst2", "full", "minilm", 1)
    assert not selection.keeps("sst2", "full", "bert", 0)  # matches no --only rule
    assert not selection.keeps("ner", "lora", "bert", 2)  # excluded
    variants = Selection.parse(["strategy=few_shot"])
    assert variants.keeps("t", "few_shot@k=4", "m", 0)  # the declared name selects every variant
    assert not Selection.parse(["strategy=few_shot@k=8"]).keeps("t", "few_shot@k=4", "m", 0)
    assert not Selection() and Selection().keeps("t", "s", "m", 0)


def test_dry_run_prints_only_the_selected_cells(suite_dir):  # noqa: F811
    path = write(suite_dir, SUITE)
    result = harness("run", str(path), "--dry-run", "--only", "strategy=few_shot,model=tiny-gpt2",
                     "--exclude", "seed=1", "-o", str(suite_dir / "out"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    head = result.stdout.splitlines()[0]
    assert "16 cells, 2 selected (--only strategy=few_shot,model=tiny-gpt2 --exclude seed=1)" in head, head
    listed = [line.strip() for line in result.stdout.splitlines() if line.startswith("  ")]
    assert sorted(listed) == ["sentiment--few_shot_k=0--tiny-gpt2--seed0", "sentiment--few_shot_k=2--tiny-gpt2--seed0"]
    assert not (suite_dir / "out").exists()


def test_bad_or_empty_selections_are_one_line_usage_errors(suite_dir):  # noqa: F811
    path = write(suite_dir, SUITE)
    assert_usage_error(harness("run", str(path), "--dry-run", "--only", "tsk=ner"),
                       "--only 'tsk=ner': unknown key 'tsk' (did you mean 'task'?)")  # fmt: skip
    assert_usage_error(harness("run", str(path), "--dry-run", "--only", "model=nothing*"),
                       "--only model=nothing*: selects none of the 16 cells of")  # fmt: skip


def test_report_only_reports_the_selected_cells(results, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "reporters")
    every = CliRunner().invoke(cli, ["report", str(results), "--format", "json", "--resamples", "100"])
    some = CliRunner().invoke(cli, ["report", str(results), "--format", "json", "--resamples", "100",
                                    "--only", "model=minilm", "--exclude", "strategy=lora"])  # fmt: skip
    assert every.exit_code == 0 and some.exit_code == 0, some.output
    everything, selected = json.loads(every.stdout)["records"], json.loads(some.stdout)["records"]
    assert {(r["model"], r["strategy"]) for r in selected} == {
        (r["model"], r["strategy"]) for r in everything if r["model"] == "minilm" and r["strategy"] != "lora"
    }
    assert selected and len(selected) < len(everything)
    none = CliRunner().invoke(cli, ["report", str(results), "--only", "task=nothing"])
    assert none.exit_code == 2 and "no records found" in none.output
