"""Hyperparameter searches: ``[X.search]`` tables checked and planned as trial cells, selection on validation only,
the search's cost in the cost table, ``harness report --search`` and its plot, resuming a search."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_cli import BASE, CSV, assert_usage_error, harness, write

from harness.api.host import EXTRA_ENV, PluginHost
from harness.cli import cli
from harness.errors import ValidationError
from harness.planning.plan import plan
from harness.planning.search import Dimension, SearchSpec, combine, settings
from harness.planning.suite import load_suite
from harness.report.reporting import build_report
from harness.report.rows import Rows
from harness.report.search import TIE_RULE, render_searches, select

TESTS = Path(__file__).resolve().parent
HOST = PluginHost.load()


@pytest.fixture
def suite_dir(tmp_path):
    """A folder with the two-class CSV that test_cli's ``BASE`` suite reads."""
    rows = ["text,label"] + [f"text number {i},{'pos' if i % 2 else 'neg'}" for i in range(40)]
    (tmp_path / CSV).write_text("\n".join(rows) + "\n")
    return tmp_path


def cells_of(suite_dir: Path, text: str) -> list:
    return plan(load_suite(write(suite_dir, text), HOST), HOST)


def problems_of(suite_dir: Path, text: str) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        load_suite(write(suite_dir, text), HOST)
    return [str(p) for p in caught.value.problems]


# -- planning --------------------------------------------------------------------------------------------------


def test_a_grid_plans_one_cell_per_setting_and_seed_in_written_order(suite_dir):
    cells = cells_of(suite_dir, BASE.replace('name = "bad"', 'name = "s"\nseeds = [0, 1]') + """
[strategies.lora]
[strategies.lora.search]
learning_rate = [1e-4, 1e-3]
r = [4, 8]
""")
    lora = [c for c in cells if c.strategy == "lora"]
    assert [(c.budget.learning_rate, c.strategy_options["r"], c.seed) for c in lora] == [
        (1e-4, 4, 0), (1e-4, 4, 1), (1e-4, 8, 0), (1e-4, 8, 1), (1e-3, 4, 0), (1e-3, 4, 1), (1e-3, 8, 0), (1e-3, 8, 1)]
    assert lora[0].cell_id == "sentiment--lora--tiny--seed0--learning_rate=0.0001+r=4"
    assert lora[0].trial == {"search": "tiny/sentiment/lora", "index": 0, "trials": 4, "sampler": "grid",
                             "metric": None, "values": {"learning_rate": 1e-4, "r": 4}}
    assert len({c.key for c in lora}) == len({c.dirname for c in lora}) == 8
    # a strategy without a search plans as before: one cell per seed, no trial, the same key as without searches
    full = [c for c in cells if c.strategy == "full"]
    assert [c.trial for c in full] == [None, None]
    plain = [c for c in cells_of(suite_dir, BASE.replace('name = "bad"', 'name = "s"\nseeds = [0, 1]')) if c.strategy == "full"]
    assert [c.key for c in full] == [c.key for c in plain] and "trial" not in full[0].config()


def test_a_growing_grid_keeps_the_keys_of_its_finished_trials(suite_dir):
    def keys(values: str) -> dict:
        cells = cells_of(suite_dir, BASE + f"[strategies.full.search]\nlearning_rate = {values}\n")
        return {c.budget.learning_rate: (c.key, c.dirname) for c in cells}

    small, grown = keys("[1e-4, 1e-3]"), keys("[3e-5, 1e-4, 1e-3]")
    assert small[1e-4] == grown[1e-4] and small[1e-3] == grown[1e-3]


def test_random_search_is_seeded_rounded_and_distinct():
    spec = SearchSpec((Dimension("learning_rate", "budget", "strategies", low=1e-5, high=1e-2, log=True),
                       Dimension("r", "options", "strategies", values=(4, 8)),
                       Dimension("warmup_steps", "budget", "strategies", low=0, high=10, kind="int")), trials=6, seed=3)
    drawn = settings(spec)
    assert drawn == settings(spec) and len(drawn) == 6
    assert len({json.dumps(s, sort_keys=True) for s in drawn}) == 6
    assert all(1e-5 <= s["learning_rate"] <= 1e-2 and float(f"{s['learning_rate']:.3g}") == s["learning_rate"]
               for s in drawn)
    assert all(isinstance(s["warmup_steps"], int) and 0 <= s["warmup_steps"] <= 10 for s in drawn)
    assert settings(SearchSpec(spec.dimensions, trials=6, seed=4)) != drawn
    # log-uniform: about as many draws below the geometric middle (3.2e-4) as above it
    many = settings(SearchSpec(spec.dimensions[:1], trials=400, seed=0))
    below = sum(s["learning_rate"] < 10 ** -3.5 for s in many)
    assert 150 < below < 250


