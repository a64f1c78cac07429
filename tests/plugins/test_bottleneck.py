"""The ``bottleneck`` strategy (AdapterHub's ``adapters``): the Houlsby / Pfeiffer parameter formulas on a tiny BERT,
exactly the adapter and the task head training, a whole cell with its saved adapter, a decoder's untied ``lm_head``
left frozen, and — without ``adapters`` (the transformers 5 environment) — cells planned as skipped with the reason.

Tests marked ``adapters`` need the package (``.venv-compat``, made by ``scripts/setup-compat.sh``) and skip without it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import helpers
import pytest
import runtime_toys as rt
from harness_plugins import bottleneck
from harness_plugins.bottleneck import MISSING, BottleneckAdapters, adapters_unavailable

from harness.api.budget import Budget
from harness.api.components import CheckContext, LoadedModel
from harness.api.options import check_options
from harness.errors import HarnessError

STRATEGY = BottleneckAdapters()
UNAVAILABLE = adapters_unavailable()
L, H, FFN = 2, 128, 512  # the tiny BERT (I = FFN size) of MEASUREMENT.md's parameter table


def needs_adapters(test: Any) -> Any:
    """Mark ``test`` as needing ``adapters``; it skips, naming the reason, where the package cannot run."""
    skip = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"the bottleneck strategy {UNAVAILABLE}")
    return pytest.mark.adapters(skip(test))


@pytest.fixture
def one_thread() -> Any:
    """One intra-op thread for the training tests: at H=128 torch splits the matmuls over two threads, which makes a
    step ~80x slower (1.2 s instead of 15 ms) whenever the other core is busy; the tiny model gains nothing from it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def options(**given: Any) -> dict[str, Any]:
    resolved, problems = check_options(STRATEGY.options, given, "strategies.b")
    assert not problems, problems
    return resolved


def adapter_params(reduction_factor: int = 16) -> int:
    """One bottleneck adapter: down-projection H*b + b, up-projection b*H + H."""
    b = H // reduction_factor
    return 2 * H * b + b + H


class TinyBert(LoadedModel):
    """The toy BERT at L=2, H=128, I=512; initializer range 0.2 and no dropout, so that a frozen random backbone's
    features differ between the toy classes and the adapter and head can learn them in a few steps."""

    def tokenizer(self) -> Any:
        return None

    def model(self, auto_class: Any, **kwargs: Any) -> Any:
        import torch

        torch.manual_seed(0)
        config = rt.tiny_bert_config(
            hidden_size=H, num_hidden_layers=L, intermediate_size=FFN, initializer_range=0.2, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, **kwargs,
        )  # fmt: skip
        return auto_class.from_config(config)


def adapted(tmp_path: Path, **given: Any) -> tuple[Any, Any]:
    run = rt.ToyRun(n_train=64, n_eval=32)
    ctx = helpers.cell_context(tmp_path, strategy="b", strategy_type="bottleneck")
    return STRATEGY.apply(run.build_model(TinyBert()), run, options(**given), ctx), run


def train_loss(model: Any, run: Any) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        return float(model(**run.collate(run.examples("train"))).loss)


# -- without adapters -------------------------------------------------------------------------------------------------
def test_module_imports_without_adapters_or_torch():
    code = "import sys, harness_plugins.bottleneck; print(sorted({'adapters', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_supports_names_the_missing_package(monkeypatch):
    monkeypatch.delitem(sys.modules, "adapters", raising=False)
    real = bottleneck.importlib.util.find_spec
    monkeypatch.setattr(
        bottleneck.importlib.util, "find_spec", lambda name, *a: None if name == "adapters" else real(name, *a)
    )
    bottleneck.adapters_unavailable.cache_clear()
    try:
        reason = STRATEGY.supports(None, "encoder")
    finally:
        bottleneck.adapters_unavailable.cache_clear()
    assert reason == MISSING
    assert "pip install 'tuning-harness[adapters]'" in reason and "transformers 4.57" in reason


def test_supports_names_a_transformers_adapters_refuses(monkeypatch):
    monkeypatch.setattr(bottleneck.importlib.util, "find_spec", lambda name, *a: object())
    versions = {"transformers": "5.24.0", "adapters": "1.3.0"}
    monkeypatch.setattr(bottleneck.importlib.metadata, "version", versions.__getitem__)
    monkeypatch.setattr(bottleneck.importlib.metadata, "requires", lambda name: ["transformers~=4.57.6", "packaging"])
    bottleneck.adapters_unavailable.cache_clear()
    try:
        reason = STRATEGY.supports(None, "decoder")
    finally:
        bottleneck.adapters_unavailable.cache_clear()
    assert reason == (
        "`adapters` 1.3.0 needs transformers~=4.57.6 but this environment has transformers 5.24.0: "
        "use a transformers 4.57 environment (scripts/setup-compat.sh makes one)"
    )


