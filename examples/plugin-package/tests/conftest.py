"""Test setup: the harness's pytest plugin for plugin authors, the example plugin registered, and no network.

Run after ``pip install ./examples/plugin-package`` (the entry point is then installed; :func:`example_plugin` does
nothing more). From a source checkout without installing, the package is imported from ``src/`` and registered
through ``HARNESS_EXTRA_PLUGINS`` for each test by :func:`example_plugin`, so every test except the entry-point ones
(skipped) runs the same way.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

pytest_plugins = ["harness.testing"]

ROOT = Path(__file__).resolve().parents[1]

if importlib.util.find_spec("harness_example") is None:  # not installed: use the source tree, here and in subprocesses
    sys.path.insert(0, str(ROOT / "src"))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)

# Tests never touch the network (the tiny models and the tokenizer ship with the harness).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def example_plugin(harness_plugin):
    """The plugin host with the example plugin: its entry point when installed, else registered for this test (in
    this process and in the worker processes of ``harness run``)."""
    return harness_plugin("harness_example.plugin", name="example")


@pytest.fixture
def scores_data(tmp_path: Path) -> dict[str, Path]:
    """A small copy of the example dataset: 128 training sentences, 32 validation, 64 test."""
    from harness_example.data import write_dataset

    return write_dataset(tmp_path / "scores", {"train": 128, "validation": 32, "test": 64})


@pytest.fixture
def tagging_data(tmp_path: Path) -> dict[str, Path]:
    """A small copy of the example tagging corpus: 128 training sentences, 32 validation, 64 test."""
    from harness_example.tagging_corpus import write_corpus

    return write_corpus(tmp_path / "tags", {"train": 128, "validation": 32, "test": 64})


@pytest.fixture
def harness_cli() -> list[str]:
    """The ``harness`` command of the interpreter running the tests (``python -m harness.cli``)."""
    return [sys.executable, "-m", "harness.cli"]
