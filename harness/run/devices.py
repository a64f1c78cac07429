"""Finding the devices cells run on, without importing torch.

GPUs come from ``--devices``, else ``CUDA_VISIBLE_DEVICES`` (respected as the user set it; ``""`` or ``"-1"`` means
none), else ``nvidia-smi``; with no GPU, cells run on the CPU. GPU indices are the ones the user sees: the
``nvidia-smi`` index, or an entry of ``CUDA_VISIBLE_DEVICES`` when that is set, so the index is exactly what a
cell's process gets as its own ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from harness.errors import HarnessError

NVIDIA_SMI_QUERY = ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]
NVIDIA_SMI_TIMEOUT_S = 10.0
_NO_GPU = {"", "-1"}


@dataclass(frozen=True)
class Device:
    """A device a cell can be pinned to.

    :param kind: ``"cuda"`` or ``"cpu"``.
    :param index: the GPU index (``None`` for the CPU).
    :param name: e.g. ``"NVIDIA H100 80GB HBM3"``, or the CPU model.
    :param memory_bytes: total memory, when known.
    :param uuid: the ``CUDA_VISIBLE_DEVICES`` entry when the user named the GPU by UUID (``GPU-...``, ``MIG-...``).
    """

    kind: str
    index: int | None
    name: str
    memory_bytes: int | None = None
    uuid: str | None = None

    @property
    def label(self) -> str:
        """Short name for displays: ``cuda:0`` or ``cpu``."""
        return f"cuda:{self.index}" if self.kind == "cuda" else "cpu"

    @property
    def cuda_visible_devices(self) -> str:
        """The value of ``CUDA_VISIBLE_DEVICES`` for a process pinned to this device (``""`` hides every GPU)."""
        if self.kind != "cuda":
            return ""
        return self.uuid or str(self.index)

    def describe(self) -> str:
        memory = f", {self.memory_bytes / 2**30:.0f} GiB" if self.memory_bytes else ""
        return f"{self.label} ({self.name}{memory})"


def query_nvidia_smi() -> str | None:
    """The CSV ``nvidia-smi`` prints for :data:`NVIDIA_SMI_QUERY`, or ``None`` when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def parse_nvidia_smi(text: str) -> list[Device]:
    """Parse ``index, name, memory.total`` (MiB) lines; lines that do not parse are ignored."""
    devices = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        memory = int(parts[-1]) * 2**20 if parts[-1].isdigit() else None
        devices.append(Device("cuda", int(parts[0]), ", ".join(parts[1:-1]), memory))
    return devices


def cpu_device() -> Device:
    """The CPU, named after its model where Linux says it."""
    name = platform.processor() or platform.machine() or "cpu"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        memory: int | None = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = None
    return Device("cpu", None, name, memory)


def visible_gpus(
    env: Mapping[str, str] | None = None, nvidia_smi: Callable[[], str | None] = query_nvidia_smi
) -> list[Device]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else every GPU ``nvidia-smi`` lists."""
    env = os.environ if env is None else env
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is not None and value.strip() in _NO_GPU:
        return []
    listed = parse_nvidia_smi(nvidia_smi() or "")
    if value is None:
        return listed
    by_index = {d.index: d for d in listed}
    devices = []
    for position, entry in enumerate(e.strip() for e in value.split(",")):
        if entry == "-1":  # CUDA ignores this entry and every one after it
            break
        if entry.isdigit():
            known = by_index.get(int(entry))
            devices.append(known or Device("cuda", int(entry), f"GPU {entry}"))
        elif entry:
            devices.append(Device("cuda", position, entry, uuid=entry))
    return devices


def discover_devices(
    spec: str | None = None,
    env: Mapping[str, str] | None = None,
    nvidia_smi: Callable[[], str | None] = query_nvidia_smi,
) -> list[Device]:
    """The devices a run schedules cells on.

    :param spec: ``--devices``: ``"cpu"``, or comma-separated GPU indices (a subset of :func:`visible_gpus`);
        ``None`` uses every visible GPU, else the CPU.
    :param env: environment to read ``CUDA_VISIBLE_DEVICES`` from (default ``os.environ``).
    :param nvidia_smi: returns ``nvidia-smi``'s CSV output or ``None`` (tests inject a fake).
    :raises HarnessError: for a malformed spec or an index that is not available.
    """
    if spec is not None and spec.strip().lower() == "cpu":
        return [cpu_device()]
    gpus = visible_gpus(env, nvidia_smi)
    if spec is None or not spec.strip():
        return gpus or [cpu_device()]
    wanted: list[int] = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry.isdigit():
            raise HarnessError(f"--devices: expected 'cpu' or comma-separated GPU indices (e.g. 0,2), got {spec!r}")
        if int(entry) not in wanted:
            wanted.append(int(entry))
    by_index = {d.index: d for d in gpus}
    for index in wanted:
        if index not in by_index:
            available = ", ".join(str(i) for i in by_index) or "none (no GPU visible; use --devices cpu)"
            raise HarnessError(f"--devices: unknown GPU index {index}; available: {available}")
    return [by_index[i] for i in wanted]
