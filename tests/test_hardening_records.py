"""Unreadable ``record.json`` files (truncated, not a record): ``report`` and ``compare`` say which one and count the
cell as missing; ``run`` says which one, keeps it as ``record.json.corrupt`` and runs the cell again. A record of a
newer schema stays an error for both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from runner_fakes import fake_argv, fake_host, runs, suite_text

from harness.cli import cli
from harness.errors import HarnessError
from harness.report.rows import load_rows
from harness.results.records import SCHEMA_VERSION, InvalidRecordError, NewerSchemaError, Record, read_record
from harness.results.store import CORRUPT, RECORD, ResultStore
from harness.run.runner import RunOptions, run_suite

IDENTITY = dict(key="k" * 16, suite="s", cell_id="t--full--m--seed0", task="t", strategy="full", model="m", seed=0,
                status="ok")


@pytest.fixture(autouse=True)
def _only_fakes(monkeypatch):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "local,reporters")
    for var in ("FAKE_BEHAVIOUR", "FAKE_FIX"):
        monkeypatch.delenv(var, raising=False)


def run(tmp_path: Path, out: Path, **options) -> tuple[int, list[str], list[str]]:
    """``run_suite`` in-process with fake workers on a suite of one ok cell and one skipped cell; the exit code,
    the lines echoed to stdout and those echoed to stderr."""
    suite = tmp_path / "suite.toml"
    suite.write_text(suite_text({"good": {}}))
    stdout: list[str] = []
    stderr: list[str] = []

    def echo(message: str = "", err: bool = False) -> None:
        (stderr if err else stdout).append(message)

    code = run_suite(suite, RunOptions(output=out, **options), echo=echo, host=fake_host(), worker_argv=fake_argv)
    return code, stdout, stderr


def record_file(out: Path, strategy: str) -> Path:
    (path,) = (out / "cells").glob(f"t0--{strategy}--m--seed0--*/{RECORD}")
    return path


def truncate(path: Path) -> bytes:
    """Cut the file in the middle (as a full disk or a copy that stopped would); returns what it held."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return data[: len(data) // 2]


def starts(out: Path) -> int:
    return sum(1 for event in runs(out) if event["event"] == "start")


# -- read_record says why ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, why",
    [
        ('{\n  "key": "abc",\n  "suite": "s', r"^truncated JSON at line 3 column 14$"),  # where the text stops
        ('{\n  "key": "abc",\n  "seed": 1', r"^truncated JSON at line 3 column 12$"),
        ('{"key": "abc", "done": tr', r"^truncated JSON at line 1 column 26$"),
        ('{"key": "abc",, "suite": "s"}', r"^invalid JSON at line 1 column 15 \(Expecting property name"),
        ("", r"^empty file$"),
        ("  \n", r"^empty file$"),
        ("[1, 2]", r"^not a JSON object but a list$"),
        ("null", r"^not a JSON object but null$"),
        (json.dumps({"suite": "s", "task": "t"}),
         r"^missing fields 'key', 'cell_id', 'strategy', 'model', 'seed', 'status'$"),
        (json.dumps({**IDENTITY, "seed": "zero"}), r"^field 'seed' is a string \('zero'\), expected an integer$"),
        (json.dumps({**IDENTITY, "status": "done"}),
         r"^field 'status' is a string \('done'\), expected ok or failed or skipped$"),
        (json.dumps({**IDENTITY, "params": [1]}), r"^field 'params' is a list, expected an object$"),
        (json.dumps({**IDENTITY, "metrics": "0.5"}), r"^field 'metrics' is a string, expected an object$"),
        (json.dumps({**IDENTITY, "training": {"validation": 3}}), r"^field 'training.validation' is a number"),
        (json.dumps({**IDENTITY, "schema_version": "1"}), r"^schema_version is a string, expected an integer$"),
    ],
)
def test_an_unreadable_record_says_why(tmp_path, text, why):
    path = tmp_path / RECORD
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidRecordError, match=why) as info:
        read_record(path)
    assert isinstance(info.value, ValueError) and str(path) not in str(info.value)


