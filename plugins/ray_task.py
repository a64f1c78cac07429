"""The Ray executor's task side (:mod:`harness_plugins.ray_executor`): what runs on a Ray node for one cell.

:func:`run_cell_job` is a plain function (the driver wraps it with ``ray.remote``), so it is tested without Ray:
it runs the worker command for the cell's spec, in place when the node shares the results directory, else in a
scratch folder whose files and log tail it returns; it enforces the cell's time limit on the node.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness_plugins.local import _die_with_parent, _signal_group

from harness.results.store import LOG, PROGRESS_FILE, SPEC
from harness.run.devices import Device

#: Environment variables of the harness passed on to every cell (besides every ``HARNESS_*``): a node's own
#: environment applies otherwise.
FORWARDED_ENV = ("PYTHONPATH", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "OMP_NUM_THREADS",
                 "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")  # fmt: skip
#: Bytes of a cell's log a task returns when the node does not share the results directory (the last ones).
LOG_TAIL_BYTES = 1 << 20
#: Files of the cell folder not brought back from a scratch folder (the log is brought back separately).
NOT_RETURNED = {SPEC, PROGRESS_FILE, LOG}

@dataclass(frozen=True)
class RayDevice(Device):
    """Where a cell runs as far as the driver knows: a GPU or CPUs that Ray assigns on some node."""

    @property
    def label(self) -> str:
        return "ray:gpu" if self.kind == "cuda" else "ray:cpu"

    @property
    def cuda_visible_devices(self) -> str:
        return "assigned by Ray" if self.kind == "cuda" else ""


@dataclass(frozen=True)
class CellJob:
    """What one Ray task gets (pickled): the worker command and spec as the driver wrote them, and how to run it.

    :param threads: ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` of a CPU cell (unless forwarded); ``None`` on a GPU.
    :param shared: ``None`` detects whether the node shares the results directory; tests force it.
    """

    argv: list[str]
    spec: dict[str, Any]
    spec_path: str
    driver_python: str
    env: dict[str, str]
    cwd: str
    timeout_s: float | None
    kill_grace_s: float
    interrupt_grace_s: float
    gpu: bool
    threads: int | None
    shared: bool | None = None


@dataclass(frozen=True)
class CellOutcome:
    """How a task's worker ended. ``files`` and ``log`` are filled only when the node did not share the folder."""

    node: str
    shared: bool
    returncode: int | None = None
    timed_out: bool = False
    error: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    log: bytes = b""
    left_on_node: str | None = None
    #: Where and when the worker ran, for the makespan report: ``node:cuda:N`` (Ray's GPU ids) or ``node:cpu``,
    #: and wall-clock start and end (``time.time()``).
    lane: str | None = None
    started_wall: float | None = None
    ended_wall: float | None = None


# -- the Ray task (runs on the node; a plain function, so it is testable without Ray) -------------------------------
def run_cell_job(job: CellJob, poll_s: float = 0.1) -> CellOutcome:
    """Run the worker of ``job`` here and say how it ended. ``KeyboardInterrupt`` (a cancelled task) stops the
    worker (SIGTERM, SIGKILL after ``job.interrupt_grace_s``) and is re-raised."""
    node = platform.node()
    spec_path = Path(job.spec_path)
    shared = job.shared if job.shared is not None else _same_spec(spec_path, job.spec.get("attempt"))
    scratch = None if shared else Path(tempfile.mkdtemp(prefix="harness-ray-"))
    if scratch is not None:  # laid out like the results directory: <scratch>/cells/<cell folder>/
        out_dir = scratch / "cells" / Path(job.spec["out_dir"]).name
        out_dir.mkdir(parents=True)
        spec_path = out_dir / SPEC
        spec_path.write_text(json.dumps({**job.spec, "out_dir": str(out_dir)}), encoding="utf-8")
    argv = [sys.executable if a == job.driver_python else a.replace(job.spec_path, str(spec_path)) for a in job.argv]
    log_path = spec_path.parent / LOG
    gpu_ids = os.environ.get("CUDA_VISIBLE_DEVICES", "") if job.gpu else ""
    ran = {"lane": f"{node}:cuda:{gpu_ids}" if gpu_ids else f"{node}:cpu", "started_wall": time.time()}
    with open(log_path, "ab") as log:
        offset = log.tell()
        log.write(f"=== ray: task on node {node} (pid {os.getpid()}) ===\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=cell_env(job),
                cwd=job.cwd if os.path.isdir(job.cwd) else None, start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        except OSError as exc:
            return _outcome(node, scratch, log_path, offset, error=f"could not start the worker on node {node}: {exc}",
                            ended_wall=time.time(), **ran)
    try:
        returncode, timed_out = _wait(proc, job, poll_s)
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    return _outcome(node, scratch, log_path, offset, returncode=returncode, timed_out=timed_out,
                    ended_wall=time.time(), **ran)


def cell_env(job: CellJob, base: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: the node's (with Ray's ``CUDA_VISIBLE_DEVICES`` for a GPU task), then what the
    harness forwards; a CPU cell sees no GPU and gets ``job.threads`` threads unless they were set."""
    env = dict(os.environ if base is None else base)
    env.update(job.env)
    if job.gpu:
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            if job.threads and var not in job.env:
                env[var] = str(job.threads)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _same_spec(path: Path, attempt: str | None) -> bool:
    try:
        return attempt is not None and json.loads(path.read_text(encoding="utf-8")).get("attempt") == attempt
    except (OSError, ValueError, AttributeError):
        return False


def _wait(proc: subprocess.Popen, job: CellJob, poll_s: float) -> tuple[int | None, bool]:
    """Wait for the worker, enforcing the time limit; the exit status and whether it timed out. The worker is reaped
    only after its process group got SIGKILL, so the group id cannot have been reused."""
    started = time.monotonic()
    term_sent = killed = None
    try:
        while not _exited(proc):
            now = time.monotonic()
            if term_sent is None and job.timeout_s is not None and now - started >= job.timeout_s:
                term_sent = now
                _signal_group(proc.pid, signal.SIGTERM)
            elif term_sent is not None and killed is None and now - term_sent >= job.kill_grace_s:
                killed = now
                _signal_group(proc.pid, signal.SIGKILL)
            elif killed is not None and now - killed >= 30.0:  # unkillable (stuck in the kernel): give up on it
                return None, True
            time.sleep(poll_s)
    except KeyboardInterrupt:
        _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + job.interrupt_grace_s
        while not _exited(proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    _signal_group(proc.pid, signal.SIGKILL)  # whatever the worker left in its process group
    return proc.wait(), term_sent is not None


def _exited(proc: subprocess.Popen) -> bool:
    """Whether the worker ended, leaving it unreaped (its pid, the group id, stays reserved)."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except (AttributeError, ChildProcessError):  # pragma: no cover - no waitid, or already reaped
        return proc.poll() is not None


def _outcome(node: str, scratch: Path | None, log_path: Path, offset: int, **how: Any) -> CellOutcome:
    if scratch is None:
        return CellOutcome(node, True, **how)
    files, left = {}, None
    for path in sorted(log_path.parent.iterdir()):
        if path.is_file() and path.name not in NOT_RETURNED:
            files[path.name] = path.read_bytes()
        elif path.is_dir():
            left = str(path)
    with open(log_path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(offset, size - LOG_TAIL_BYTES))
        log = fh.read()
    if size - offset > LOG_TAIL_BYTES:
        log = f"[... {size - offset - LOG_TAIL_BYTES} bytes of the log left out ...]\n".encode() + log
    if left is None:
        shutil.rmtree(scratch, ignore_errors=True)
    return CellOutcome(node, False, files=files, log=log, left_on_node=left, **how)
