"""A whole table whose every cell was planned as skipped (a model no strategy supports, by default) is left out like
a skipped row or column: no quality table, no cost table, only its "not shown" note — in every reporter and for
every arrangement of ``--rows``/``--cols`` (the page dimension can be the model, the task or the strategy)."""

from __future__ import annotations

import itertools
import json
import re

import pytest
from click.testing import CliRunner
from harness_plugins.report_data import CsvReporter, JsonReporter
from harness_plugins.report_html import HtmlReporter
from harness_plugins.report_latex import LatexReporter
from harness_plugins.reporters import MarkdownReporter, TableReporter

from harness.api.budget import Budget
from harness.api.cells import Cell
from harness.cli import cli
from harness.report.reporting import Report, ReportOptions, build_report
from harness.report.tables import table_title
from harness.results.records import Record
from harness.results.store import ResultStore

SKIP = "needs a decoder"
MODELS, TASKS, STRATEGIES = ("enc", "enc2", "dec"), ("cls", "ner", "gen"), ("full", "lora", "zero_shot")
#: The value of each dimension whose every cell is skipped (so each dimension has a page that is all skipped).
ALL_SKIPPED = {"model": "dec", "task": "gen", "strategy": "zero_shot"}
ARRANGEMENTS = list(itertools.permutations(("task", "strategy", "model"), 2))


def skipped(model: str, task: str, strategy: str) -> bool:
    return model == "dec" or task == "gen" or strategy == "zero_shot"


def rows(seeds: int = 2) -> list[dict]:
    """Every (model, task, strategy, seed): ok with an accuracy, or skipped when :func:`skipped` says so."""
    out = []
    for (model, task, strategy), seed in itertools.product(itertools.product(MODELS, TASKS, STRATEGIES), range(seeds)):
        status = "skipped" if skipped(model, task, strategy) else "ok"
        out.append(Record(
            key=f"{model}/{task}/{strategy}/{seed}", suite="s", cell_id="c", task=task, strategy=strategy, model=model,
            seed=seed, status=status, error=SKIP if status == "skipped" else None,
            metrics={"accuracy": 0.5 + 0.1 * seed + 0.01 * len(strategy)} if status == "ok" else {},
            primary_metric="accuracy" if status == "ok" else None,
        ).to_json())
    return out


def report_of(data: list[dict], rows_dim: str = "task", cols_dim: str = "strategy") -> Report:
    return build_report(data, ReportOptions(rows=rows_dim, cols=cols_dim, resamples=100))


@pytest.mark.parametrize("rows_dim, cols_dim", ARRANGEMENTS)
def test_a_page_whose_every_cell_is_skipped_has_no_tables_only_the_note(rows_dim, cols_dim):
    page_dim = next(d for d in ALL_SKIPPED if d not in (rows_dim, cols_dim))
    hidden = ALL_SKIPPED[page_dim]
    report = report_of(rows(), rows_dim, cols_dim)
    tables = {t.page: t for t in report.tables}
    assert [t.shown for t in report.tables] == [t.page != hidden for t in report.tables] and hidden in tables
    note = tables[hidden]
    assert (note.row_values, note.col_values, note.best, note.baseline) == ((), (), frozenset(), None)
    assert not note.vs_best and not note.vs_baseline
    assert note.omitted == ((page_dim, hidden, SKIP),)
    for table in report.tables:  # the other pages still leave out their skipped rows and columns
        if table.shown:
            assert {(d, v) for d, v, _ in table.omitted} == {(rows_dim, ALL_SKIPPED[rows_dim]),
                                                               (cols_dim, ALL_SKIPPED[cols_dim])}
            assert len(table.row_values) == len(table.col_values) == 2

    text = TableReporter().render(report)
    assert f"not shown: {page_dim} {hidden}, every cell skipped [1]" in text
    assert f"{page_dim} {hidden}:" not in text  # neither "...: primary metric" nor "...: cost" titles
    shown = [table_title(t) for t in report.tables if t.shown]  # "task cls (accuracy)" when tasks page
    assert all(f"{title}: primary metric" in text and f"{title}: cost" in text for title in shown)
    assert text.count("┌") == 2 * len(shown)  # a quality and a cost table per shown page, none for the hidden one
    assert f"[1] skipped: {SKIP}" in text