def test_layers_combine_the_strategy_replacing_the_task_and_model(suite_dir):
    cells = cells_of(suite_dir, BASE.replace("[strategies.full]", """[tasks.sentiment.search]
learning_rate = [1e-4, 1e-3]
weight_decay = [0.0, 0.1]
[strategies.full]
[strategies.full.search]
learning_rate = [2e-5]
[strategies.zero]
type = "zero_shot"
""").replace('source = "tiny"', 'source = "tiny"\narchitecture = "gpt2"'))
    full = [c for c in cells if c.strategy == "full"]
    assert [(c.budget.learning_rate, c.budget.weight_decay) for c in full] == [(2e-5, 0.0), (2e-5, 0.1)]
    # a task's search tunes only strategies that train: zero-shot runs once, as written
    assert [c.trial for c in cells if c.strategy == "zero"] == [None]


def test_combine_takes_settings_from_the_most_specific_table():
    task = SearchSpec((Dimension("learning_rate", "budget", "tasks", values=(1.0, 2.0)),), trials=2, seed=5, metric="f1")
    strategy = SearchSpec((Dimension("learning_rate", "budget", "strategies", values=(3.0, 4.0, 5.0)),), trials=3)
    both = combine(None, task, strategy)
    assert [d.values for d in both.dimensions] == [(3.0, 4.0, 5.0)]
    assert (both.trials, both.seed, both.metric) == (3, 5, "f1")


@pytest.mark.parametrize("table, fragment", [
    ("lr = [1e-4]", "strategies.full.search.lr: neither a budget key nor an option of 'full'"),
    ("learning_rate = 1e-4", "expected a list of values or a range"),
    ("learning_rate = []", "empty list"),
    ("learning_rate = [1e-4, -1.0]", "the value -1.0: must be at least 0"),
    ("batch_size = [8, 8]", "8 is listed twice"),
    ("learning_rate = {low = 1e-5, high = 1e-3}", "is a range, which only a random search can draw from: add trials = N"),
    ("learning_rate = {low = 1e-3, high = 1e-5}\ntrials = 2", "low (0.001) must be below high (1e-05)"),
    ("learning_rate = {low = 0.0, high = 1e-3, log = true}\ntrials = 2", "a log range needs low > 0"),
    ("learning_rate = {low = 1e-5, hi = 1e-3}\ntrials = 2", "unknown key; a range takes low, high and log"),
    ("freeze_embeddings = {low = 0, high = 1}\ntrials = 2", "a range needs a numeric key"),
    ("learning_rate = [1e-4, 1e-3]\ntrials = 3", "3 trials but the lists allow only 2 distinct settings"),
    ("learning_rate = [1e-4]\ntrials = 0", "expected a whole number of random trials"),
    ("trials = 2", "searches nothing"),
    ("learning_rate = {low = 1e-5, high = 1e-3, log = true}\ntrials = 1001", "1001 trials; at most 1000 per search"),
])
def test_bad_search_tables_are_placed_problems(suite_dir, table, fragment):
    problems = problems_of(suite_dir, BASE + "[strategies.full.search]\n" + table + "\n")
    assert any(fragment in p for p in problems), problems
    assert all(re.match(r".*suite\.toml:\d+: strategies\.full\.search", p) for p in problems), problems


def test_search_problems_of_the_strategy_itself(suite_dir):
    zero = BASE.replace('source = "tiny"', 'source = "tiny"\narchitecture = "gpt2"') + """
[strategies.zero]
type = "zero_shot"
[strategies.zero.search]
learning_rate = [1e-4, 1e-3]
"""
    assert any("strategy 'zero_shot' trains nothing, so there is nothing to tune" in p for p in problems_of(suite_dir, zero))
    adalora = BASE + "[strategies.adalora]\n[strategies.adalora.search]\ntarget_r = [4, 16]\n"
    found = problems_of(suite_dir, adalora)
    assert any("the setting target_r = 16: strategies.adalora.target_r: exceeds init_r (12)" in p for p in found), found
    # an option of the strategy written as NAME.option, as in the issue's `lora.r = [4, 8, 16]`
    cells = cells_of(suite_dir, BASE + "[strategies.lora]\n[strategies.lora.search]\nlora.r = [4, 16]\n")
    assert [c.strategy_options["r"] for c in cells if c.strategy == "lora"] == [4, 16]


