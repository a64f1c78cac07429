"""The distribution as users get it: its entry point, what `harness plugins` shows, and a light plugin module."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[1] / "suites" / "example.toml"
DISTRIBUTION = "harness-example-plugins"


def _installed() -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{DISTRIBUTION} is not installed: pip install ./examples/plugin-package")


def test_entry_point_is_installed():
    dist = _installed()
    points = [ep for ep in dist.entry_points if ep.group == "harness"]
    assert [(ep.name, ep.value) for ep in points] == [("example", "harness_example.plugin")]
    assert dist.version == "0.1.0"


def test_harness_plugins_lists_the_plugin_and_its_components(harness_cli):
    dist = _installed()
    done = subprocess.run([*harness_cli, "plugins", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    plugin = next(p for p in data["plugins"] if p["name"] == "example")
    assert plugin["module"] == "harness_example.plugin"
    assert plugin["distribution"] == DISTRIBUTION
    assert plugin["version"] == dist.version
    assert plugin["error"] is None
    assert plugin["components"] == {"task": ["regression", "tagging"], "strategy": ["bias_tuning"]}
    task = next(c for c in data["components"]["task"] if c["name"] == "regression")
    assert task["families"] == ["encoder"] and task["plugin"] == "example"
    assert {o["name"] for o in task["options"]} >= {"train", "text_column", "text_pair_column", "score_column"}
    strategy = next(c for c in data["components"]["strategy"] if c["name"] == "bias_tuning")
    assert strategy["trains"] is True
    biases = next(o for o in strategy["options"] if o["name"] == "biases")
    assert biases["default"] == "all" and biases["choices"] == ["all", "query_intermediate"]
    tagging = next(c for c in data["components"]["task"] if c["name"] == "tagging")
    assert tagging["families"] == ["encoder"] and tagging["plugin"] == "example"
    assert {o["name"] for o in tagging["options"]} >= {"train", "token_column", "tag_column", "labels", "data_seed"}
    assert not [p for p in data["problems"] if any(n in p for n in ("example", "bias_tuning", "regression", "tagging"))]


def test_harness_plugins_check_accepts_the_plugin(harness_cli):
    _installed()
    env = {**os.environ, "HARNESS_LOAD_PLUGINS": "example"}  # only this plugin: other plugins' problems are theirs
    done = subprocess.run([*harness_cli, "plugins", "--check"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


LIGHT = """
import sys
import harness_example.plugin
from harness.api.host import PluginHost
from harness.planning.suite import load_suite
from harness.planning.plan import plan

host = PluginHost.load()
assert {"regression", "tagging"} <= set(host.names("task")) and "bias_tuning" in host.names("strategy"), host.problems
cells = plan(load_suite(sys.argv[1], host), host)
assert len(cells) == 6, cells
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "transformers", "scipy", "safetensors"})
print(heavy)
"""


def test_plugin_loads_and_plans_without_torch(example_plugin):
    """`harness plugins`, `validate` and planning import the plugin module in the main process: it must stay light."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", LIGHT, str(SUITE)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
