"""Running suites end to end with fake workers: statuses, resume, --rerun, --dry-run, concurrent runs, SIGKILL,
Ctrl-C, unwritable output, and the progress display."""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import gone
from runner_fakes import fake_argv, fake_host, harness_argv, runs, suite_text

import harness.run.runner
from harness.cli import cli
from harness.cli import run as run_command
from harness.errors import HarnessError, ValidationError
from harness.results.records import Record
from harness.results.store import ResultStore
from harness.run.progress import Progress, format_duration
from harness.run.runner import RunOptions, describe_exit, run_suite

SKIP_REASON = "strategy 'decoder-only' does not support encoder models"


@pytest.fixture(autouse=True)
def _only_fakes(monkeypatch):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "local")
    for var in ("FAKE_BEHAVIOUR", "FAKE_FIX"):
        monkeypatch.delenv(var, raising=False)


def write_suite(tmp_path: Path, strategies: dict, **kwargs) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(suite_text(strategies, **kwargs))
    return path


def run(suite: Path, out: Path, **options) -> tuple[int, list[str]]:
    """run_suite in-process with fake workers; returns the exit code and what it echoed."""
    lines: list[str] = []
    code = run_suite(
        suite, RunOptions(output=out, **options), echo=lambda msg="", err=False: lines.append(msg),
        host=fake_host(), worker_argv=fake_argv,
    )
    return code, lines


def records(out: Path) -> dict[str, Record]:
    return {r.cell_id: r for r in ResultStore(out).records()}


def starts(out: Path) -> Counter:
    return Counter(e["cell_id"] for e in runs(out) if e["event"] == "start")


def test_run_options_are_exactly_the_cli_options():
    cli_names = {p.name for p in run_command.params} - {"suite", "only", "exclude"}  # --only/--exclude: a selection
    assert cli_names == {f.name for f in dataclasses.fields(RunOptions)} - {"selection"}


def test_statuses_resume_and_rerun(tmp_path, monkeypatch):
    suite = write_suite(tmp_path, {"good": {}, "bad": {"behaviour": "raise"}}, seeds=(0, 1))
    out = tmp_path / "out"
    code, lines = run(suite, out, jobs=2)
    assert code == 1
    found = records(out)
    assert {cid: r.status for cid, r in found.items()} == {
        "t0--good--m--seed0": "ok", "t0--good--m--seed1": "ok",
        "t0--bad--m--seed0": "failed", "t0--bad--m--seed1": "failed",
        "t0--dec--m--seed0": "skipped", "t0--dec--m--seed1": "skipped",
    }
    assert found["t0--bad--m--seed0"].error == "RuntimeError: boom"
    assert found["t0--dec--m--seed1"].error == SKIP_REASON
    assert found["t0--dec--m--seed1"].config["strategy"]["type"] == "decoder-only"
    assert json.loads((out / "plan.json").read_text())["suite"] == "t"
    assert lines[-2].startswith("suite t: 2 ok, 2 failed, 2 skipped, 0 already done in ")

    monkeypatch.setenv("FAKE_FIX", "1")  # resume: only the failed cells run again, and now pass
    code, lines = run(suite, out, jobs=2)
    assert code == 0
    assert starts(out) == {"t0--good--m--seed0": 1, "t0--good--m--seed1": 1, "t0--bad--m--seed0": 2, "t0--bad--m--seed1": 2}
    assert lines[-1].startswith("suite t: 2 ok, 0 failed, 2 skipped, 2 already done in ")

    assert run(suite, out)[0] == 0  # nothing left to do
    assert sum(starts(out).values()) == 6

    monkeypatch.setenv("FAKE_BEHAVIOUR", "exit")  # --rerun runs every cell; old ok records are not this attempt's
    code, lines = run(suite, out, rerun=True, jobs=2)
    assert code == 1
    assert set(starts(out).values()) == {2, 3}
    found = records(out)
    assert all(found[f"t0--{s}--m--seed{n}"].status == "failed" for s in ("good", "bad") for n in (0, 1))
    assert found["t0--good--m--seed0"].error.startswith("worker exited with code 3 without writing a record")
    assert found["t0--dec--m--seed0"].status == "skipped"


def test_changing_one_option_reruns_only_the_affected_cells(tmp_path):
    out = tmp_path / "out"
    assert run(write_suite(tmp_path, {"good": {}}, tasks=2), out, jobs=2)[0] == 0
    assert starts(out) == {"t0--good--m--seed0": 1, "t1--good--m--seed0": 1}
    code, lines = run(write_suite(tmp_path, {"good": {}}, tasks=2, size=2), out, jobs=2)
    assert code == 0
    assert starts(out) == {"t0--good--m--seed0": 2, "t1--good--m--seed0": 1}
    assert "1 to run, 1 already done, 2 skipped" in lines[0]


