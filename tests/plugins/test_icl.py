"""zero_shot and few_shot: options, k lists expanded into one cell per k, encoder cells skipped with the reason, the
support matrix, and whole cells on a tiny GPT-2 that train nothing, store nothing and record their prompt cost."""

from __future__ import annotations

import json
from pathlib import Path

import helpers
import pytest
from harness_plugins.icl import FewShot, ZeroShot

from harness.api.budget import Budget
from harness.api.host import PluginHost
from harness.api.options import check_options
from harness.planning.plan import plan
from harness.planning.suite import load_suite

SUITE = """
[suite]
name = "icl"
seeds = [0, 1]

[models.bert]
source = "tiny"
architecture = "bert"

[models.gpt2]
source = "tiny"
architecture = "gpt2"

[tasks.sentiment]
type = "classification"
train = "train.csv"

[strategies.zero_shot]

[strategies.few_shot]
k = [0, 2, 8]
"""


@pytest.fixture
def host(monkeypatch) -> PluginHost:
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "sources,classification,icl,full")
    return PluginHost.load()


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    rows = ["text,label"] + [f"text {i} is {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}" for i in range(24)]
    path = tmp_path / "train.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_k_takes_an_integer_or_a_list_of_them_at_least_zero():
    assert not check_options(FewShot.options, {"k": 4}, "strategies.f")[1]
    assert not check_options(FewShot.options, {"k": [0, 4]}, "strategies.f")[1]
    (bad,) = check_options(FewShot.options, {"k": "4"}, "strategies.f")[1]
    assert str(bad) == "strategies.f.k: expected an integer or a list of integers, got str '4'"
    (low,) = check_options(FewShot.options, {"k": [2, -1]}, "strategies.f")[1]
    assert "must be at least 0, got -1" in str(low)


def test_a_k_list_plans_one_cell_per_k_and_encoders_are_skipped_with_the_reason(tmp_path, tiny_csv, host):
    (tmp_path / "s.toml").write_text(SUITE, encoding="utf-8")
    cells = plan(load_suite(tmp_path / "s.toml", host), host)
    gpt2 = [c for c in cells if c.model == "gpt2" and c.seed == 0]
    assert [c.strategy for c in gpt2] == ["zero_shot", "few_shot@k=0", "few_shot@k=2", "few_shot@k=8"]
    assert [c.strategy_options.get("k") for c in gpt2] == [None, 0, 2, 8]
    assert len({c.key for c in gpt2}) == 4 and all(c.skip_reason is None for c in gpt2)
    bert = [c for c in cells if c.model == "bert"]
    assert len(bert) == 8 and all("needs a decoder or encoder-decoder model" in c.skip_reason for c in bert)
    excluded = SUITE + '\n[[exclude]]\nstrategy = "few_shot@k=8"\n\n[[exclude]]\nstrategy = "zero_shot"\nseed = 1\n'
    (tmp_path / "x.toml").write_text(excluded, encoding="utf-8")
    names = [(c.strategy, c.seed) for c in plan(load_suite(tmp_path / "x.toml", host), host) if c.model == "gpt2"]
    assert names == [("zero_shot", 0), ("few_shot@k=0", 0), ("few_shot@k=0", 1), ("few_shot@k=2", 0),
                     ("few_shot@k=2", 1)]  # fmt: skip
    (tmp_path / "all.toml").write_text(SUITE + '\n[[exclude]]\nstrategy = "few_shot"\n', encoding="utf-8")
    assert {c.strategy for c in plan(load_suite(tmp_path / "all.toml", host), host)} == {"zero_shot"}


def test_the_support_matrix_lists_every_strategy_task_and_family_with_reasons(host):
    from harness.api.inventory import plugin_inventory, render_inventory

    inventory = plugin_inventory(host)
    support = {(r["strategy"], r["task"], r["family"]): r for r in inventory["support"]}
    assert support[("few_shot", "classification", "decoder")]["supported"]
    assert support[("full", "classification", "encoder")]["supported"]
    encoder = support[("zero_shot", "classification", "encoder")]
    assert not encoder["supported"] and "encoder has no prompt" in encoder["reason"]
    text = render_inventory(inventory)
    assert "support matrix" in text and "encoder has no prompt" in text
    assert json.loads(json.dumps(inventory))["support"] == inventory["support"]


def run_icl(tmp_path: Path, tiny_csv: Path, host: PluginHost, strategy, options: dict, seed: int = 0):
    from harness_plugins.classification import ClassificationTask
    from harness_plugins.sources import TinySource

    from harness.worker.cell import run_cell

    task_options, problems = check_options(ClassificationTask.options, {"train": str(tiny_csv)}, "tasks.t")
    model_options, more = check_options(
        TinySource.options, {"architecture": "gpt2", "layers": 1, "hidden": 32, "heads": 2}, "models.m"
    )
    assert not problems + more
    cell = helpers.make_cell(
        task_options=task_options, model_options=model_options, model_family="decoder", seed=seed,
        strategy=strategy.name, strategy_type=strategy.name, strategy_options=options,
        budget=Budget(max_length=96, eval_batch_size=8),
    )  # fmt: skip
    out = tmp_path / f"{strategy.name}-{seed}"
    record = run_cell(cell, host, out, "cpu", "a", save_artifacts=True)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    return record, rows, out


def test_few_shot_cells_train_nothing_store_nothing_and_record_their_prompt_cost(tmp_path, tiny_csv, host):
    zero, zero_rows, _ = run_icl(tmp_path, tiny_csv, host, ZeroShot(), {})
    few, rows, out = run_icl(tmp_path, tiny_csv, host, FewShot(), {"k": 3})
    for record in (zero, few):
        assert record.status == "ok", record.error
        assert record.params.trainable == 0 and record.params.stored_bytes == 0 and record.params.total > 0
        assert record.training.steps == 0 and record.timing.train_s is None and record.timing.eval_s > 0
        assert record.params.artifact_bytes is None and not (out / "artifact").exists()
    assert few.evaluation.shots == 3.0 and zero.evaluation.shots is None
    assert few.evaluation.samples == zero.evaluation.samples == len(rows)
    assert few.evaluation.tokens > zero.evaluation.tokens
    assert few.evaluation.tokens_per_sample == pytest.approx(few.evaluation.tokens / few.evaluation.samples)
    assert "k=3" in few.metric_info["demonstrations"] and "demonstrations" not in zero.metric_info
    for row in rows:
        assert row["shots"] == 3 and len(row["demonstrations"]) == 3 and row["id"] not in row["demonstrations"]
        assert row["prompt"].count("\n\n") == 3
    assert "shots" not in zero_rows[0]
    again, same, _ = run_icl(tmp_path / "again", tiny_csv, host, FewShot(), {"k": 3})
    other, different, _ = run_icl(tmp_path, tiny_csv, host, FewShot(), {"k": 3}, seed=1)
    assert [r["demonstrations"] for r in same] == [r["demonstrations"] for r in rows]
    assert [r["demonstrations"] for r in different] != [r["demonstrations"] for r in rows]
    assert again.metrics == few.metrics


def test_an_empty_k_list_is_a_validation_problem(tmp_path):
    from harness.api.components import CheckContext

    (problem,) = FewShot().check({"k": []}, "strategies.few_shot", CheckContext(tmp_path, offline=True))
    assert str(problem) == "strategies.few_shot.k: expected at least one number of demonstrations, got an empty list"