def test_validate_and_dry_run_on_the_command_line(suite_dir):
    path = write(suite_dir, BASE + "[strategies.full.search]\nlearning_rate = [1e-4, 1e-3]\nwarmup_ratio = {low = 0.0, high = 0.2}\n")
    assert_usage_error(harness("validate", str(path)), "suite.toml:", "strategies.full.search",
                       "warmup_ratio is a range, which only a random search can draw from")
    path = write(suite_dir, BASE + "[strategies.full.search]\nlearning_rate = [1e-4, 1e-3]\n")
    checked = harness("validate", str(path))
    assert checked.returncode == 0 and "2 cells (0 skipped as unsupported); 1 search(es) with 2 trials in all" in checked.stdout
    done = harness("run", str(path), "--dry-run", "--output", str(suite_dir / "out"))
    assert done.returncode == 0, done.stderr
    assert "sentiment--full--tiny--seed0--learning_rate=0.0001" in done.stdout
    assert "sentiment--full--tiny--seed0--learning_rate=0.001\n" in done.stdout


# -- selection -------------------------------------------------------------------------------------------------


def row(lr: float, seed: int, validation: float | None, test: float, status: str = "ok", index: int = 0,
        strategy: str = "lora", train_s: float = 10.0, device: str = "cpu") -> dict:
    trial = {"search": f"m/t/{strategy}", "index": index, "trials": 3, "sampler": "grid", "metric": None,
             "values": {"learning_rate": lr}}
    return {
        "key": f"{strategy}-{lr}-{seed}", "model": "m", "task": "t", "strategy": strategy, "seed": seed,
        "status": status, "error": None if status == "ok" else "boom", "primary_metric": "f1",
        "metrics": {"f1": test} if status == "ok" else {},
        "validation_metrics": {"f1": validation} if validation is not None else {},
        "timing": {"train_s": train_s}, "config": {"trial": trial}, "env": {"device": device},
    }


def searched_rows(poison: bool = False) -> list[dict]:
    """Three learning rates, two seeds; validation peaks at 3e-4, test (poisoned) at 1e-3."""
    rows = []
    for index, (lr, val) in enumerate([(1e-4, 0.6), (3e-4, 0.8), (1e-3, 0.7)]):
        for seed in (0, 1):
            test = {1e-4: 0.61, 3e-4: 0.79, 1e-3: 0.71}[lr] if not poison else {1e-4: 0.1, 3e-4: 0.2, 1e-3: 0.99}[lr]
            rows.append(row(lr, seed, val + 0.01 * seed, test, index=index))
    return rows


def test_selection_uses_validation_only_and_test_cannot_change_it():
    for poison in (False, True):
        kept, (search,) = select(searched_rows(poison))
        assert search.chosen.values == {"learning_rate": 3e-4}
        assert [(r["strategy"], r["seed"], r["config"]["trial"]["values"]) for r in kept] == [
            ("lora", 0, {"learning_rate": 3e-4}), ("lora", 1, {"learning_rate": 3e-4})]
    assert search.cost.trials == 3 and search.cost.cells == 6 and search.cost.train_s == 60.0
    assert search.cost.gpu_hours is None
    # the table shows the selected setting's test results with the trial count; the cost counts every trial
    report = build_report(Rows(searched_rows(poison=True)))
    (group,) = report.groups
    assert group.quality.mean == pytest.approx(0.2) and group.search.trials == 3 and group.search.train_s == 60.0
    assert TIE_RULE in report.methods[-1]


def test_ties_go_to_more_seeds_then_the_setting_planned_first():
    rows = [row(1e-4, 0, 0.5, 0.1, index=0), row(3e-4, 0, 0.5, 0.1, index=1), row(3e-4, 1, 0.5, 0.1, index=1),
            row(1e-3, 0, 0.5, 0.1, index=2), row(1e-3, 1, 0.5, 0.1, index=2)]
    assert select(rows)[1][0].chosen.values == {"learning_rate": 3e-4}  # two seeds beat one
    rows = [row(1e-3, 0, 0.5, 0.1, index=2), row(1e-4, 0, 0.5, 0.1, index=0), row(3e-4, 0, 0.5, 0.1, index=1)]
    assert select(rows)[1][0].chosen.values == {"learning_rate": 1e-4}  # then the first planned


