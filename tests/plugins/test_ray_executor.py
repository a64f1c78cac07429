"""The ray executor: the task body without Ray, then a local Ray with 2 CPUs: fake workers (statuses equal to the
local executor's, resume, no shared filesystem, a lost worker retried once, time limits, Ctrl-C, ``--address``) and
real tiny cells whose metrics equal the local executor's."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness_plugins import ray_executor
from harness_plugins.ray_executor import CellJob, CellOutcome, RayExecutor, run_cell_job
from helpers import gone
from runner_fakes import fake_argv, fake_host, harness_argv, runs, suite_text

from harness.api.host import PluginHost
from harness.errors import HarnessError
from harness.planning.plan import plan
from harness.planning.suite import load_suite
from harness.results.store import ResultStore
from harness.run.devices import cpu_device
from harness.run.progress import Progress
from harness.run.runner import RunOptions, SuiteRun, run_suite
from harness.testing import TINY_BUDGET, suite_toml, tiny_model, tiny_task

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install 'tuning-harness[ray]')")
#: Whether the installed package declares the plugin's entry point (else tests add the module themselves).
RAY_ENTRY_POINT = bool(importlib.metadata.entry_points(group="harness", name="ray"))

# A worker for run_cell_job: spec["behaviour"] is ok (record, predictions), artifact (also artifact/), hang, or env
# (the record holds its environment).
WORKER = """
import json, os, pathlib, sys, time
spec = json.loads(pathlib.Path(sys.argv[1]).read_text())
out = pathlib.Path(spec["out_dir"])
print("worker in", out, flush=True)
if spec["behaviour"] == "hang":
    time.sleep(60)
if spec["behaviour"] == "artifact":
    (out / "artifact").mkdir()
    (out / "artifact" / "w.bin").write_bytes(b"w")