def test_bytes_that_are_not_utf8_and_a_folder_are_unreadable_too(tmp_path):
    (tmp_path / "latin1.json").write_bytes(b'{"key": "caf\xe9"}')
    with pytest.raises(InvalidRecordError, match=r"^not UTF-8 text \(byte 12\)$"):
        read_record(tmp_path / "latin1.json")
    (tmp_path / "cut.json").write_bytes('{"key": "café"}'.encode()[:13])  # cut inside the é
    with pytest.raises(InvalidRecordError, match=r"^truncated inside a UTF-8 character$"):
        read_record(tmp_path / "cut.json")
    (tmp_path / "dir" / RECORD).mkdir(parents=True)
    with pytest.raises(InvalidRecordError, match=r"^cannot be read \("):
        read_record(tmp_path / "dir" / RECORD)
    with pytest.raises(FileNotFoundError):  # no record at all is not an unreadable one
        read_record(tmp_path / "absent.json")


def test_a_newer_record_stays_newer_even_when_it_lacks_todays_fields(tmp_path):
    path = tmp_path / RECORD
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "renamed_key": "k"}))
    with pytest.raises(NewerSchemaError):
        read_record(path)
    minimal = Record.from_json(IDENTITY)  # the required fields are enough; the rest take their defaults
    assert minimal.status == "ok" and minimal.metrics == {} and minimal.training.validation == ()


# -- report ------------------------------------------------------------------------------------------------------


