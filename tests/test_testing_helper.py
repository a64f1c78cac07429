"""The plugin authors' pytest plugin (harness.testing): opting in, registering a plugin for one test, tiny models and
tasks, one cell in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from harness.api.host import EXTRA_ENV, PluginHost

pytest_plugins = ["pytester", "harness.testing"]

#: A third-party plugin as an author would write it: a strategy training only biases and the task head, and one
#: that fails while preparing the model.
BIAS_ONLY = """
from harness.api.components import Strategy
from harness.api.hookspecs import hookimpl


class BiasOnly(Strategy):
    name = "bias-only"
    description = "train the biases and the task head"
    budget_defaults = {"learning_rate": 1e-3}

    def apply(self, model, run, options, ctx):
        for name, param in model.named_parameters():
            param.requires_grad_(name.endswith(".bias") or name.startswith(tuple(run.head_prefixes)))
        return model


class Explodes(Strategy):
    name = "explodes"
    description = "raises while preparing the model"

    def apply(self, model, run, options, ctx):
        raise RuntimeError("boom")


@hookimpl
def harness_register_strategies(register):
    register(BiasOnly())
    register(Explodes())
"""


@pytest.fixture(scope="module", autouse=True)
def _plugins_imported() -> None:
    """Import the installed plugins before any pytester run, whose sys.modules snapshot would drop them again."""
    PluginHost.load()


@pytest.fixture
def ht() -> types.ModuleType:
    """harness.testing, imported only once pytest has loaded it as a plugin (an import at the top of this module would
    come first, and pytest warns that it cannot rewrite the plugin's asserts)."""
    import harness.testing

    return harness.testing


@pytest.fixture
def bias_only(tmp_path: Path) -> Path:
    path = tmp_path / "plugin_src" / "bias_only_plugin.py"
    path.parent.mkdir()
    path.write_text(BIAS_ONLY, encoding="utf-8")
    return path


# -- opting in -----------------------------------------------------------------------------------------------------
def test_import_loads_neither_torch_nor_plugins():
    code = "import sys, harness.testing; print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'transformers', 'harness_plugins'}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_conftest_opt_in_registers_for_one_test_only(pytester: pytest.Pytester):
    pytester.makeconftest('pytest_plugins = ["harness.testing"]')
    pytester.makepyfile(bias_only_plugin=BIAS_ONLY)
    pytester.syspathinsert()
    pytester.makepyfile(
        test_author="""
        import os
        from harness.api.host import PluginHost

        def test_registered(harness_plugin):
            host = harness_plugin("bias_only_plugin")
            assert "bias-only" in host.names("strategy")
            assert "bias-only" in PluginHost.load().names("strategy")
            assert os.environ["HARNESS_EXTRA_PLUGINS"] == "bias_only_plugin=bias_only_plugin"

        def test_gone_after_the_test():
            assert "bias-only" not in PluginHost.load().names("strategy")
            assert "HARNESS_EXTRA_PLUGINS" not in os.environ
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_command_line_opt_in_and_nothing_without_it(pytester: pytest.Pytester):
    pytester.makepyfile(
        test_data="""
        def test_tiny_task(harness_tiny_task):
            table = harness_tiny_task("ner", n=4)
            assert table["type"] == "ner"
        """
    )
    pytester.runpytest("-p", "harness.testing", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'harness_tiny_task' not found*"])


def test_a_broken_plugin_fails_the_test_with_its_import_error(pytester: pytest.Pytester):
    pytester.makeconftest('pytest_plugins = ["harness.testing"]')
    pytester.makepyfile(broken_plugin="import not_a_module_anywhere\n")
    pytester.syspathinsert()
    pytester.makepyfile(
        test_broken="""
        def test_uses_it(harness_plugin):
            harness_plugin("broken_plugin")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*plugin 'broken_plugin' (module broken_plugin) did not load cleanly:*",
            "*plugin 'broken_plugin' failed to import: ModuleNotFoundError: No module named 'not_a_module_anywhere'*",
            "*broken_plugin.py*line 1*",
        ]
    )


# -- registering ---------------------------------------------------------------------------------------------------
def test_register_by_path_reaches_worker_processes(harness_plugin, bias_only, tmp_path):
    host = harness_plugin(bias_only)
    assert {"bias-only", "explodes"} <= set(host.names("strategy")) and "full" in host.names("strategy")
    code = "from harness.api.host import PluginHost; print(','.join(PluginHost.load().names('strategy')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert "bias-only" in done.stdout.strip().split(",")
    assert str(bias_only.parent) in os.environ["PYTHONPATH"].split(os.pathsep)