def test_failed_seeds_and_unscored_searches():
    rows = [row(1e-4, 0, 0.9, 0.5, status="failed", index=0), row(1e-4, 1, 0.2, 0.5, index=0),
            row(3e-4, 0, 0.4, 0.6, index=1), row(3e-4, 1, 0.5, 0.6, index=1)]
    (search,) = select(rows)[1]
    assert search.chosen.values == {"learning_rate": 3e-4}  # a failed seed's validation is never read
    assert search.settings[0].failed == 1 and dict(search.settings[0].validation) == {1: 0.2}
    # no setting scored: the first planned setting stands in, so its failures show in the tables
    failed = [row(1e-4, 0, None, 0, status="failed", index=0), row(3e-4, 0, None, 0, status="failed", index=1)]
    kept, (search,) = select(failed)
    assert search.selected is None and [r["config"]["trial"]["index"] for r in kept] == [0]
    report = build_report(Rows(failed))
    assert report.groups[0].failed and report.groups[0].search.values == {}


def test_compare_and_csv_use_the_selected_setting():
    from harness_plugins.report_data import CsvReporter

    from harness.report.compare import compare

    (pair,) = compare(Rows(searched_rows()), Rows(searched_rows(poison=True)))
    assert pair.a.quality.mean == pytest.approx(0.79) and pair.b.quality.mean == pytest.approx(0.2)
    assert pair.a.search.trials == pair.b.search.trials == 3
    lines = CsvReporter().render(build_report(Rows(searched_rows()))).splitlines()
    assert sum(",value," in line and ",f1," in line for line in lines) == 2  # the selected setting's two seeds


def test_a_quick_profile_says_so_in_every_report_header(tmp_path):
    from harness_plugins.report_data import JsonReporter
    from harness_plugins.report_html import HtmlReporter
    from harness_plugins.report_latex import LatexReporter
    from harness_plugins.reporters import MarkdownReporter, TableReporter

    from harness.api.budget import Budget
    from harness.api.cells import Cell
    from harness.report.rows import load_rows
    from harness.results.records import cell_record
    from harness.results.store import ResultStore

    cells = [Cell(suite="q", task="t", task_type="classification", task_options={}, strategy="full", strategy_type="full",
                  strategy_options={}, model="m", model_source="tiny", model_options={}, model_family="encoder", seed=0,
                  budget=Budget())]
    store = ResultStore(tmp_path)
    store.write_plan(cells, "suites/quick.toml", "0" * 64, "a short run", "quick")
    store.write(cells[0], cell_record(cells[0], "ok", metrics={"accuracy": 0.5}, primary_metric="accuracy"))
    report = build_report(load_rows(tmp_path))
    (line,) = report.header
    assert line.startswith("Profile 'quick' of suite q: a reduced run") and "do not cite its numbers (a short run)." in line
    for reporter in (TableReporter(), MarkdownReporter(), HtmlReporter(), LatexReporter()):
        text = reporter.render(report)
        assert "a reduced run" in " ".join(text.split()), reporter.name
        assert text.index("reduced run") < text.index("0.5"), reporter.name  # the header comes first
    data = json.loads(JsonReporter().render(report))
    assert data["suite"] == {"name": "q", "description": "a short run", "profile": "quick"} and data["header"] == [line]
    # a suite without a profile: no header
    store.write_plan(cells, "suites/nlp.toml", "0" * 64, "the study")
    assert build_report(load_rows(tmp_path)).header == []


def test_gpu_hours_count_each_cells_gpus():
    rows = [row(1e-4, 0, 0.5, 0.5, train_s=1800, device="cuda:0"), row(3e-4, 0, 0.6, 0.5, index=1, train_s=3600,
                                                                       device="cuda:0,cuda:1")]
    assert select(rows)[1][0].cost.gpu_hours == pytest.approx(0.5 + 2.0)


