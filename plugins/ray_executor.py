"""The ``ray`` executor: every cell as a Ray task, on a Ray cluster or a local Ray instance (extra ``ray``).

Where: ``RAY_ADDRESS`` (set by ``harness run --address auto|HOST:PORT``) names a cluster to connect to; without it
a local instance with this machine's cores and the GPUs of ``--devices`` is started and shut down at the end; a
process that has initialised Ray already keeps its instance. Each cell asks Ray for one GPU when the cluster has
GPUs, else for the smallest node's CPUs ÷ ``--jobs``, and is submitted when the cluster has room for it.

How: the driver claims the cell and writes its ``spec.json`` as the ``local`` executor does (same resume and
locking). The task (:func:`run_cell_job`) runs the worker command on its node and enforces the time limit there
(SIGTERM to the worker's process group, SIGKILL after ``kill_grace_s``). A node that sees that very spec shares the
results directory and the worker writes in place; any other runs it in a scratch folder and returns its files and
log tail, which the driver writes into the results directory (``artifact/`` stays on the node). A lost Ray worker
or node is retried once by Ray (``max_retries=1``), then only that cell is recorded failed. Ctrl-C cancels the
tasks (each stops its worker) and re-raises. docs/cli.md, "Running on a Ray cluster", has the user's view.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness_plugins.local import cpu_cores

from harness.api.components import Executor
from harness.api.hookspecs import hookimpl
from harness.errors import HarnessError
from harness.results.store import LOG
from harness.run.devices import Device
from harness.run.runner import describe_exit

from .ray_task import (  # noqa: F401  (re-exported: the task side, as this module exported it)
    FORWARDED_ENV,
    LOG_TAIL_BYTES,
    NOT_RETURNED,
    CellJob,
    CellOutcome,
    RayDevice,
    cell_env,
    run_cell_job,
)

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.cells import Cell
    from harness.run.runner import SuiteRun

INSTALL_HINT = "the ray executor needs Ray: pip install 'tuning-harness[ray]'"
#: Seconds to wait for a ``HOST:PORT`` cluster address to accept a connection.
CONNECT_TIMEOUT_S = 10.0
#: Errors meaning the task's worker process or node was lost (Ray retries those ``max_retries`` times).
LOST = ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "LocalRayletDiedError", "ObjectLostError",
        "OwnerDiedError", "RaySystemError")  # fmt: skip


# -- the driver ---------------------------------------------------------------------------------------------------
def import_ray() -> Any:
    """The ``ray`` module, or a one-line :class:`HarnessError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise HarnessError(INSTALL_HINT) from None
    return ray


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast when ``HOST:PORT`` does not accept TCP connections (Ray itself retries for many minutes);
    ``auto`` and ``ray://`` addresses are left to Ray.

    :raises ConnectionError: nothing listens there, or the host is unknown or unreachable.
    """
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port}: {exc.strerror or exc}") from None


def describe_ray_error(exc: BaseException, tries: int) -> str:
    """The ``error`` of a cell whose Ray task failed: a lost worker or node (after ``tries`` tries), or another."""
    if any(cls.__name__ in LOST for cls in type(exc).__mro__):
        return f"lost the Ray worker or node running the cell ({tries} tries): {_first_line(exc)}"
    cause = getattr(exc, "cause", None)  # a RayTaskError: what the task raised
    return f"the Ray task failed: {_first_line(cause if isinstance(cause, BaseException) else exc)}"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def capacity(nodes: list[dict[str, Any]], cpus: float, gpus: float) -> int:
    """How many tasks asking for ``cpus`` CPUs and ``gpus`` GPUs the alive nodes (``ray.nodes()``) hold at once."""
    total = 0
    for node in nodes:
        if not node.get("Alive", node.get("alive")):
            continue
        resources = node.get("Resources", {})
        fits = [int(resources.get("CPU", 0) // cpus)] if cpus else []
        if gpus:
            fits.append(int(resources.get("GPU", 0) // gpus))
        total += min(fits) if fits else 0
    return total


@dataclass
class _Flight:
    cell: Cell
    ref: Any
    claim: contextlib.ExitStack
    spec_path: Path
    timeout_s: float | None


class RayExecutor(Executor):
    """Runs each cell as a Ray task (see the module docstring)."""

    name = "ray"
    description = "each cell as a Ray task: on a Ray cluster (--address) or a local Ray instance; needs the ray extra"
    #: Seconds between SIGTERM and SIGKILL for a cell past its time limit.
    kill_grace_s: float = 10.0
    #: Seconds tasks get to stop their worker after Ctrl-C before they are force-cancelled.
    interrupt_grace_s: float = 5.0
    #: Ray's retries of a task whose worker or node was lost.
    max_retries: int = 1
    poll_s: float = 0.2
    capacity_every_s: float = 2.0
    #: ``None``: each task detects whether its node shares the results directory; tests force it.
    shared_fs: bool | None = None

    def execute(self, run: SuiteRun) -> None:
        ray = import_ray()
        with self._connected(ray, run) as say:
            run.progress.note(say)
            run.clock_start = time.monotonic()  # the makespan report's zero: when cells can begin, after Ray started
            self._run(ray, run)

    @contextlib.contextmanager
    def _connected(self, ray: Any, run: SuiteRun) -> Iterator[str]:
        """Use the initialised Ray, else connect to ``RAY_ADDRESS``, else start (and end) a local instance."""
        options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        address = os.environ.get("RAY_ADDRESS") or None
        if ray.is_initialized():
            yield f"ray: using the Ray instance of this process ({_describe(ray)})"
            return
        if address:
            try:
                check_reachable(address)
                ray.init(address=address, **options)
            except (ConnectionError, ValueError, RuntimeError, OSError) as exc:
                raise HarnessError(f"Ray cluster {address} (--address, RAY_ADDRESS): cannot connect ({exc})") from None
            said = f"ray: connected to the cluster at {address} ({_describe(ray)})"
        else:
            gpus = [d for d in run.devices if d.kind == "cuda"]
            saved = os.environ.get("CUDA_VISIBLE_DEVICES")
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(d.cuda_visible_devices for d in gpus)  # what Ray hands out
            try:
                ray.init(address="local", num_cpus=cpu_cores(), num_gpus=len(gpus), include_dashboard=False, **options)
            except (ConnectionError, RuntimeError, OSError) as exc:
                raise HarnessError(f"cannot start a local Ray instance ({exc})", exit_code=1) from None
            finally:
                if saved is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = saved
            said = f"ray: started a local Ray instance ({_describe(ray)})"
        try:
            yield said
        finally:
            ray.shutdown()

    def resources(self, ray: Any, run: SuiteRun) -> tuple[float, float]:
        """``(num_cpus, num_gpus)`` of every cell: one GPU (and one CPU) when the cluster has GPUs, else the
        smallest node's CPUs ÷ ``--jobs``."""
        if ray.cluster_resources().get("GPU", 0) >= 1:
            return 1.0, 1.0
        cores = [n["Resources"]["CPU"] for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1]
        return float(max(1, int(min(cores, default=1) // max(1, run.jobs)))), 0.0

    def _run(self, ray: Any, run: SuiteRun) -> None:
        cpus, gpus = self.resources(ray, run)
        device = RayDevice("cuda" if gpus else "cpu", None, "a GPU Ray assigns" if gpus else "CPUs Ray assigns")
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=self.max_retries, retry_exceptions=False)(run_cell_job)
        pending, active = deque(run.cells), {}
        window, window_at = 1, float("-inf")
        try:
            while pending or active:
                if time.monotonic() - window_at >= self.capacity_every_s:
                    window, window_at = max(1, capacity(ray.nodes(), cpus, gpus)), time.monotonic()
                    run.lanes = max(run.lanes or 0, window)  # the makespan report's G: cells the cluster runs at once
                while pending and len(active) < window:
                    flight = self._submit(run, pending.popleft(), device, task, int(cpus) if not gpus else None)
                    if flight is not None:
                        active[flight.ref] = flight
                if active:
                    ready, _ = ray.wait(list(active), num_returns=len(active), timeout=self.poll_s)
                    for ref in ready:
                        self._finish(ray, run, active.pop(ref))
                run.tick()
        finally:
            if active:
                self._stop_all(ray, active)

    def _submit(self, run: SuiteRun, cell: Cell, device: Device, task: Any, threads: int | None) -> _Flight | None:
        claim = run.claim(cell)
        if claim is None:
            return None
        try:
            spec_path, _ = run.write_spec(cell, device)
            env = {k: v for k, v in os.environ.items() if k.startswith("HARNESS_") or k in FORWARDED_ENV}
            job = CellJob(
                argv=[str(a) for a in run.worker_argv(spec_path)], spec=json.loads(spec_path.read_text("utf-8")),
                spec_path=str(spec_path), driver_python=sys.executable, env=env, cwd=os.getcwd(),
                timeout_s=run.timeout_for(cell), kill_grace_s=self.kill_grace_s,
                interrupt_grace_s=self.interrupt_grace_s, gpu=device.kind == "cuda", threads=threads,
                shared=self.shared_fs,
            )
            ref = task.options(name=f"harness {cell.cell_id}").remote(job)
        except BaseException:
            claim.close()
            raise
        return _Flight(cell, ref, claim, spec_path, job.timeout_s)

    def _finish(self, ray: Any, run: SuiteRun, flight: _Flight) -> None:
        """Bring the task's files back when its node had its own, and record the cell."""
        try:
            try:
                outcome: CellOutcome = ray.get(flight.ref)
            except ray.exceptions.RayError as exc:
                run.finished(flight.cell, describe_ray_error(exc, 1 + self.max_retries))
                return
            error = outcome.error or describe_exit(outcome.returncode, flight.timeout_s if outcome.timed_out else None)
            if not outcome.shared:
                try:
                    _bring_back(flight.spec_path.parent, outcome)
                except OSError as exc:
                    error = f"the files node {outcome.node} sent back could not be written: {exc}"
            ran = None
            if outcome.lane and outcome.started_wall is not None and outcome.ended_wall is not None:
                ran = (outcome.lane, outcome.started_wall, outcome.ended_wall)
            run.finished(flight.cell, error if outcome.shared else f"{error} (on node {outcome.node})", ran=ran)
        finally:
            flight.claim.close()

    def _stop_all(self, ray: Any, active: dict[Any, _Flight]) -> None:
        """Interrupted: cancel every task (its worker gets SIGTERM), force-cancel those still running after a grace,
        release the cells. A task that has ended is never cancelled again: a forced cancel that crosses the reply of
        a task just ending aborts the driver (Ray 2.60: "Tried to complete task that was not pending"; the race of
        ray-project/ray#54738)."""
        refs, ended = list(active), []
        try:
            for ref in refs:
                ray.cancel(ref)
            ended, _ = ray.wait(refs, num_returns=len(refs), timeout=self.interrupt_grace_s + 1.0)
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
            pass
        finally:
            with contextlib.suppress(Exception):
                ended, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in set(refs) - set(ended):
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            for flight in active.values():
                flight.claim.close()


def _bring_back(cell_dir: Path, outcome: CellOutcome) -> None:
    """Write the files a task returned into the cell's folder (atomically) and append its log."""
    for name, data in outcome.files.items():
        if Path(name).name != name or name.startswith("."):
            continue
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=cell_dir)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, cell_dir / name)
    with open(cell_dir / LOG, "ab") as log:
        log.write(outcome.log)
        if outcome.left_on_node:
            log.write(f"=== ray: {outcome.left_on_node} left on node {outcome.node} ===\n".encode())


def _describe(ray: Any) -> str:
    resources = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return f"{nodes} node(s), {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs"


@hookimpl
def harness_register_executors(register: Callable[[Executor], None]) -> None:
    register(RayExecutor())