def test_register_a_module_object_and_refuse_one_not_importable(harness_plugin):
    import toy_plugin

    assert "toy-strategy" in harness_plugin(toy_plugin).names("strategy")
    assert os.environ[EXTRA_ENV] == "toy_plugin=toy_plugin"
    assert harness_plugin("harness_plugins.full").names("strategy")  # an entry point loads it already: left alone
    assert os.environ[EXTRA_ENV] == "toy_plugin=toy_plugin"
    with pytest.raises(ValueError, match="cannot be imported by name"):
        harness_plugin(types.ModuleType("built_in_memory"))


def test_a_conflicting_component_name_fails_the_test(harness_plugin, tmp_path):
    path = tmp_path / "second_full.py"
    path.write_text(BIAS_ONLY.replace('"bias-only"', '"full"'), encoding="utf-8")
    with pytest.raises(pytest.fail.Exception, match="strategy 'full' is registered by plugin 'full' and by plugin"):
        harness_plugin(path)


# -- tiny models and tasks -----------------------------------------------------------------------------------------
def test_tiny_tables(ht, tmp_path):
    assert ht.tiny_model("decoder", layers=1) == {
        "source": "tiny",
        "architecture": "gpt2",
        "layers": 1,
        "hidden": 32,
        "heads": 2,
        "intermediate": 64,
        "tokenizer": "pkg:harness/testdata/tokenizer",
    }
    table = ht.tiny_task(tmp_path, n=6, n_eval=2, decision="generate")
    assert table["type"] == "classification" and table["decision"] == "generate"
    rows = Path(table["train"]).read_text(encoding="utf-8").splitlines()
    assert rows[0] == "text,label" and len(rows) == 7
    for row in rows[1:]:  # the rule: a positive keyword means positive
        text, label = row.split(",")
        assert (label == "positive") == bool({"good", "great", "fine", "nice"} & set(text.split()))
    again = ht.tiny_task(tmp_path / "again", n=6, n_eval=2)["train"]
    assert again != table["train"] and Path(again).read_text() == Path(table["train"]).read_text()  # seeded
    with pytest.raises(ValueError, match="unknown tiny task kind"):
        ht.tiny_task(tmp_path, "qa")


# -- one cell in-process -------------------------------------------------------------------------------------------
def test_run_cell_full_fine_tuning(ht, harness_run_cell, harness_tiny_task, tmp_path):
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        record = harness_run_cell(task=harness_tiny_task(), model=ht.tiny_model())
        assert not torch.are_deterministic_algorithms_enabled()  # the cell's seeding does not leak into the test
    finally:
        torch.use_deterministic_algorithms(before)
    assert record.status == "ok", record.error
    assert "accuracy" in record.metrics and record.primary_metric == "accuracy"
    assert record.params.trainable == record.params.total > 0
    assert record.training.steps == ht.TINY_BUDGET["max_steps"]
    assert record.config["budget"]["batch_size"] == ht.TINY_BUDGET["batch_size"]
    cell = tmp_path / "harness-run-1" / "cell"
    assert json.loads((cell / "record.json").read_text())["status"] == "ok"
    assert (cell / "predictions.jsonl").is_file()


def test_run_cell_with_a_registered_strategy(harness_plugin, harness_run_cell, bias_only):
    harness_plugin(bias_only)
    record = harness_run_cell(strategy="bias-only")
    assert record.status == "ok", record.error
    assert 0 < record.params.trainable < record.params.total
    assert record.config["budget"]["learning_rate"] == 1e-3  # the plugin's budget default


def test_run_cell_records_a_failure_like_a_worker(harness_plugin, harness_run_cell, bias_only, capsys):
    harness_plugin(bias_only)
    record = harness_run_cell(strategy="explodes")
    assert (record.status, record.error) == ("failed", "RuntimeError: boom")
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("family", "kind"), [("decoder", "classification"), ("encoder-decoder", "ner"), ("encoder", "ner")]
)
def test_run_cell_on_every_family(ht, harness_run_cell, harness_tiny_task, family, kind):
    record = harness_run_cell(task=harness_tiny_task(kind, n=16), model=ht.tiny_model(family), budget={"max_steps": 2})
    assert record.status == "ok", record.error
    assert ("accuracy" if kind == "classification" else "f1") in record.metrics


def test_run_cell_skipped_and_invalid(ht, harness_run_cell, tmp_path):
    skipped = harness_run_cell(strategy="zero_shot")
    assert skipped.status == "skipped" and "needs a decoder or encoder-decoder" in skipped.error
    with pytest.raises(pytest.fail.Exception, match=r"does not validate:\n.*strategies\.full\.rate: unknown key"):
        harness_run_cell(strategy={"type": "full", "rate": 2})
    with pytest.raises(pytest.fail.Exception, match="unknown strategy 'nope'"):
        ht.run_cell(tmp_path / "direct", strategy="nope", task="classification")