def test_search_view_in_every_format():
    _, searches = select(searched_rows())
    text = render_searches(searches, "table")
    assert "lora on t (m): grid search, 3 of 3 trials with records, 6 cells, 60 s training" in text
    lines = [line for line in text.splitlines() if line.startswith("*")]
    assert len(lines) == 2 and "0.0003" in lines[0] and "0.805 ± 0.0071" in lines[0]
    assert render_searches(searches, "markdown").startswith("### lora on t (m)")
    data = json.loads(render_searches(searches, "json"))
    assert data["searches"][0]["selected"] == {"learning_rate": 3e-4}
    assert [s["validation"]["n"] for s in data["searches"][0]["settings"]] == [2, 2, 2]


# -- end to end ------------------------------------------------------------------------------------------------

PEAK_SUITE = """
[suite]
name = "peak"
seeds = [0, 1]
[budget]
max_steps = 1
batch_size = 8
[models.toy]
source = "toy-bert"
[tasks.peak]
type = "toy-peak"
poison = true
[strategies.full]
[strategies.full.search]
learning_rate = [1e-4, 3e-4, 1e-3]
"""


@pytest.fixture
def toy_env(monkeypatch):
    env = {EXTRA_ENV: "toyrt=runtime_toys,searchtoys=search_toys",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_a_search_selects_the_known_best_on_validation_resumes_and_reports(tmp_path, toy_env):
    suite = tmp_path / "peak.toml"
    suite.write_text(PEAK_SUITE)
    out = tmp_path / "out"
    first = harness("run", str(suite), "--output", str(out), "--only", "seed=0", env=toy_env)
    assert first.returncode == 0, first.stderr
    records = {p.parent.name: json.loads(p.read_text()) for p in out.glob("cells/*/record.json")}
    assert len(records) == 3 and all(r["status"] == "ok" for r in records.values())
    for record in records.values():  # validation scored and saved beside test, recomputable from the file
        assert record["validation_metrics"]["score"] != record["metrics"]["score"]
        assert record["validation_predictions"] == "predictions-validation.jsonl"
        assert record["timing"]["validation_s"] > 0
    for folder in out.glob("cells/*"):
        record = json.loads((folder / "record.json").read_text())
        scores = {json.loads(line)["score"] for line in (folder / "predictions-validation.jsonl").read_text().splitlines()}
        assert scores == {record["validation_metrics"]["score"]}
    # mid-search: seed 1 has not run; the rerun runs only it and recomputes nothing finished
    (next(out.glob("cells/*learning_rate=0.001--*")) / "record.json").unlink()  # and one cell was lost mid-run
    second = harness("run", str(suite), "--output", str(out), env=toy_env)
    assert second.returncode == 0, second.stderr
    assert "4 ok, 0 failed, 0 skipped, 2 already done" in second.stdout, second.stdout
    third = harness("run", str(suite), "--output", str(out), env=toy_env)
    assert "0 ok, 0 failed, 0 skipped, 6 already done" in third.stdout, third.stdout

    runner = CliRunner()
    done = runner.invoke(cli, ["report", str(out), "--format", "json"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.output)
    (search,) = data["searches"]
    assert search["selected"] == {"learning_rate": 3e-4}  # validation's peak, though test peaks at 1e-3
    (group,) = data["groups"]
    assert group["search"]["trials"] == 3 and group["search"]["cells"] == 6
    assert group["quality"]["mean"] == pytest.approx(sum(1.0 - 0.2 * abs(math.log10(0.3)) + 0.001 * ((s * 7) % 5)
                                                         for s in (0, 1)) / 2)
    assert len(data["records"]) == 6
    table = runner.invoke(cli, ["report", str(out), "--format", "markdown"])
    assert "3 trials [1]" in table.output and re.search(r"\| trials +\| search train s +\|", table.output), table.output
    assert "[1] full on peak (toy): selected on validation score from 3 trials: learning_rate = 0.0003" in table.output
    view = runner.invoke(cli, ["report", str(out), "--search", "--plots", str(tmp_path / "plots")])
    assert view.exit_code == 0, view.output
    assert "full on peak (toy): grid search, 3 of 3 trials with records, 6 cells" in view.output
    assert (tmp_path / "plots" / "peak--toy--search-full.png").stat().st_size > 0
    (out / "plan.json").unlink()  # without the plan every record still counts: each trial is a cell of its own
    assert len(json.loads(runner.invoke(cli, ["report", str(out), "--format", "json"]).output)["records"]) == 6
    bad = runner.invoke(cli, ["report", str(out), "--search", "--format", "csv"])
    assert bad.exit_code == 2 and "--search prints the formats table, markdown, json; got --format csv" in bad.output


# -- Optuna ----------------------------------------------------------------------------------------------------

needs_optuna = pytest.mark.skipif(importlib.util.find_spec("optuna") is None, reason="needs optuna (the test extra)")


@needs_optuna
def test_optuna_replays_from_results_and_stops_at_the_first_untold_batch():
    from harness.planning.optuna_search import PENDING, optuna_settings

    spec = SearchSpec((Dimension("learning_rate", "budget", "strategies", low=1e-5, high=1e-2, log=True),
                       Dimension("r", "options", "strategies", values=(4, 8))), trials=5, seed=1, sampler_name="optuna",
                      batch=2)  # fmt: skip
    results: dict[str, float | None] = {}

    def outcome(setting):
        return results.get(json.dumps(setting, sort_keys=True), PENDING)

    first = optuna_settings(spec, outcome)
    assert len(first) == 2 and first == optuna_settings(spec, outcome)  # the first batch, the same each time
    assert all(1e-5 <= s["learning_rate"] <= 1e-2 and s["r"] in (4, 8) for s in first)
    for setting in first:
        results[json.dumps(setting, sort_keys=True)] = -abs(math.log10(setting["learning_rate"] / 3e-4))
    second = optuna_settings(spec, outcome)
    assert second[:2] == first and len(second) == 4
    results.update({json.dumps(s, sort_keys=True): None for s in second[2:]})  # both failed: told as failed
    third = optuna_settings(spec, outcome)
    assert third[:4] == second and len(third) == 5
    results[json.dumps(third[4], sort_keys=True)] = 0.0
    assert optuna_settings(spec, outcome) == third  # finished: nothing more is asked


@needs_optuna
def test_optuna_tables_are_checked(suite_dir):
    base = BASE + "[strategies.full.search]\nlearning_rate = {low = 1e-5, high = 1e-3, log = true}\n"
    for table, fragment in [("sampler = \"optuna\"", "the optuna sampler needs trials = N"),
                            ("sampler = \"tpe\"\ntrials = 2", "expected one of grid, random, optuna, got 'tpe'"),
                            ("trials = 2\nbatch = 2", "only the optuna sampler asks trials in batches"),
                            ("sampler = \"optuna\"\ntrials = 2\nbatch = 0", "expected a whole number of trials asked")]:
        problems = problems_of(suite_dir, base + table + "\n")
        assert any(fragment in p for p in problems), problems
    cells = cells_of(suite_dir, base + "sampler = \"optuna\"\ntrials = 6\nbatch = 3\n")  # no results yet: batch one
    assert len(cells) == 3 and {c.trial["sampler"] for c in cells} == {"optuna"} and cells[0].trial["trials"] == 6


OPTUNA_SUITE = PEAK_SUITE.replace('seeds = [0, 1]', 'seeds = [0]').replace(
    "learning_rate = [1e-4, 3e-4, 1e-3]", 'learning_rate = {low = 1e-5, high = 1e-2, log = true}\nsampler = "optuna"\n'
    "trials = 5\nbatch = 2\nseed = 7")


@needs_optuna
def test_an_optuna_search_runs_in_rounds_and_resumes_without_recomputing(tmp_path, toy_env):
    suite = tmp_path / "optuna.toml"
    suite.write_text(OPTUNA_SUITE)
    out = tmp_path / "out"
    dry = harness("run", str(suite), "--output", str(out), "--dry-run", env=toy_env)
    assert "2 to run" in dry.stdout and "optuna searches plan their next trials" in dry.stdout, dry.stdout
    done = harness("run", str(suite), "--output", str(out), "--jobs", "2", env=toy_env)
    assert done.returncode == 0, done.stderr
    assert "optuna searches, round 2: 2 new cells to run" in done.stdout
    assert "optuna searches, round 3: 1 new cells to run" in done.stdout
    assert "suite peak: 5 ok, 0 failed, 0 skipped, 0 already done" in done.stdout, done.stdout
    again = harness("run", str(suite), "--output", str(out), env=toy_env)
    assert "suite peak: 0 ok, 0 failed, 0 skipped, 5 already done" in again.stdout, again.stdout
    data = json.loads(CliRunner().invoke(cli, ["report", str(out), "--format", "json"]).output)
    (search,) = data["searches"]
    assert search["sampler"] == "optuna" and len(search["settings"]) == 5
    best = max(search["settings"], key=lambda s: s["validation"]["mean"])
    assert search["selected"] == best["values"]
