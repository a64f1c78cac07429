"""Suite files: validation reports every problem at once, each with its place in the file."""

from __future__ import annotations

import textwrap

import pytest

from harness.errors import HarnessError, ValidationError
from harness.planning.plan import plan
from harness.planning.suite import load_suite

GOOD = """
[suite]
name = "demo"
seeds = [0, 1]

[budget]
epochs = 2
batch_size = 8

[models.enc]
source = "toy-source"

[models.dec]
source = "toy-source"
family = "decoder"

[tasks.alpha]
type = "toy-task"
data = "data.txt"
[tasks.alpha.budget]
max_length = 64

[strategies.toy-strategy]
rate = 0.25

[strategies.enc-only]
type = "encoder-only"
[strategies.enc-only.budget]
learning_rate = 0.1
"""


def write(tmp_path, text, name="suite.toml"):
    (tmp_path / "data.txt").write_text("x\n")
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path, toy_host, text):
    with pytest.raises(ValidationError) as info:
        load_suite(write(tmp_path, text), toy_host)
    return [str(p) for p in info.value.problems]


def test_good_suite_loads_and_resolves(tmp_path, toy_host):
    suite = load_suite(write(tmp_path, GOOD), toy_host)
    assert suite.name == "demo"
    assert suite.seeds == (0, 1)
    assert [m.name for m in suite.models] == ["enc", "dec"]
    assert suite.families == {"enc": "encoder", "dec": "decoder"}
    alpha = suite.tasks[0]
    assert alpha.options["data"] == str(tmp_path / "data.txt")  # relative to the suite file
    assert alpha.options["size"] == 10 and alpha.options["mode"] == "fast"  # defaults filled in
    assert alpha.budget == {"max_length": 64}
    assert suite.strategies[0].options == {"rate": 0.25}


def test_unknown_names_get_did_you_mean_and_all_problems_are_reported(tmp_path, toy_host):
    found = problems(
        tmp_path,
        toy_host,
        """
        [suite]
        seeds = [0]
        [budget]
        epoch = 2
        batch_size = "8"
        [models.m]
        source = "toy-sorce"
        [tasks.t]
        type = "toy-tsk"
        [strategies.s]
        type = "toy-strategy"
        rte = 1.0
        """,
    )
    text = "\n".join(found)
    assert len(found) == 5, text
    assert "budget.epoch: unknown key (did you mean 'epochs'?)" in text
    assert "budget.batch_size: expected an integer, got str '8'" in text
    assert "unknown model source 'toy-sorce' (did you mean 'toy-source'?)" in text
    assert "unknown task 'toy-tsk' (did you mean 'toy-task'?)" in text
    assert "strategies.s.rte: unknown key (did you mean 'rate'?)" in text


def test_problems_carry_file_and_line(tmp_path, toy_host):
    found = problems(
        tmp_path,
        toy_host,
        """\
        [suite]
        seeds = [0]

        [models.m]
        source = "toy-source"

        [tasks.t]
        type = "toy-task"
        data = "missing.txt"
        size = 1.5

        [strategies.toy-strategy]
        """,
    )
    path = tmp_path / "suite.toml"
    assert any(p.startswith(f"{path}:9: tasks.t.data: file not found") for p in found), found
    assert any(p.startswith(f"{path}:10: tasks.t.size: expected an integer, got float 1.5") for p in found), found


def test_wrong_types_choices_and_missing_required(tmp_path, toy_host):
    found = problems(
        tmp_path,
        toy_host,
        """
        [suite]
        seeds = "0"
        [models.m]
        source = "toy-source"
        family = "rnn"
        [tasks.t]
        type = "toy-task"
        labels = ["a", 1]
        [strategies.toy-strategy]
        budget = 3
        """,
    )
    text = "\n".join(found)
    assert "suite.seeds: expected a list of integers, got str '0'" in text
    assert "models.m.family: expected one of 'encoder', 'decoder', 'encoder-decoder', got 'rnn'" in text
    assert "tasks.t.data: missing required key" in text
    assert "tasks.t.labels: expected a list of strings" in text
    assert "strategies.toy-strategy.budget: expected a table" in text


def test_unknown_top_level_table_and_empty_sections(tmp_path, toy_host):
    found = problems(tmp_path, toy_host, "[suit]\nname = 'x'\n")
    text = "\n".join(found)
    assert "suit: unknown top-level table (did you mean 'suite'?)" in text
    assert "models: the suite declares no models" in text
    assert "tasks: the suite declares no tasks" in text


def test_malformed_toml_is_one_line_with_position(tmp_path, toy_host):
    with pytest.raises(HarnessError) as info:
        load_suite(write(tmp_path, "[suite\nname = 1\n"), toy_host)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'suite.toml'}: malformed TOML:") and "line 1" in message


def test_missing_suite_file(tmp_path, toy_host):
    with pytest.raises(HarnessError, match="suite file not found"):
        load_suite(tmp_path / "nope.toml", toy_host)


def test_exclusions_must_match_something(tmp_path, toy_host):
    found = problems(tmp_path, toy_host, GOOD + '\n[[exclude]]\ntask = "alpa"\nmodl = "enc"\n')
    text = "\n".join(found)
    assert "exclude.0.task: 'alpa' matches no declared task (did you mean 'alpha'?)" in text
    assert "exclude.0.modl: unknown key (did you mean 'model'?)" in text