def test_a_record_under_another_key_is_explained(tmp_path):
    suite = write_suite(tmp_path, {"odd": {"behaviour": "wrong-key"}})
    code, _ = run(suite, tmp_path / "out")
    assert code == 1
    (record,) = [r for r in records(tmp_path / "out").values() if r.status != "skipped"]
    assert record.status == "failed" and "hashed differently in the worker" in record.error


def test_dry_run_lists_the_plan_and_writes_nothing(tmp_path):
    suite = write_suite(tmp_path, {"good": {}, "bad": {"behaviour": "raise"}})
    fresh = tmp_path / "fresh"
    code, lines = run(suite, fresh, dry_run=True)
    assert code == 0 and not fresh.exists() and runs(fresh) == []
    assert lines[0].startswith("dry run: suite t: 3 cells: 2 to run, 0 already done, 1 skipped; cpu (")
    out = tmp_path / "out"
    run(suite, out)
    code, lines = run(suite, out, dry_run=True)
    assert code == 0
    assert lines[1:] == [
        "to run (1):",
        "  t0--bad--m--seed0  (failed before: RuntimeError: boom)",
        "already done (1):",
        "  t0--good--m--seed0",
        "skipped (1):",
        f"  t0--dec--m--seed0: {SKIP_REASON}",
    ]
    assert sum(starts(out).values()) == 2  # the dry run started nothing


