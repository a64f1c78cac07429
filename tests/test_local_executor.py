"""The local executor with fake workers: every way a worker ends, timeouts, GPU pinning, CPU jobs, locks, Ctrl-C."""

from __future__ import annotations

import dataclasses
import io
import json
import time
from pathlib import Path

import pytest
from harness_plugins import local as local_plugin
from harness_plugins.local import LocalExecutor, child_env, cpu_cores
from helpers import gone
from runner_fakes import fake_argv, fake_host, runs, suite_text

from harness.api.budget import Budget
from harness.api.host import PluginHost
from harness.planning.plan import plan
from harness.planning.suite import load_suite
from harness.results.store import ResultStore
from harness.run.devices import Device, cpu_device
from harness.run.progress import Progress
from harness.run.runner import SuiteRun

GPUS = [Device("cuda", 0, "Fake GPU", 2**30), Device("cuda", 1, "Fake GPU", 2**30)]


@pytest.fixture(autouse=True)
def _only_fakes(monkeypatch):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "")
    for var in ("FAKE_BEHAVIOUR", "FAKE_FIX", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)


def make_run(tmp_path: Path, strategies: dict, seeds=(0,), devices=None, jobs=1, timeout_s=None) -> SuiteRun:
    suite_path = tmp_path / "suite.toml"
    suite_path.write_text(suite_text(strategies, seeds))
    host = fake_host()
    suite = load_suite(suite_path, host)
    cells = [c for c in plan(suite, host) if not c.skip_reason]
    store = ResultStore(tmp_path / "out")
    store.ensure_writable()
    return SuiteRun(
        cells=cells, store=store, devices=devices or [cpu_device()], suite_path=suite.path,
        suite_sha256=suite.sha256, jobs=jobs, timeout_s=timeout_s, worker_argv=fake_argv,
        progress=Progress(len(cells), stream=io.StringIO(), tty=False),
    )


def executor(**attrs) -> LocalExecutor:
    ex = LocalExecutor()
    for name, value in attrs.items():
        setattr(ex, name, value)
    return ex


def by_strategy(run: SuiteRun) -> dict:
    return {r.strategy: r for r in run.records}




def test_local_executor_is_registered_through_its_entry_point(monkeypatch):
    registered = []
    local_plugin.harness_register_executors(registered.append)
    assert [type(e) for e in registered] == [LocalExecutor] and registered[0].name == "local"
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "local")
    host = PluginHost.load()
    assert isinstance(host.executor("local"), LocalExecutor)
    assert not host.problems


def test_every_way_a_worker_ends_is_recorded_and_the_suite_goes_on(tmp_path):
    run = make_run(
        tmp_path,
        {b: {"behaviour": b} for b in ("segfault", "hang", "raise", "exit", "ok")},
        jobs=2,
        timeout_s=1.5,
    )
    executor(kill_grace_s=1.0).execute(run)
    records = by_strategy(run)
    assert set(records) == {"segfault", "hang", "raise", "exit", "ok"}
    assert records["ok"].status == "ok" and records["ok"].metrics == {"accuracy": 0.5}
    assert records["raise"].status == "failed" and records["raise"].error == "RuntimeError: boom"
    assert records["segfault"].error == (
        "killed by signal SIGSEGV (-11); last log line: about to dereference a bad pointer"
    )
    assert records["hang"].error == "timed out after 1.5 s; last log line: hanging"
    assert records["exit"].error == (
        "worker exited with code 3 without writing a record; last log line: giving up quietly"
    )
    for cell in run.cells:  # every record is on disk, the worker's or the harness's, with this attempt's id
        stored = run.store.load(cell)
        spec = json.loads((run.store.cell_dir(cell) / "spec.json").read_text())
        assert stored == records[cell.strategy]
        assert stored.env["attempt"] == spec["attempt"]
        assert "fake worker for" in (run.store.cell_dir(cell) / "cell.log").read_text()
    assert records["hang"].timing.total_s >= 1.5 and records["hang"].log == "cell.log"
    assert (run.ok, run.failed, run.in_flight) == (1, 4, [])
    hung = next(e for e in runs(run.store.root) if e["cell_id"] == records["hang"].cell_id)
    assert gone(hung["pid"])


def test_a_worker_ignoring_sigterm_is_killed_after_the_grace(tmp_path):
    run = make_run(tmp_path, {"stubborn": {"behaviour": "stubborn"}}, timeout_s=1)
    started = time.monotonic()
    executor(kill_grace_s=0.5).execute(run)
    assert time.monotonic() - started < 5
    assert run.records[0].error == "timed out after 1 s; last log line: hanging"


def test_two_gpus_four_cells_one_cell_per_gpu_at_a_time(tmp_path):
    run = make_run(tmp_path, {"a": {"sleep_s": 0.4}, "b": {"sleep_s": 0.4}}, seeds=(0, 1), devices=GPUS, jobs=4)
    executor().execute(run)
    assert run.ok == 4
    ends = [e for e in runs(run.store.root) if e["event"] == "end"]
    assert len(ends) == 4
    assert {e["CUDA_VISIBLE_DEVICES"] for e in ends} == {"0", "1"}  # each child saw exactly one index
    assert all(e["device"] == "cuda" and e["OMP_NUM_THREADS"] is None for e in ends)
    for gpu in ("0", "1"):
        spans = sorted((e["start"], e["t"]) for e in ends if e["CUDA_VISIBLE_DEVICES"] == gpu)
        assert all(prev_end <= start for (_, prev_end), (start, _) in zip(spans, spans[1:], strict=False)), spans