def test_expansion_skips_unsupported_with_reason_and_layers_budgets(tmp_path, toy_host):
    suite = load_suite(write(tmp_path, GOOD), toy_host)
    cells = plan(suite, toy_host)
    assert len(cells) == 2 * 1 * 2 * 2  # models × tasks × strategies × seeds
    skipped = [c for c in cells if c.skip_reason]
    # the toy task supports encoders only: every decoder cell is skipped, with the reason
    assert {c.model for c in skipped} == {"dec"}
    assert all("does not support decoder models" in c.skip_reason for c in skipped)
    by = {(c.model, c.strategy, c.seed): c for c in cells}
    toy = by[("enc", "toy-strategy", 0)]
    assert toy.budget.learning_rate == 1e-3  # the strategy plugin's default
    assert toy.budget.epochs == 2 and toy.budget.batch_size == 8  # suite [budget]
    assert toy.budget.max_length == 64  # task override
    assert by[("enc", "enc-only", 0)].budget.learning_rate == 0.1  # strategy override wins
    assert len({c.key for c in cells}) == len(cells)


def test_exclusions_remove_cells_and_an_empty_matrix_is_an_error(tmp_path, toy_host):
    suite = load_suite(write(tmp_path, GOOD + '\n[[exclude]]\nmodel = "dec"\n\n[[exclude]]\nstrategy = "enc-*"\nseed = 1\n'), toy_host)
    cells = plan(suite, toy_host)
    assert {(c.model, c.strategy, c.seed) for c in cells} == {
        ("enc", "toy-strategy", 0), ("enc", "toy-strategy", 1), ("enc", "enc-only", 0)
    }
    empty = load_suite(write(tmp_path, GOOD + '\n[[exclude]]\ntask = "*"\n', "empty.toml"), toy_host)
    with pytest.raises(HarnessError, match="expands to no cells"):
        plan(empty, toy_host)


def test_keys_change_only_for_affected_cells(tmp_path, toy_host):
    before = {c.cell_id: c.key for c in plan(load_suite(write(tmp_path, GOOD), toy_host), toy_host)}
    changed = GOOD.replace("rate = 0.25", "rate = 0.3")
    after = {c.cell_id: c.key for c in plan(load_suite(write(tmp_path, changed, "b.toml"), toy_host), toy_host)}
    differ = {cid for cid in before if before[cid] != after[cid]}
    assert differ and all("--toy-strategy--" in cid for cid in differ)
    assert all("--enc-only--" in cid for cid in set(before) - differ)


def test_cell_round_trips_through_json(tmp_path, toy_host):
    from harness.api.cells import Cell

    for cell in plan(load_suite(write(tmp_path, GOOD), toy_host), toy_host):
        again = Cell.from_json(cell.to_json())
        assert again == cell and again.key == cell.key


def test_repeated_seeds_are_refused(tmp_path, toy_host):
    found = problems(tmp_path, toy_host, GOOD.replace("seeds = [0, 1]", "seeds = [0, 1, 0]"))
    assert any("suite.seeds: seeds repeat: [0]" in p for p in found), found


def test_timeout_does_not_change_the_key(tmp_path, toy_host):
    import dataclasses

    cell = plan(load_suite(write(tmp_path, GOOD), toy_host), toy_host)[0]
    assert dataclasses.replace(cell, budget=dataclasses.replace(cell.budget, timeout_s=60.0)).key == cell.key


def test_a_shared_learning_rate_over_differing_strategy_defaults_is_warned_about(tmp_path, toy_host):
    from harness.planning.plan import budget_warnings

    assert budget_warnings(load_suite(write(tmp_path, GOOD), toy_host), toy_host) == []  # set per strategy only
    shared = GOOD.replace("batch_size = 8\n", "batch_size = 8\nlearning_rate = 0.01\n", 1)
    shared = shared.replace("[tasks.alpha.budget]\n", "[tasks.alpha.budget]\nlearning_rate = 0.02\n")
    (suite_warning, task_warning) = budget_warnings(load_suite(write(tmp_path, shared, "s.toml"), toy_host), toy_host)
    assert "[budget] learning_rate = 0.01 replaces the strategies' own defaults (toy-strategy 0.001, enc-only" in (
        suite_warning
    )
    assert "[tasks.alpha.budget] learning_rate = 0.02" in task_warning and "[strategies.NAME.budget]" in task_warning


def test_a_batch_that_accumulation_cannot_split_is_refused_when_planning(tmp_path, toy_host):
    text = GOOD.replace("[budget]", "[budget]\ngrad_accum_steps = 3", 1)
    suite = load_suite(write(tmp_path, text), toy_host)
    with pytest.raises(HarnessError) as info:
        plan(suite, toy_host)
    assert info.value.exit_code == 2
    lines = str(info.value).splitlines()
    assert lines and all("batch_size 8 is not a multiple of grad_accum_steps 3" in line for line in lines)
    assert all(line.startswith(f"{tmp_path / 'suite.toml'}: budget of ") for line in lines)
