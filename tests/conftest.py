from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # test-only plugin modules (toy_plugin) importable by name

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Validation remembers data files it has read (harness.tasklib.datacheck): tests keep that out of the user's cache.
os.environ.setdefault("HARNESS_CACHE_DIR", tempfile.mkdtemp(prefix="harness-test-cache-"))


def shared_data() -> Path | None:
    """The real public datasets beside the project (../shared/data), or None when absent."""
    candidates = [os.environ.get("HARNESS_SHARED_DATA"), ROOT.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture
def shared_data_dir() -> Path:
    path = shared_data()
    if path is None:
        pytest.skip("../shared/data is absent")
    return path


@pytest.fixture
def toy_host(monkeypatch):
    """A plugin host with only the toy plugin (no entry points)."""
    import toy_plugin

    from harness.api.host import PluginHost

    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "")
    return PluginHost.load(extra=[("toy", toy_plugin)])