def test_report_warns_about_an_unreadable_record_and_counts_its_cell_as_missing(tmp_path):
    out = tmp_path / "out"
    assert run(tmp_path, out)[0] == 0
    damaged = record_file(out, "good")
    truncate(damaged)
    rows = load_rows(out)
    assert [r["status"] for r in rows] == ["skipped"] and rows.pending == 1
    (warning,) = rows.warnings
    assert warning.startswith(f"{damaged}: unreadable record (truncated JSON at line ")
    assert warning.endswith("); the cell is counted as missing")

    result = CliRunner().invoke(cli, ["report", str(out), "--resamples", "100"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"warning: {warning}"]
    assert "1 planned cell has no record yet." in result.stdout and "Traceback" not in result.output


def test_report_names_an_unreadable_skipped_record_and_without_a_plan_leaves_the_cell_out(tmp_path):
    out = tmp_path / "out"
    assert run(tmp_path, out)[0] == 0
    skipped = record_file(out, "dec")
    skipped.write_text("[]")
    rows = load_rows(out)
    assert sorted(r["status"] for r in rows) == ["ok", "skipped"]  # the plan still knows why it is skipped
    assert rows.warnings == [f"{skipped}: unreadable record (not a JSON object but a list); the cell is reported as "
                             "skipped, from the plan"]
    (out / "plan.json").unlink()
    rows = load_rows(out)
    assert [r["status"] for r in rows] == ["ok"]
    assert rows.warnings == [f"{skipped}: unreadable record (not a JSON object but a list); the cell is left out"]


def test_report_without_a_readable_record_lists_the_unreadable_ones_in_its_error(tmp_path):
    out = tmp_path / "out"
    assert run(tmp_path, out)[0] == 0
    good, dec = record_file(out, "good"), record_file(out, "dec")
    good.write_text('{\n  "key": "x",\n  "se')
    dec.write_text("")
    (out / "plan.json").unlink()
    with pytest.raises(HarnessError) as info:
        load_rows(out)
    lines = str(info.value).splitlines()
    assert lines[0].startswith(f"{out}: no records found")
    assert sorted(lines[1:]) == sorted([
        f"{good}: unreadable record (truncated JSON at line 3 column 6); the cell is left out",
        f"{dec}: unreadable record (empty file); the cell is left out",
    ])
    result = CliRunner().invoke(cli, ["report", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert [line.split(":")[0] for line in result.stderr.splitlines()] == ["error"] * 3


def test_compare_warns_about_unreadable_records_on_either_side(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(tmp_path, a)[0] == 0 and run(tmp_path, b)[0] == 0
    damaged = record_file(b, "good")
    damaged.write_text(json.dumps({**IDENTITY, "seed": None}))
    result = CliRunner().invoke(cli, ["compare", str(a), str(b), "--resamples", "100"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"warning: {damaged}: unreadable record (field 'seed' is null, expected an integer); the cell is "
        "counted as missing"
    ]


def test_report_still_refuses_a_record_of_a_newer_schema(tmp_path):
    out = tmp_path / "out"
    assert run(tmp_path, out)[0] == 0
    path = record_file(out, "good")
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(HarnessError, match=r"record schema .* is newer than this harness reads"):
        load_rows(out)


# -- run ---------------------------------------------------------------------------------------------------------


def test_run_keeps_an_unreadable_record_aside_says_which_and_runs_the_cell_again(tmp_path):
    out = tmp_path / "out"
    assert run(tmp_path, out)[0] == 0 and starts(out) == 1
    damaged = record_file(out, "good")
    kept = truncate(damaged)

    code, stdout, stderr = run(tmp_path, out)
    assert code == 0 and starts(out) == 2  # recomputed, not taken for done nor left failing
    (warning,) = stderr
    assert warning.startswith(f"warning: {damaged}: unreadable record (truncated JSON at line ")
    assert warning.endswith(f"); moved to {CORRUPT}, the cell runs again")
    assert (damaged.parent / CORRUPT).read_bytes() == kept
    assert read_record(damaged).status == "ok"
    assert "1 to run, 0 already done, 1 skipped" in stdout[0]

    second = truncate(damaged)  # damaged again: the first damaged file is kept, the second numbered
    code, _, stderr = run(tmp_path, out)
    assert code == 0 and starts(out) == 3
    assert stderr[0].endswith(f"); moved to {CORRUPT}.2, the cell runs again")
    assert (damaged.parent / CORRUPT).read_bytes() == kept and (damaged.parent / f"{CORRUPT}.2").read_bytes() == second

    code, _, stderr = run(tmp_path, out)  # a readable record again: nothing to say, nothing to run
    assert code == 0 and stderr == [] and starts(out) == 3


def test_a_dry_run_only_says_what_a_run_would_do(tmp_path):
    out = tmp_path / "out"
    assert run(tmp_path, out)[0] == 0
    damaged = record_file(out, "good")
    damaged.write_text('{"key": 1}')
    code, stdout, stderr = run(tmp_path, out, dry_run=True)
    assert code == 0
    assert stderr == [f"warning: {damaged}: unreadable record (missing fields 'suite', 'cell_id', 'task', 'strategy', "
                      f"'model', 'seed', 'status'); a run moves it to {CORRUPT} and the cell runs again"]
    assert damaged.read_text() == '{"key": 1}' and not (damaged.parent / CORRUPT).exists()
    assert "to run (1):" in stdout


def test_an_unreadable_skipped_record_is_kept_aside_and_written_again(tmp_path):
    out = tmp_path / "out"
    assert run(tmp_path, out)[0] == 0
    skipped = record_file(out, "dec")
    skipped.write_text('{"status": "skipped"')
    code, _, stderr = run(tmp_path, out)
    assert code == 0 and starts(out) == 1
    assert stderr == [f"warning: {skipped}: unreadable record (truncated JSON at line 1 column 21); moved to "
                      f"{CORRUPT}, its skipped record is written again"]
    assert read_record(skipped).status == "skipped"
    assert (skipped.parent / CORRUPT).read_text() == '{"status": "skipped"'


def test_run_stops_at_a_record_of_a_newer_schema_and_leaves_it_alone(tmp_path):
    out = tmp_path / "out"
    assert run(tmp_path, out)[0] == 0
    path = record_file(out, "good")
    newer = json.dumps({"schema_version": SCHEMA_VERSION + 1})
    path.write_text(newer)
    with pytest.raises(HarnessError, match=r"record schema .* is newer than this harness reads"):
        run(tmp_path, out)
    assert path.read_text() == newer and not (path.parent / CORRUPT).exists()


def test_the_cli_run_prints_one_warning_line_and_no_traceback(tmp_path, monkeypatch):
    import functools

    import harness.run.runner

    monkeypatch.setattr(harness.run.runner, "run_suite",
                        functools.partial(harness.run.runner.run_suite, host=fake_host(), worker_argv=fake_argv))
    out = tmp_path / "out"
    assert run(tmp_path, out)[0] == 0
    damaged = record_file(out, "good")
    damaged.write_text("{")
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "suite.toml"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("warning:")] == [
        f"warning: {damaged}: unreadable record (truncated JSON at line 1 column 2); moved to {CORRUPT}, the cell "
        "runs again"
    ]
    assert "Traceback" not in result.output
    assert sorted(r.status for r in ResultStore(out).records()) == ["ok", "skipped"]