def test_dry_run_imports_no_torch(tmp_path):
    suite = write_suite(tmp_path, {"good": {}})
    code = (
        "import sys; from pathlib import Path; import runner_fakes\n"
        "from harness.run.runner import RunOptions, run_suite\n"
        f"rc = run_suite(Path({str(suite)!r}), RunOptions(output=Path({str(tmp_path / 'out')!r}), dry_run=True),"
        " host=runner_fakes.fake_host())\n"
        "heavy = [m for m in ('torch', 'transformers', 'sklearn', 'pandas') if m in sys.modules]\n"
        "print('HEAVY', heavy, rc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "HEAVY [] 0" in done.stdout
    assert "to run (1):" in done.stdout


def test_bad_suite_executor_and_output_are_one_line_errors(tmp_path, monkeypatch):
    bad = tmp_path / "bad.toml"
    bad.write_text(suite_text({"good": {"behavior": "ok"}}))
    with pytest.raises(ValidationError, match="strategies.good.behavior: unknown key"):
        run(bad, tmp_path / "out")
    suite = write_suite(tmp_path, {"good": {}})
    with pytest.raises(HarnessError, match="unknown executor 'lokal' \\(did you mean 'local'\\?\\)"):
        run(suite, tmp_path / "out", executor="lokal")

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(
        harness.run.runner, "run_suite", functools.partial(run_suite, host=fake_host(), worker_argv=fake_argv)
    )
    result = CliRunner().invoke(cli, ["run", str(suite), "--output", str(blocker / "out")])
    assert result.exit_code == 2
    assert result.stderr == f"error: {blocker / 'out'}: output directory is not writable (Not a directory)\n"
    assert "Traceback" not in result.output


def test_describe_exit():
    assert describe_exit(-11) == "killed by signal SIGSEGV (-11)"
    assert describe_exit(-9).startswith("killed by signal SIGKILL (-9; the kernel's out-of-memory killer")
    assert describe_exit(2) == "worker exited with code 2 without writing a record"
    assert describe_exit(-15, timeout_s=30.0) == "timed out after 30 s"


# -- the real CLI in a subprocess ---------------------------------------------------------------------------
def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background test runner may ignore SIGINT; a terminal does not


def start_harness(cwd: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_")}
    env["HARNESS_LOAD_PLUGINS"] = "local"
    return subprocess.Popen(
        harness_argv("run", *args), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint,
    )


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)




@pytest.mark.slow
def test_two_runs_on_one_output_dir_run_each_cell_once(tmp_path):
    suite = write_suite(tmp_path, {"good": {"sleep_s": 0.3}}, seeds=(0, 1, 2, 3))
    procs = [start_harness(tmp_path, str(suite), "-o", "out") for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    out = tmp_path / "out"
    assert starts(out) == {f"t0--good--m--seed{n}": 1 for n in range(4)}
    found = records(out)
    assert len(found) == 8 and sorted(r.status for r in found.values()) == ["ok"] * 4 + ["skipped"] * 4
    for path in out.glob("cells/*/record.json"):
        json.loads(path.read_text())  # whole, never half-written
    assert sum(o.count(" ok ") for o, _ in outputs) == 4


@pytest.mark.slow
def test_sigkill_of_the_harness_loses_only_the_cell_in_flight(tmp_path):
    suite = write_suite(tmp_path, {"good": {"sleep_s": 1.0}}, seeds=(0, 1, 2))
    out = tmp_path / "out"
    proc = start_harness(tmp_path, str(suite), "-o", "out")
    wait_for(lambda: len(starts(out)) == 2)
    in_flight = [e for e in runs(out) if e["event"] == "start"][-1]
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    wait_for(lambda: gone(in_flight["pid"]), timeout=10)  # the worker died with the harness
    assert {cid: r.status for cid, r in records(out).items() if r.status == "ok"} == {"t0--good--m--seed0": "ok"}

    proc = start_harness(tmp_path, str(suite), "-o", "out")
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert starts(out) == {"t0--good--m--seed0": 1, "t0--good--m--seed1": 2, "t0--good--m--seed2": 1}
    assert "2 ok, 0 failed, 3 skipped, 1 already done" in stdout


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_exits_cleanly_and_stops_the_workers(tmp_path, sig, code):
    suite = write_suite(tmp_path, {"good": {}, "slow": {"behaviour": "hang"}})
    out = tmp_path / "out"
    proc = start_harness(tmp_path, str(suite), "-o", "out")
    wait_for(lambda: "t0--slow--m--seed0" in starts(out))
    hung = [e for e in runs(out) if e["cell_id"] == "t0--slow--m--seed0"][0]
    os.kill(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code
    assert stderr == "interrupted: 1 cell(s) finished and recorded; 1 stopped in flight will run again next time\n"
    assert "Traceback" not in stdout + stderr
    assert gone(hung["pid"])
    found = records(out)
    assert found["t0--good--m--seed0"].status == "ok" and "t0--slow--m--seed0" not in found


# -- progress display ----------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record(cell_id: str, status: str = "ok", **kwargs) -> Record:
    return Record(key="k", suite="s", cell_id=cell_id, task="t", strategy="s", model="m", seed=0, status=status,
                  **kwargs)


def test_progress_without_a_terminal_prints_a_line_per_start_and_end(tmp_path):
    stream, clock = io.StringIO(), Clock()
    progress = Progress(2, stream=stream, tty=False, clock=clock)
    progress.cell_started("a--full--m--seed0", "cuda:1", tmp_path)
    clock.now += 12.34
    progress.cell_finished(record("a--full--m--seed0", metrics={"accuracy": 0.81234}, primary_metric="accuracy"))
    progress.cell_started("b", "cpu", tmp_path)
    progress.refresh(force=True)  # no status line off a terminal
    progress.cell_finished(record("b", "failed", error="RuntimeError: boom\nmore detail"))
    assert stream.getvalue().splitlines() == [
        "start  a--full--m--seed0 on cuda:1",
        "[1/2] ok     a--full--m--seed0  12.3s  accuracy=0.8123",
        "start  b on cpu",
        "[2/2] FAILED b  0.0s  RuntimeError: boom",
    ]


def test_progress_on_a_terminal_redraws_a_status_line_with_running_cells(tmp_path):
    stream, clock = io.StringIO(), Clock()
    progress = Progress(4, stream=stream, tty=True, clock=clock)
    progress.cell_started("a", "cuda:0", tmp_path / "a")
    assert stream.getvalue().endswith("\r\x1b[2K0/4 done, 0 failed, 0:00 elapsed, ETA ? | a [cuda:0] starting")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "progress.json").write_text('{"phase": "train", "done": 3, "total": 10, "updated": 0}')
    before = stream.getvalue()
    clock.now += 0.5
    progress.refresh()  # throttled: at most about once a second
    assert stream.getvalue() == before
    clock.now += 0.6
    progress.refresh()
    assert stream.getvalue().endswith("| a [cuda:0] train 3/10")
    clock.now += 58.9
    progress.cell_finished(record("a", metrics={"f1": 1}, primary_metric="f1"))
    text = stream.getvalue()
    assert text.endswith("\r\x1b[2K[1/4] ok     a  60.0s  f1=1\n")  # permanent line; nothing running, no status
    progress.cell_started("b", "cuda:1", tmp_path / "b")
    assert stream.getvalue().endswith("1/4 done, 0 failed, 1:00 elapsed, ETA ~3:00 | b [cuda:1] starting")
    progress.close()
    assert stream.getvalue().endswith("\r\x1b[2K")


def test_format_duration():
    assert [format_duration(s) for s in (0, 59.6, 75, 3725)] == ["0:00", "1:00", "1:15", "1:02:05"]