def test_cells_are_planned_as_skipped_with_the_reason_without_adapters(tmp_path, monkeypatch):
    """In the transformers 5 environment as it is; where adapters is installed, with it hidden."""
    from harness.api.host import PluginHost
    from harness.planning.plan import plan
    from harness.planning.suite import load_suite

    if UNAVAILABLE is None:
        monkeypatch.setattr(bottleneck, "adapters_unavailable", lambda: MISSING)
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "sources,classification,full,bottleneck")
    host = PluginHost.load()
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(8)))
    (tmp_path / "suite.toml").write_text(
        '[suite]\nname = "s"\n[models.bert]\nsource = "tiny"\n[tasks.sentiment]\ntype = "classification"\n'
        'train = "train.csv"\n[strategies.full]\n[strategies.adapter]\ntype = "bottleneck"\nconfig = "pfeiffer"\n'
    )
    cells = {c.strategy: c for c in plan(load_suite(tmp_path / "suite.toml", host), host)}
    assert cells["full"].skip_reason is None
    assert cells["adapter"].skip_reason == (UNAVAILABLE or MISSING)
    assert cells["adapter"].budget.learning_rate == 1e-4 and cells["full"].budget.learning_rate == 2e-5


def test_check_refuses_unknown_extra_keys_and_the_ones_with_options():
    found = STRATEGY.check(
        options(extra={"dropout": 0.1, "reduction_factor": 8, "ln_aftr": True}),
        "strategies.b",
        CheckContext(Path(), True),
    )
    assert [p.where for p in found] == ["strategies.b.extra.reduction_factor", "strategies.b.extra.ln_aftr"]
    assert "set it with the option `reduction_factor`" in found[0].message and "ln_after" in found[1].message
    assert check_options(STRATEGY.options, {"config": "lora"}, "s")[1][0].where == "s.config"
    assert check_options(STRATEGY.options, {"reduction_factor": 0.5}, "s")[1][0].where == "s.reduction_factor"


# -- with adapters ----------------------------------------------------------------------------------------------------
@needs_adapters
def test_houlsby_trains_the_adapter_and_the_head_only_and_saves_them_as_an_adapter(tmp_path, one_thread):
    import adapters
    import torch

    from harness.worker.cell import count_params
    from harness.worker.training import train

    model, run = adapted(tmp_path)
    params = count_params(model, run.head_prefixes)
    head = H * 2 + 2
    assert params.head == head
    assert params.trainable - head == 2 * L * adapter_params() == 8_736  # MEASUREMENT.md: 2L(2Hb+b+H)
    assert params.total == sum(p.numel() for p in run.build_model(TinyBert()).parameters()) + 8_736
    assert params.stored_bytes == 4 * params.trainable
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in trained if not n.startswith("classifier.")} == {
        f"bert.encoder.layer.{i}.{block}.adapters.{bottleneck.ADAPTER_NAME}.{part}"
        for i in range(L)
        for block in ("attention.output", "output")
        for part in ("adapter_down.0.weight", "adapter_down.0.bias", "adapter_up.weight", "adapter_up.bias")
    }
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapter_before = model.bert.encoder.layer[0].output.adapters["harness"].adapter_up.weight.detach().clone()

    before = train_loss(model, run)
    outcome = train(model, run, Budget(max_steps=24, batch_size=16, learning_rate=1e-2), "cpu", seed=0)
    assert train_loss(model, run) < 0.2 * before and outcome.loss_last < outcome.loss_first
    assert run.evaluate(model, "test", 32, "cpu").metrics["accuracy"] >= 0.7
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert not torch.equal(model.bert.encoder.layer[0].output.adapters["harness"].adapter_up.weight, adapter_before)

    STRATEGY.save(model, tmp_path / "artifact")
    files = {p.name for p in (tmp_path / "artifact").iterdir()}
    assert files == {"adapter_config.json", "adapter.safetensors", "head_config.json", "model_head.safetensors"}
    config = json.loads((tmp_path / "artifact/adapter_config.json").read_text())["config"]
    assert (config["mh_adapter"], config["output_adapter"], config["reduction_factor"]) == (True, True, 16)
    assert json.loads((tmp_path / "artifact/head_config.json").read_text())["num_labels"] == 2
    # the saved adapter and head turn the same pretrained model into the tuned one
    fresh = run.build_model(TinyBert())
    adapters.init(fresh)
    fresh.load_adapter(str(tmp_path / "artifact"), use_safetensors=True, set_active=True)
    batch = run.collate(run.examples("test"))
    batch.pop("labels")
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.allclose(fresh(**batch).logits, model(**batch).logits, atol=1e-6)


