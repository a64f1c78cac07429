"""The ``local`` executor: every cell in its own process on this machine.

On GPUs, :class:`harness.run.scheduler.Planner` places the cells: longest first, one per GPU at a time, or up to
``[suite] max_cells_per_gpu`` on one GPU while their memory estimates fit; every worker has ``CUDA_VISIBLE_DEVICES``
pinned to its one GPU (cells sharing a GPU all see that GPU). Without a GPU, ``--jobs`` cells at once on the CPU
(longest first when earlier records tell durations, else in plan order), each with
``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set to its share of the cores (unless the user set them). Each worker runs in its own session (process group) and, on Linux, is killed by the kernel if the
harness itself dies, so a ``SIGKILL``-ed harness leaves no worker behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.api.components import Executor
from harness.api.hookspecs import hookimpl
from harness.run.devices import Device, cpu_device
from harness.run.runner import describe_exit
from harness.run.scheduler import Demand, Planner

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.cells import Cell
    from harness.run.runner import SuiteRun

PR_SET_PDEATHSIG = 1
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def child_env(device: Device, jobs: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker pinned to ``device`` (one of ``jobs`` concurrent CPU cells)."""
    env = dict(os.environ if base is None else base)
    env["CUDA_VISIBLE_DEVICES"] = device.cuda_visible_devices
    # indices come from nvidia-smi, which numbers GPUs by PCI bus; CUDA's default order is fastest first
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    if device.kind == "cpu":
        threads = str(max(1, cpu_cores() // max(1, jobs)))
        for var in THREAD_VARS:
            env.setdefault(var, threads)
    env.setdefault("PYTHONUNBUFFERED", "1")  # the log's last line is current when a worker dies
    return env


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the worker when the harness dies (``prctl(PR_SET_PDEATHSIG)``)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the harness died before prctl took effect
            os._exit(1)

    return preexec


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class _Child:
    cell: Cell
    proc: subprocess.Popen
    claim: ExitStack
    timeout_s: float | None
    deadline: float | None
    term_sent: float | None = None
    killed: bool = False

    def exited(self) -> bool:
        """Whether the worker ended, leaving it unreaped so its process group id stays reserved."""
        if self.proc.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except (AttributeError, ChildProcessError):  # pragma: no cover - no waitid, or already reaped
            return self.proc.poll() is not None

    def reap(self) -> int:
        """Kill whatever the worker left in its process group, then collect its exit status."""
        _signal_group(self.proc.pid, signal.SIGKILL)
        return self.proc.wait()


class LocalExecutor(Executor):
    """Runs each cell in its own process on this machine."""

    name = "local"
    description = (
        "each cell in its own process here: one per GPU at a time (more with max_cells_per_gpu where memory "
        "allows), or --jobs at once on the CPU"
    )
    #: Seconds between SIGTERM and SIGKILL for a cell past its timeout.
    kill_grace_s: float = 10.0
    #: Seconds workers get to exit after SIGTERM when the harness is interrupted.
    interrupt_grace_s: float = 5.0
    poll_s: float = 0.1

    def slots(self, run: SuiteRun) -> list[Device]:
        """The devices cells are placed on: every GPU; with no GPU, ``run.jobs`` CPU slots."""
        gpus = [d for d in run.devices if d.kind == "cuda"]
        if gpus:
            return gpus
        cpu = next((d for d in run.devices if d.kind == "cpu"), None) or cpu_device()
        return [cpu] * max(1, run.jobs)

    def planner(self, run: SuiteRun, slots: list[Device]) -> Planner:
        """The placement of ``run.cells`` (keys: their positions) on ``slots``: on GPUs by memory estimate with
        ``run.max_cells_per_gpu``; on CPU slots one cell each, by expected duration alone."""
        if slots[0].kind == "cuda":
            demands = [(i, run.demand(cell)) for i, cell in enumerate(run.cells)]
            return Planner(demands, [d.memory_bytes for d in slots], run.max_cells_per_gpu)
        demands = [(i, Demand(duration_s=run.demand(cell).duration_s)) for i, cell in enumerate(run.cells)]
        return Planner(demands, [None] * len(slots))

    def execute(self, run: SuiteRun) -> None:
        slots = self.slots(run)
        planner = self.planner(run, slots)
        active: dict[int, _Child] = {}
        preexec = _die_with_parent()
        try:
            replan = True
            while planner.pending or active:
                changed = False
                while replan:  # a placed cell that did not start frees its place: place again
                    replan = False
                    for index, slot in planner.place():
                        child = self._start(run, run.cells[index], slots[slot], preexec)
                        if child is None:
                            planner.release(index)
                            replan = True
                        else:
                            active[index] = child
                        changed = True
                if planner.pending and not active:  # pragma: no cover - idle GPUs always take the first pending cell
                    raise RuntimeError(f"the planner placed none of {len(planner.pending)} cells on idle devices")
                for index, child in list(active.items()):
                    if self._check(run, child):
                        del active[index]
                        planner.release(index)
                        changed = replan = True
                run.tick()
                if not changed:
                    time.sleep(self.poll_s)
        finally:
            if active:
                self._stop_all(active.values())

    def _start(
        self,
        run: SuiteRun,
        cell: Cell,
        device: Device,
        preexec: Callable[[], None] | None,
    ) -> _Child | None:
        claim = run.claim(cell)
        if claim is None:
            return None
        try:
            spec_path, _ = run.write_spec(cell, device)
            try:
                with open(run.log_path(cell), "ab") as log:
                    proc = subprocess.Popen(
                        run.worker_argv(spec_path),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=child_env(device, run.jobs),
                        start_new_session=True,
                        preexec_fn=preexec,
                    )
            except OSError as exc:
                run.finished(cell, f"could not start the worker: {exc}")
                claim.close()
                return None
        except BaseException:
            claim.close()
            raise
        timeout = run.timeout_for(cell)
        return _Child(cell, proc, claim, timeout, time.monotonic() + timeout if timeout else None)

    def _check(self, run: SuiteRun, child: _Child) -> bool:
        """Enforce the timeout; when the worker has ended, record it and release the cell. True when it ended."""
        if not child.exited():
            now = time.monotonic()
            if child.term_sent is None and child.deadline is not None and now >= child.deadline:
                child.term_sent = now
                _signal_group(child.proc.pid, signal.SIGTERM)
            elif child.term_sent is not None and not child.killed and now - child.term_sent >= self.kill_grace_s:
                child.killed = True
                _signal_group(child.proc.pid, signal.SIGKILL)
            return False
        try:
            returncode = child.reap()
            timed_out = child.timeout_s if child.term_sent is not None else None
            run.finished(child.cell, describe_exit(returncode, timed_out))
        finally:
            child.claim.close()
        return True

    def _stop_all(self, children: Iterable[_Child]) -> None:
        """Interrupted: SIGTERM every worker's group, SIGKILL what is left after a grace, release the cells."""
        children = list(children)
        for child in children:
            _signal_group(child.proc.pid, signal.SIGTERM)
        try:
            deadline = time.monotonic() + self.interrupt_grace_s
            while time.monotonic() < deadline and not all(c.exited() for c in children):
                time.sleep(0.05)
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting, kill now
            pass
        finally:
            for child in children:
                child.reap()
                child.claim.close()


@hookimpl
def harness_register_executors(register: Callable[[Executor], None]) -> None:
    register(LocalExecutor())
