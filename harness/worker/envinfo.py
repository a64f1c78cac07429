"""The environment a cell ran in, recorded with its result: versions, hardware, suite hash, git commit, seed.

Every probe is best-effort: a missing library or tool gives ``None``, never an exception.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import __version__

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.host import PluginHost

PROBE_TIMEOUT_S = 5.0


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _run(args: list[str], cwd: Path | None = None) -> str | None:
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if done.returncode == 0 and lines else None


def driver_version() -> str | None:
    """NVIDIA driver version from ``nvidia-smi`` (``None`` without it)."""
    return _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(cwd: Path | None = None) -> str | None:
    """``git rev-parse HEAD`` of the repository containing ``cwd`` (default: the current directory, where the study
    was started; ``harness_git_commit`` in the record is harness's own checkout, when it is one)."""
    return _run(["git", "rev-parse", "HEAD"], cwd=cwd or Path.cwd())


def _torch_info(device: str | None) -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"torch": None, "torch_cuda": None, "cudnn": None, "device_name": None}
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    on_cuda = bool(device and device.startswith("cuda")) and torch.cuda.is_available()
    return {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": cudnn,
        "device_name": torch.cuda.get_device_name(0) if on_cuda else "CPU",
    }


def _torch_threads() -> int | None:
    """Intra-op CPU threads (part of bitwise reproducibility on CPU: cores // --jobs per cell)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


def collect(
    host: PluginHost | None = None,
    *,
    suite_sha256: str | None = None,
    seed: int | None = None,
    device: str | None = None,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """Describe this process's environment for a record."""
    return {
        "harness": __version__,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        **_torch_info(device),
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "accelerate": _version("accelerate"),
        "adapters": _version("adapters"),  # AdapterHub (the bottleneck strategy; transformers 4.57 environments)
        "plugins": host.versions() if host is not None else {},
        "device": device,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "driver": driver_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "hostname": socket.gethostname(),
        "suite_sha256": suite_sha256,
        "git_commit": git_commit(cwd),
        "harness_git_commit": git_commit(Path(__file__).resolve().parent),
        "torch_threads": _torch_threads(),
        "seed": seed,
    }
