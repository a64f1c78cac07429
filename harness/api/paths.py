"""Resolving paths written in suite files, and whether the hub may be asked (:func:`offline`).

A path is absolute, relative to the suite file's folder, or ``pkg:DISTRIBUTION_MODULE/sub/path`` for a file that a
Python package ships (real weights and data that install from the package registry). ``pkg:`` paths are found with
``importlib.util.find_spec`` so the package is never imported (some have broken ``__init__`` modules).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

PKG_PREFIX = "pkg:"


def resolve_path(spec: str, base_dir: Path | None = None) -> Path:
    """Turn a suite path into a filesystem path; raise ``FileNotFoundError`` with a clear message if a ``pkg:`` module
    is not installed.  Existence of the final path is not checked here."""
    if spec.startswith(PKG_PREFIX):
        module, _, rest = spec[len(PKG_PREFIX):].partition("/")
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
        if found is None or not found.submodule_search_locations:
            raise FileNotFoundError(
                f"package {module!r} is not installed (needed for {spec!r}; pip install it, see README)"
            )
        root = Path(next(iter(found.submodule_search_locations)))
        return root / rest if rest else root
    path = Path(spec).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def offline() -> bool:
    """True when the user asked for no hub access (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    return any(os.environ.get(v, "").lower() in {"1", "true", "yes", "on"} for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