record = {"attempt": spec["attempt"], "env": dict(os.environ) if spec["behaviour"] == "env" else {}}
(out / "record.json").write_text(json.dumps(record))
(out / "predictions.jsonl").write_text('{"prediction": 1}\\n')
print("worker done", flush=True)
"""


def make_job(tmp_path: Path, behaviour: str = "ok", shared: bool | None = None, **changes) -> CellJob:
    """A job whose spec the driver wrote at ``tmp_path/cells/c1/spec.json`` (``shared=False``: a spec elsewhere)."""
    cell_dir = tmp_path / "cells" / "c1"
    cell_dir.mkdir(parents=True, exist_ok=True)
    spec = {"attempt": "a1", "out_dir": str(cell_dir), "behaviour": behaviour}
    spec_path = cell_dir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    fields = dict(
        argv=["/driver/python", "-c", WORKER, str(spec_path)], spec=spec, spec_path=str(spec_path),
        driver_python="/driver/python", env={"HARNESS_X": "1"}, cwd=str(tmp_path), timeout_s=None, kill_grace_s=0.5,
        interrupt_grace_s=0.5, gpu=False, threads=3, shared=shared,
    )
    fields.update(changes)
    return CellJob(**fields)


# -- without Ray -----------------------------------------------------------------------------------------------------
def test_registered_always_and_one_line_install_hint_without_ray(tmp_path, monkeypatch):
    registered = []
    ray_executor.harness_register_executors(registered.append)
    assert [e.name for e in registered] == ["ray"]
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    with pytest.raises(HarnessError, match=r"pip install 'tuning-harness\[ray\]'"):
        RayExecutor().execute(make_run(tmp_path, {"ok": {}}))
    # `harness plugins` and `validate` import the plugin: it must not import ray
    code = "import sys, harness_plugins.ray_executor; assert 'ray' not in sys.modules and 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_task_on_a_shared_filesystem_lets_the_worker_write_in_place(tmp_path):
    job = make_job(tmp_path)
    outcome = run_cell_job(job)
    assert outcome.shared and outcome.returncode == 0 and not outcome.timed_out and outcome.files == {}
    cell_dir = Path(job.spec["out_dir"])
    assert json.loads((cell_dir / "record.json").read_text())["attempt"] == "a1"
    log = (cell_dir / "cell.log").read_text()
    assert "=== ray: task on node" in log and "worker done" in log


def test_task_without_the_results_directory_returns_the_files_and_the_log(tmp_path):
    job = make_job(tmp_path, "artifact")
    elsewhere = str(tmp_path / "elsewhere" / "spec.json")  # where the driver wrote it: not on this node
    job = CellJob(**{**job.__dict__, "spec_path": elsewhere, "argv": [*job.argv[:-1], elsewhere]})
    outcome = run_cell_job(job)
    assert not outcome.shared and outcome.returncode == 0
    assert sorted(outcome.files) == ["predictions.jsonl", "record.json"]
    assert json.loads(outcome.files["record.json"])["attempt"] == "a1"
    assert b"worker done" in outcome.log and b"=== ray: task on node" in outcome.log
    assert not (Path(job.spec["out_dir"]) / "record.json").exists()  # nothing written to the driver's folder
    left = Path(outcome.left_on_node)
    assert left.name == "artifact" and (left / "w.bin").read_bytes() == b"w"
    scratch = left.parents[2]
    assert scratch.name.startswith("harness-ray-")
    import shutil

    shutil.rmtree(scratch)
    # the driver's side: files written atomically into the cell folder, the log appended
    cell_dir = tmp_path / "cells" / "c1"
    ray_executor._bring_back(cell_dir, CellOutcome("n", False, 0, files={**outcome.files, "../x": b"no"}, log=b"L\n",
                                                   left_on_node="/s/artifact"))
    assert json.loads((cell_dir / "record.json").read_text())["attempt"] == "a1"
    assert not (tmp_path / "cells" / "x").exists()
    assert (cell_dir / "cell.log").read_text().endswith("L\n=== ray: /s/artifact left on node n ===\n")


def test_task_enforces_the_time_limit_and_forced_scratch(tmp_path):
    started = time.monotonic()
    outcome = run_cell_job(make_job(tmp_path, "hang", shared=False, timeout_s=0.5))
    assert outcome.timed_out and outcome.returncode == -signal.SIGTERM and not outcome.shared
    assert b"worker in" in outcome.log and "record.json" not in outcome.files
    assert time.monotonic() - started < 5


def test_worker_environment(tmp_path):
    outcome = run_cell_job(make_job(tmp_path, "env"))
    env = json.loads((tmp_path / "cells" / "c1" / "record.json").read_text())["env"]
    assert outcome.returncode == 0
    assert env["HARNESS_X"] == "1" and env["CUDA_VISIBLE_DEVICES"] == "" and env["OMP_NUM_THREADS"] == "3"
    job = make_job(tmp_path, gpu=True, threads=None, env={"OMP_NUM_THREADS": "7"})
    env = ray_executor.cell_env(job, base={"CUDA_VISIBLE_DEVICES": "2"})
    assert env["CUDA_VISIBLE_DEVICES"] == "2" and env["OMP_NUM_THREADS"] == "7" and env["PYTHONUNBUFFERED"] == "1"


def test_an_address_where_nothing_listens_fails_fast():
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=f"nothing answers at 127.0.0.1:{port}"):
        ray_executor.check_reachable(f"127.0.0.1:{port}")
    assert time.monotonic() - started < 5
    for left_to_ray in ("auto", "ray://head:10001", "head"):
        ray_executor.check_reachable(left_to_ray)


def test_capacity_and_errors():
    nodes = [
        {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}},
        {"Alive": True, "Resources": {"CPU": 3.0}},
        {"Alive": False, "Resources": {"CPU": 64.0}},
    ]
    assert ray_executor.capacity(nodes, 2, 0) == 5
    assert ray_executor.capacity(nodes, 1, 1) == 2

    class WorkerCrashedError(Exception):
        pass

    lost = ray_executor.describe_ray_error(WorkerCrashedError("The worker died.\nmore"), 2)
    assert lost == "lost the Ray worker or node running the cell (2 tries): WorkerCrashedError: The worker died."
    assert ray_executor.describe_ray_error(ValueError("x"), 2) == "the Ray task failed: ValueError: x"
    wrapped = RuntimeError("ray::run_cell_job() (pid=1, ip=h)\n  Traceback ...")
    wrapped.cause = PermissionError(13, "Permission denied")
    assert ray_executor.describe_ray_error(wrapped, 2) == "the Ray task failed: PermissionError: [Errno 13] Permission denied"


class FakeRay:
    """Just what ``RayExecutor._connected`` and ``resources`` call, recorded."""

    def __init__(self, initialized: bool = False, fail: Exception | None = None, gpus: float = 0) -> None:
        self.initialized, self.fail, self.gpus = initialized, fail, gpus
        self.calls: list[tuple[str, dict]] = []

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **kwargs) -> None:
        self.calls.append(("init", {**kwargs, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}))
        if self.fail:
            raise self.fail

    def shutdown(self) -> None:
        self.calls.append(("shutdown", {}))

    def cluster_resources(self) -> dict:
        return {"CPU": 12.0, "GPU": self.gpus}

    def nodes(self) -> list[dict]:
        return [{"Alive": True, "Resources": {"CPU": 8.0}}, {"Alive": True, "Resources": {"CPU": 4.0}},
                {"Alive": True, "Resources": {"CPU": 0.0}}]


def test_local_instance_address_or_the_running_one(tmp_path, monkeypatch):
    from harness.run.devices import Device

    run = make_run(tmp_path, {"ok": {}})
    run.devices = [Device("cuda", 0, "G"), Device("cuda", 2, "G")]
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    ray = FakeRay()
    with RayExecutor()._connected(ray, run) as said:
        assert said.startswith("ray: started a local Ray instance (3 node(s), 12 CPUs, 0 GPUs)")
    (name, init), shutdown = ray.calls
    assert name == "init" and shutdown == ("shutdown", {})
    assert init["address"] == "local" and init["num_gpus"] == 2 and init["CUDA_VISIBLE_DEVICES"] == "0,2"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2"  # restored
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    monkeypatch.setattr(ray_executor, "check_reachable", lambda address: None)
    with pytest.raises(HarnessError, match=r"^Ray cluster head:6379 \(--address, RAY_ADDRESS\): cannot connect \(nobody\)"):
        with RayExecutor()._connected(FakeRay(fail=ConnectionError("nobody")), run):
            pass
    ray = FakeRay(initialized=True)
    with RayExecutor()._connected(ray, run):
        pass
    assert ray.calls == []  # neither started nor shut down
    run.jobs = 3
    assert RayExecutor().resources(FakeRay(), run) == (1.0, 0.0)  # the smallest node's 4 CPUs ÷ 3 jobs
    run.jobs = 2
    assert RayExecutor().resources(FakeRay(), run) == (2.0, 0.0)
    assert RayExecutor().resources(FakeRay(gpus=4), run) == (1.0, 1.0)


# -- a local Ray with 2 CPUs -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_address():
    if not HAVE_RAY:
        pytest.skip("ray is not installed (pip install 'tuning-harness[ray]')")
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def fakes_only(monkeypatch):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "local")


def make_run(tmp_path: Path, strategies: dict, seeds=(0,), jobs=2, timeout_s=None, worker_argv=fake_argv) -> SuiteRun:
    suite_path = tmp_path / "suite.toml"
    suite_path.write_text(suite_text(strategies, seeds))
    host = fake_host()
    suite = load_suite(suite_path, host)
    cells = [c for c in plan(suite, host) if not c.skip_reason]
    store = ResultStore(tmp_path / "out")
    store.ensure_writable()
    return SuiteRun(
        cells=cells, store=store, devices=[cpu_device()], suite_path=suite.path, suite_sha256=suite.sha256, jobs=jobs,
        timeout_s=timeout_s, worker_argv=worker_argv, progress=Progress(len(cells), stream=io.StringIO(), tty=False),
    )


def run_fakes(suite: Path, out: Path, executor: str, host: PluginHost | None = None, **options) -> tuple[int, str]:
    lines: list[str] = []
    code = run_suite(
        suite, RunOptions(output=out, executor=executor, jobs=2, **options),
        echo=lambda msg="", err=False: lines.append(msg),
        host=host or PluginHost.load(extra=[("fakes", sys.modules[fake_host.__module__]), ("ray", ray_executor)]),
        worker_argv=fake_argv,
    )
    return code, "\n".join(lines)


def outcomes(out: Path) -> dict[str, tuple[str, str | None]]:
    return {r.cell_id: (r.status, r.error) for r in ResultStore(out).records()}


@needs_ray
def test_fake_cells_end_as_with_the_local_executor_and_resume(tmp_path, ray_address, fakes_only):
    behaviours = {b: {"behaviour": b} for b in ("ok", "raise", "segfault", "exit")}
    suite = tmp_path / "suite.toml"
    suite.write_text(suite_text(behaviours, seeds=(0, 1)))
    assert run_fakes(suite, tmp_path / "local", "local")[0] == 1
    code, _ = run_fakes(suite, tmp_path / "ray", "ray")
    assert code == 1
    assert outcomes(tmp_path / "ray") == outcomes(tmp_path / "local")
    assert outcomes(tmp_path / "ray")["t0--segfault--m--seed0"][1].startswith("killed by signal SIGSEGV (-11)")
    # resume: only the failed cells run again
    before = [e["cell_id"] for e in runs(tmp_path / "ray") if e["event"] == "start"]
    assert run_fakes(suite, tmp_path / "ray", "ray")[0] == 1
    again = [e["cell_id"] for e in runs(tmp_path / "ray") if e["event"] == "start"][len(before):]
    assert sorted(again) == sorted(c for c, (s, _) in outcomes(tmp_path / "ray").items() if s == "failed")
    # all done: a second run has nothing to do
    ok_suite = tmp_path / "ok.toml"
    ok_suite.write_text(suite_text({"ok": {}}, seeds=(0, 1)))
    assert run_fakes(ok_suite, tmp_path / "ok", "ray")[0] == 0
    code, said = run_fakes(ok_suite, tmp_path / "ok", "ray")
    assert code == 0 and "0 to run, 2 already done" in said and len(runs(tmp_path / "ok")) == 4


@needs_ray
def test_records_come_back_without_a_shared_filesystem(tmp_path, ray_address, fakes_only):
    run = make_run(tmp_path, {"ok": {}, "raise": {"behaviour": "raise"}, "exit": {"behaviour": "exit"}})
    executor = RayExecutor()
    executor.shared_fs = False
    executor.execute(run)
    found = {r.strategy: r for r in run.records}
    assert found["ok"].status == "ok" and found["raise"].error == "RuntimeError: boom"
    assert found["exit"].error.startswith("worker exited with code 3 without writing a record (on node ")
    assert found["exit"].error.endswith("last log line: giving up quietly")
    for cell in run.cells:
        log = run.log_path(cell).read_text()
        assert "=== harness: attempt" in log and "=== ray: task on node" in log and "fake worker for" in log
    assert {r.cell_id: r.status for r in run.store.records()} == {r.cell_id: r.status for r in run.records}


@needs_ray
def test_a_lost_worker_is_retried_once_then_only_its_cell_fails(tmp_path, ray_address, fakes_only):
    tries = tmp_path / "tries"
    kill_parent = "import os, signal, sys; open(sys.argv[1], 'a').write('x'); os.kill(os.getppid(), signal.SIGKILL)"

    def argv(spec_path: Path) -> list[str]:
        if "--doomed--" in str(spec_path):
            return [sys.executable, "-c", kill_parent, str(tries)]
        return fake_argv(spec_path)

    run = make_run(tmp_path, {"ok": {}, "doomed": {}}, worker_argv=argv)
    RayExecutor().execute(run)
    found = {r.strategy: r for r in run.records}
    assert found["ok"].status == "ok"
    assert found["doomed"].status == "failed" and tries.read_text() == "xx"
    assert found["doomed"].error.startswith("lost the Ray worker or node running the cell (2 tries): WorkerCrashedError")


@needs_ray
def test_a_cell_past_its_time_limit_is_stopped_and_recorded(tmp_path, ray_address, fakes_only):
    run = make_run(tmp_path, {"hang": {"behaviour": "hang"}, "ok": {}}, timeout_s=1.0)
    executor = RayExecutor()
    executor.kill_grace_s = 1.0
    started = time.monotonic()
    executor.execute(run)
    found = {r.strategy: r for r in run.records}
    assert found["ok"].status == "ok"
    assert found["hang"].error == "timed out after 1 s; last log line: hanging"
    assert time.monotonic() - started < 20


@needs_ray
def test_ctrl_c_stops_the_cells_and_releases_them(tmp_path, ray_address, fakes_only):
    run = make_run(tmp_path, {"hang": {"behaviour": "hang"}})

    def tick() -> None:
        if any(e["event"] == "start" for e in runs(run.store.root)):
            raise KeyboardInterrupt

    run.tick = tick  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        RayExecutor().execute(run)
    pid = next(e["pid"] for e in runs(run.store.root) if e["event"] == "start")
    deadline = time.monotonic() + 10
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone(pid)
    assert run.in_flight == [run.cells[0].key] and run.records == []
    with run.store.lock(run.cells[0]) as held:
        assert held
    assert run.store.load(run.cells[0]) is None


@needs_ray
@pytest.mark.parametrize("connect", [True, False], ids=["address", "local-instance"])
def test_cli_connects_to_a_cluster_or_starts_a_local_instance(tmp_path, ray_address, connect):
    suite = tmp_path / "suite.toml"
    suite.write_text(suite_text({"ok": {}}, seeds=(0, 1)))
    # only the local entry point, the fakes and the ray plugin as an extra module (not filtered by LOAD)
    env = {**os.environ, "HARNESS_LOAD_PLUGINS": "local", "HARNESS_EXTRA_PLUGINS": "ray=harness_plugins.ray_executor"}
    env.pop("RAY_ADDRESS", None)
    argv = harness_argv("run", str(suite), "-o", str(tmp_path / "out"), "--executor", "ray", "-j", "2")
    done = subprocess.run([*argv, *(["--address", ray_address] if connect else [])], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    resources = f"(1 node(s), {ray_executor.cpu_cores() if not connect else 2} CPUs, 0 GPUs)"
    said = f"ray: connected to the cluster at {ray_address}" if connect else "ray: started a local Ray instance"
    assert f"{said} {resources}" in done.stdout
    assert {c: s for c, (s, _) in outcomes(tmp_path / "out").items()} == {
        "t0--ok--m--seed0": "ok", "t0--ok--m--seed1": "ok", "t0--dec--m--seed0": "skipped", "t0--dec--m--seed1": "skipped"
    }


@needs_ray
@pytest.mark.slow
def test_real_tiny_cells_give_the_local_executors_records(tmp_path, ray_address):
    """Tiny random models on CPU, same seeds: identical metrics, losses, predictions and statuses through both
    executors (a lora cell whose target modules do not exist fails in both)."""
    task = tiny_task(tmp_path / "data", "classification", n=64, n_eval=32)
    budget = {**TINY_BUDGET, "max_steps": 12}
    text = suite_toml(task=task, strategy={"type": "full"}, model=tiny_model(), seed=0, budget=budget)
    text += '\n[strategies.lora]\n\n[strategies.broken]\ntype = "lora"\ntarget_modules = ["no_such_module"]\n'
    suite = tmp_path / "suite.toml"
    suite.write_text(text)
    host = PluginHost.load(extra=[] if RAY_ENTRY_POINT else [("ray", ray_executor)])
    assert not host.problems, host.problems
    results = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor
        code = run_suite(suite, RunOptions(output=out, executor=executor, jobs=2), echo=lambda *a, **k: None, host=host)
        assert code == 1
        results[executor] = {r.cell_id: r for r in ResultStore(out).records()}
    local, ray = results["local"], results["ray"]
    assert sorted(ray) == sorted(local)
    assert sorted((r.strategy, r.status) for r in ray.values()) == [("broken", "failed"), ("full", "ok"), ("lora", "ok")]
    full = ray["classification--full--tiny--seed0"].training
    assert full.steps == 12 and full.loss_first != full.loss_last  # it trained: the losses compared below moved
    for cell_id, record in ray.items():
        other = local[cell_id]
        assert (record.key, record.status, record.error) == (other.key, other.status, other.error), cell_id
        assert record.metrics == other.metrics and record.training == other.training, cell_id
        if record.status == "ok":
            ray_rows, local_rows = (
                next((tmp_path / name / "cells").glob(f"{cell_id}--*/predictions.jsonl")).read_text()
                for name in ("ray", "local")
            )
            assert ray_rows == local_rows, cell_id