def test_markdown_latex_and_html_show_the_note_instead_of_the_tables():
    report = report_of(rows())  # one table per model: dec is all skipped
    markdown = MarkdownReporter().render(report)
    dec = markdown.split("## model dec\n", 1)[1].split("\n- ", 1)[0]  # up to the footer's bullets
    assert dec.strip() == "not shown: model dec, every cell skipped [1]"
    assert markdown.count("Cost: means over ok seeds.") == 2 and markdown.count("## model ") == 3

    latex = LatexReporter().render(report)
    assert "tab:harness-dec" not in latex and "model dec" not in latex.replace("% not shown: model dec", "")
    assert "% not shown: model dec, every cell skipped [1]\n% [1] skipped: needs a decoder" in latex
    assert latex.count(r"\begin{table}") == 4

    page = HtmlReporter().render(report)
    section = re.search(r'<section id="table-dec">(.*?)</section>', page, re.S)[1]
    assert "<table" not in section and "not shown: model dec, every cell skipped" in section
    assert page.count('<table class="cost">') == 2 and '<a href="#table-dec">model dec</a>' in page


def test_json_and_csv_carry_the_left_out_page_without_figures():
    report = report_of(rows())
    data = json.loads(JsonReporter().render(report))
    (dec,) = [t for t in data["tables"] if t["model"] == "dec"]
    assert dec["omitted"] == [{"dimension": "model", "value": "dec", "reason": SKIP}]
    assert dec["best"] == [] and dec["vs_best"] == [] and dec["vs_baseline"] == []
    aggregates = [line for line in CsvReporter().render(report).splitlines() if ",aggregate," in line]
    assert aggregates and not any(line.startswith("dec,") for line in aggregates)


def test_results_whose_every_cell_is_skipped_give_only_notes():
    data = [r for r in rows() if r["status"] == "skipped" and r["model"] == "dec"]
    report = report_of(data)
    assert [t.shown for t in report.tables] == [False]
    text = TableReporter().render(report)
    assert text.startswith("not shown: model dec, every cell skipped [1]\n") and "┌" not in text


def make_cell(model: str, task: str, strategy: str, seed: int) -> Cell:
    return Cell(
        suite="s", task=task, task_type="classification", task_options={}, strategy=strategy, strategy_type=strategy,
        strategy_options={}, model=model, model_source="tiny", model_options={}, model_family="encoder", seed=seed,
        budget=Budget(), skip_reason=SKIP if skipped(model, task, strategy) else None,
    )


@pytest.mark.parametrize("rows_dim, cols_dim", ARRANGEMENTS)
def test_the_report_command_on_a_planned_results_directory(tmp_path, monkeypatch, rows_dim, cols_dim):
    """Planned skipped cells without a record file (``harness run`` writes them, but the plan alone suffices)."""
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "reporters")
    store = ResultStore(tmp_path)
    cells = [make_cell(m, t, s, 0) for m, t, s in itertools.product(MODELS, TASKS, STRATEGIES)]
    for cell in cells:
        if not cell.skip_reason:
            store.write(cell, Record(
                key=cell.key, suite="s", cell_id=cell.cell_id, task=cell.task, strategy=cell.strategy,
                model=cell.model, seed=0, status="ok", metrics={"accuracy": 0.7}, primary_metric="accuracy",
                config=cell.config(),
            ))
    store.write_plan(cells, "suite.toml", "0" * 64)
    page_dim = next(d for d in ALL_SKIPPED if d not in (rows_dim, cols_dim))
    result = CliRunner().invoke(cli, ["report", str(tmp_path), "--rows", rows_dim, "--cols", cols_dim,
                                      "--resamples", "100"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    hidden = ALL_SKIPPED[page_dim]
    assert f"not shown: {page_dim} {hidden}, every cell skipped [1]" in text and f"{page_dim} {hidden}:" not in text
    assert text.count("┌") == 4 and result.stderr == ""
