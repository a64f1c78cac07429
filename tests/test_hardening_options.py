"""A budget key written in a model, task or strategy table itself: the problem says where it belongs."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli import BASE, assert_usage_error, harness, suite_dir, write  # noqa: F401 (suite_dir: a fixture)

from harness.api.budget import BUDGET_OPTIONS
from harness.api.options import Option, check_options
from harness.errors import ValidationError
from harness.planning.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
DECLARED = (Option("rate", "float", 0.5, "a rate"),)


BUDGET_KEYS = [o.name for o in BUDGET_OPTIONS]


def message(key: str, where: str = "strategies.S", declared: tuple[Option, ...] = DECLARED, **kw: object) -> str:
    kw.setdefault("budget_keys", BUDGET_KEYS)
    _, problems = check_options(declared, {key: 1}, where, ignore=("type", "budget"), **kw)
    [problem] = problems
    return str(problem)


def test_an_abbreviated_budget_key_is_suggested_with_its_table():
    assert message("lr", declared=()) == (
        "strategies.S.lr: unknown key (did you mean the budget key 'learning_rate'? it belongs in "
        "[strategies.S.budget]); known keys: none"
    )


def test_an_exact_budget_key_is_pointed_to_the_budget_table():
    assert message("learning_rate") == (
        "strategies.S.learning_rate: unknown key here: 'learning_rate' is a budget key, it belongs in "
        "[strategies.S.budget]; known keys: rate"
    )


@pytest.mark.parametrize(("key", "budget_key"), [("bs", "batch_size"), ("epoch", "epochs"), ("wd", "weight_decay"),
                                                 ("learning_rat", "learning_rate"), ("max_lenght", "max_length")])
def test_near_misses_of_budget_keys(key, budget_key):
    assert f"did you mean the budget key '{budget_key}'? it belongs in [strategies.S.budget])" in message(key)


def test_a_near_declared_key_wins_and_unrelated_keys_get_no_budget_hint():
    assert message("rte") == "strategies.S.rte: unknown key (did you mean 'rate'?); known keys: rate"
    assert message("zzz") == "strategies.S.zzz: unknown key; known keys: rate"


def test_tables_without_a_budget_sub_table_are_unchanged():
    assert message("learning_rate", where="suite", budget_keys=()) == "suite.learning_rate: unknown key; known keys: rate"


def test_initials_also_help_inside_the_budget_table():
    assert message("lr", where="budget", declared=BUDGET_OPTIONS, budget_keys=()).startswith(
        "budget.lr: unknown key (did you mean 'learning_rate'?); known keys: attention, batch_size, "
    )


SUITE = """
[models.M]
source = "toy-source"
{model}
[tasks.T]
type = "toy-task"
data = "data.txt"
{task}
[strategies.S]
type = "toy-strategy"
{strategy}
"""


def test_models_tasks_and_strategies_all_say_where_the_budget_belongs(tmp_path, toy_host):
    (tmp_path / "data.txt").write_text("x\n")
    path = tmp_path / "suite.toml"
    path.write_text(SUITE.format(model="bs = 4", task="max_length = 64", strategy="lr = 1e-4"))
    with pytest.raises(ValidationError) as info:
        load_suite(path, toy_host)
    found = sorted(str(p).split(": ", 1)[1] for p in info.value.problems)  # after "FILE:LINE: "
    assert found == [
        "models.M.bs: unknown key (did you mean the budget key 'batch_size'? it belongs in [models.M.budget]); "
        "known keys: family",
        "strategies.S.lr: unknown key (did you mean the budget key 'learning_rate'? it belongs in "
        "[strategies.S.budget]); known keys: rate",
        "tasks.T.max_length: unknown key here: 'max_length' is a budget key, it belongs in [tasks.T.budget]; "
        "known keys: data, labels, mode, size",
    ]
    path.write_text(SUITE.format(model="[models.M.budget]\nbatch_size = 4", task="[tasks.T.budget]\nmax_length = 64",
                                 strategy="[strategies.S.budget]\nlearning_rate = 1e-4"))
    load_suite(path, toy_host)  # where the problems said: accepted


def test_validate_prints_one_line_and_exits_2(suite_dir):  # noqa: F811
    path = write(suite_dir, BASE + "lr = 1e-4\n")
    [line] = assert_usage_error(harness("validate", str(path)))
    assert line.startswith(f"error: {path}:10: strategies.full.lr: unknown key (did you mean the budget key "
                           "'learning_rate'? it belongs in [strategies.full.budget]); known keys: ")