@needs_adapters
def test_pfeiffer_has_one_adapter_per_layer_and_takes_its_settings(tmp_path):
    from harness.worker.cell import count_params

    model, run = adapted(tmp_path, config="pfeiffer", reduction_factor=8, non_linearity="gelu", extra={"dropout": 0.1})
    assert count_params(model, run.head_prefixes).trainable == L * adapter_params(8) + H * 2 + 2  # L(2Hb+b+H) + head
    config = model.adapters_config.get(bottleneck.ADAPTER_NAME)
    assert (config.mh_adapter, config.output_adapter, config.non_linearity, config.dropout) == (
        False,
        True,
        "gelu",
        0.1,
    )


@needs_adapters
def test_a_decoder_trains_the_adapter_alone_and_saves_no_lm_head(tmp_path):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    class TextRun(rt.ToyRun):
        head_prefixes = ()

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=100, n_embd=64, n_layer=2, n_head=2, tie_word_embeddings=False)
    model = STRATEGY.apply(GPT2LMHeadModel(config), TextRun(), options(), helpers.cell_context(tmp_path))
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all(".adapters.harness." in n for n in trained) and not model.lm_head.weight.requires_grad
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * 2 * (2 * 64 * 4 + 4 + 64)
    ids = torch.tensor([[5, 6, 7, 8]])
    assert model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3).shape == (1, 7)
    STRATEGY.save(model, tmp_path / "artifact")
    assert {p.name for p in (tmp_path / "artifact").iterdir()} == {"adapter_config.json", "adapter.safetensors"}


@needs_adapters
def test_a_cell_on_a_tiny_t5_translates_with_the_adapter_and_saves_it(tmp_path, monkeypatch, one_thread):
    from harness.api.host import PluginHost
    from harness.worker.cell import run_cell

    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "sources,translation,bottleneck")
    host = PluginHost.load()
    pairs = [("a cat", "eine Katze"), ("a dog", "ein Hund"), ("two cats", "zwei Katzen"), ("the man", "der Mann")]
    (tmp_path / "d.en").write_text("".join(s + "\n" for s, _ in pairs))
    (tmp_path / "d.de").write_text("".join(t + "\n" for _, t in pairs))
    task = host.task("translation")
    task_options, problems = check_options(
        task.options,
        {"source_lang": "en", "target_lang": "de", "train": "d.en", "train_target": "d.de", "test": "d.en",
         "test_target": "d.de", "max_new_tokens": 4},
        "tasks.t", tmp_path,
    )  # fmt: skip
    assert not problems
    model_options = check_options(host.model_source("tiny").options, {"architecture": "t5", "layers": 1}, "m")[0]
    cell = helpers.make_cell(
        task_type="translation", task_options=task_options, model_options=model_options,
        model_family="encoder-decoder", strategy="b", strategy_type="bottleneck", strategy_options=options(),
        budget=Budget(max_steps=2, batch_size=2, learning_rate=1e-3, eval_batch_size=4, warmup_steps_excluded=0),
    )  # fmt: skip
    record = run_cell(cell, host, tmp_path / "cell", "cpu", "a1", save_artifacts=True)
    assert record.status == "ok" and record.training.steps == 2 and "bleu" in record.metrics
    # hidden 64, b = 4: attention and feed-forward adapters in the encoder layer and the decoder layer
    assert record.params.trainable == 2 * 2 * (2 * 64 * 4 + 4 + 64) and record.params.head == 0
    artifact = tmp_path / "cell/artifact"
    assert {p.name for p in artifact.iterdir()} == {"adapter_config.json", "adapter.safetensors"}
    assert record.params.artifact_bytes == sum(p.stat().st_size for p in artifact.iterdir())
    assert len((tmp_path / "cell/predictions.jsonl").read_text().splitlines()) == 4


@needs_adapters
def test_an_architecture_adapters_does_not_support_is_one_clear_error(tmp_path):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    config = GPTNeoXConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    with pytest.raises(HarnessError, match=r"^strategies\.b: adapters 1\.3\.0 cannot adapt 'gpt_neox' models"):
        STRATEGY.apply(GPTNeoXForCausalLM(config), rt.ToyRun(), options(), helpers.cell_context(tmp_path, strategy="b"))