def test_jobs_two_on_cpu_run_two_cells_at_once_with_a_share_of_the_cores(tmp_path, monkeypatch):
    monkeypatch.setenv("MKL_NUM_THREADS", "7")  # set by the user: kept
    run = make_run(tmp_path, {"a": {"sleep_s": 0.8}}, seeds=(0, 1), jobs=2)
    executor().execute(run)
    ends = [e for e in runs(run.store.root) if e["event"] == "end"]
    assert len(ends) == 2
    (s1, e1), (s2, e2) = sorted((e["start"], e["t"]) for e in ends)
    assert s2 < e1, "the two cells did not overlap"
    assert {e["CUDA_VISIBLE_DEVICES"] for e in ends} == {""}
    assert {e["OMP_NUM_THREADS"] for e in ends} == {str(max(1, cpu_cores() // 2))}
    assert {e["MKL_NUM_THREADS"] for e in ends} == {"7"}


def test_child_env_pins_devices():
    base = {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1", "OMP_NUM_THREADS": "3"}
    gpu = child_env(GPUS[1], jobs=1, base=base)
    assert gpu["CUDA_VISIBLE_DEVICES"] == "1" and gpu["OMP_NUM_THREADS"] == "3" and "MKL_NUM_THREADS" not in gpu
    cpu = child_env(cpu_device(), jobs=10**6, base={"PATH": "/bin"})
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["OMP_NUM_THREADS"] == cpu["MKL_NUM_THREADS"] == "1"
    uuid = child_env(Device("cuda", 0, "MIG slice", uuid="MIG-1234"), jobs=1, base={})
    assert uuid["CUDA_VISIBLE_DEVICES"] == "MIG-1234"


def test_slots(tmp_path):
    run = make_run(tmp_path, {"a": {}}, jobs=3)
    assert [d.kind for d in LocalExecutor().slots(run)] == ["cpu"] * 3
    run.devices = GPUS
    assert LocalExecutor().slots(run) == GPUS


def test_a_cell_another_run_holds_is_left_to_it(tmp_path):
    run = make_run(tmp_path, {"a": {}}, seeds=(0, 1))
    held, free = run.cells
    with run.store.lock(held) as mine:
        assert mine
        executor().execute(run)
    assert [r.cell_id for r in run.records] == [free.cell_id]
    assert run.elsewhere == [held]
    assert run.store.load(held) is None
    assert f"skip   {held.cell_id}: running elsewhere" in run.progress.stream.getvalue()


def test_a_worker_that_cannot_start_is_recorded_as_failed(tmp_path):
    run = make_run(tmp_path, {"a": {}})
    run.worker_argv = lambda spec: [str(tmp_path / "no-such-worker")]
    executor().execute(run)
    assert run.records[0].status == "failed"
    assert run.records[0].error.startswith("could not start the worker: [Errno 2]")
    with run.store.lock(run.cells[0]) as mine:
        assert mine


def test_interrupt_stops_workers_releases_locks_and_records_nothing(tmp_path):
    run = make_run(tmp_path, {"a": {"behaviour": "hang"}, "b": {"behaviour": "stubborn"}}, jobs=2)
    real_tick = run.tick

    def tick():
        real_tick()
        if len(runs(run.store.root)) == 2:
            raise KeyboardInterrupt

    run.tick = tick
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        executor(interrupt_grace_s=0.5).execute(run)
    assert time.monotonic() - started < 10
    assert all(gone(e["pid"]) for e in runs(run.store.root))
    assert run.records == [] and sorted(run.in_flight) == sorted(c.key for c in run.cells)
    for cell in run.cells:
        assert run.store.load(cell) is None
        with run.store.lock(cell) as mine:
            assert mine


def test_write_spec_follows_the_worker_protocol(tmp_path):
    run = make_run(tmp_path, {"a": {}})
    cell = run.cells[0]
    (run.store.cell_dir(cell)).mkdir(parents=True)
    (run.store.cell_dir(cell) / "progress.json").write_text('{"phase": "eval", "done": 9, "total": 9}')
    spec_path, attempt = run.write_spec(cell, GPUS[1])
    spec = json.loads(spec_path.read_text())
    assert spec_path == run.store.cell_dir(cell).resolve() / "spec.json"
    assert spec == {
        "cell": cell.to_json(), "attempt": attempt, "device": "cuda", "out_dir": str(spec_path.parent),
        "save_artifacts": False, "suite_path": str(run.suite_path.resolve()), "suite_sha256": run.suite_sha256,
    }
    assert not (spec_path.parent / "progress.json").exists()  # a previous attempt's progress is not shown
    assert f"attempt {attempt} on cuda:1" in (spec_path.parent / "cell.log").read_text()


def test_timeout_is_the_option_else_the_cells_budget(tmp_path):
    run = make_run(tmp_path, {"a": {}})
    cell = dataclasses.replace(run.cells[0], budget=Budget(timeout_s=42.0))
    assert run.timeout_for(cell) == 42.0 and run.timeout_for(run.cells[0]) is None
    run.timeout_s = 7.0
    assert run.timeout_for(cell) == 7.0
