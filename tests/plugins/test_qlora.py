"""The ``qlora`` strategy and the load options it needs: registration and planning without torch (skipped without a
CUDA GPU or bitsandbytes), options, the ``BitsAndBytesConfig`` it asks for, the worker handing a strategy's load options
to the model source (and failing a source that cannot take them), LoRA's parameter counts, and a real 4-bit cell on a
GPU (skipped without CUDA and bitsandbytes)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import helpers
import pytest
import runtime_toys as rt
import torch
from harness_plugins import qlora as module
from harness_plugins.peft_strategies import Lora
from harness_plugins.qlora import QLora, quantization_kwargs

from harness.api.budget import Budget
from harness.api.components import CellContext, CheckContext, ModelSource, Strategy, TaskRun
from harness.api.hookspecs import hookimpl
from harness.api.host import EXTRA_ENV, LOAD_ENV, PluginHost
from harness.api.options import check_options
from harness.errors import HarnessError
from harness.worker.cell import count_params, run_cell

L, H, FFN, K = 2, 128, 512, 2
HEAD = H * K + K
CUDA_AND_BNB = torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None


@pytest.fixture(scope="module")
def host() -> PluginHost:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(LOAD_ENV, "sources,peft,qlora,classification,ner")
        patch.delenv(EXTRA_ENV, raising=False)
        return PluginHost.load()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("qlora-data")
    rows = ["text,label"] + [
        f"the film was {'good' if i % 3 else 'bad'} {i},{'pos' if i % 3 else 'neg'}" for i in range(24)
    ]
    (folder / "train.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def resolved(component, given) -> dict:
    options, problems = check_options(component.options, given, "x", None)
    assert not problems, problems
    return options


def make_cell(host, data, strategy="qlora", strategy_options=None, **budget):
    values = dict(host.strategy(strategy).budget_defaults)
    values.update(epochs=1, batch_size=8, max_length=32, eval_batch_size=8, warmup_steps_excluded=0, **budget)
    return helpers.make_cell(
        task="classification", task_type="classification", strategy=strategy, strategy_type=strategy,
        task_options=resolved(host.task("classification"), {"train": str(data / "train.csv"),
                                                            "test": str(data / "train.csv")}),
        strategy_options=resolved(host.strategy(strategy), strategy_options or {}),
        model_options=resolved(host.model_source("tiny"), {"layers": L, "hidden": H, "heads": 2, "intermediate": FFN}),
        budget=Budget(**values),
    )  # fmt: skip


# -- registration and planning -------------------------------------------------------------------------------------
def test_registration_and_planning_import_neither_torch_nor_bitsandbytes():
    code = (
        "import sys; from harness_plugins import qlora; qlora.unavailable(); "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'bitsandbytes') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_options_are_loras_and_the_quantisation(host):
    strategy = host.strategy("qlora")
    assert isinstance(strategy, QLora) and isinstance(strategy, Lora) and strategy.trains
    names = [o.name for o in strategy.options]
    assert names == [o.name for o in Lora.options[:-1]] + [
        "bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype", "skip_modules", "peft",
    ]  # fmt: skip
    options = resolved(strategy, {})
    assert (options["r"], options["lora_alpha"], options["lora_dropout"]) == (8, 16, 0.1)
    assert options["bnb_4bit_quant_type"] == "nf4" and options["bnb_4bit_use_double_quant"] is True
    assert options["bnb_4bit_compute_dtype"] == "bfloat16"
    assert strategy.budget_defaults == host.strategy("lora").budget_defaults
    described = strategy.describe()
    assert described["peft_config"] == "LoraConfig" and "use_dora" in described["peft_fields"]


def test_bad_options_are_validation_problems(host):
    strategy = host.strategy("qlora")
    _, problems = check_options(strategy.options, {"bnb_4bit_quant_type": "int4"}, "strategies.qlora", None)
    assert [str(p) for p in problems] == [
        "strategies.qlora.bnb_4bit_quant_type: expected one of 'nf4', 'fp4', got 'int4'"
    ]
    _, problems = check_options(strategy.options, {"bnb_4bit_compute_dtype": "float8"}, "strategies.qlora", None)
    assert str(problems[0]).startswith("strategies.qlora.bnb_4bit_compute_dtype: expected one of 'bfloat16'")
    options = resolved(strategy, {"peft": {"bnb_4bit_quant_type": "fp4", "use_dorra": True}})
    found = [str(p) for p in strategy.check(options, "strategies.qlora", CheckContext(Path("."), offline=True))]
    assert found == [
        "strategies.qlora.peft.bnb_4bit_quant_type: set it as strategies.qlora.bnb_4bit_quant_type, not in the peft table",
        "strategies.qlora.peft.use_dorra: not a field of peft's LoraConfig (did you mean 'use_dora'?)",
    ]


def test_cells_are_skipped_without_a_cuda_gpu_or_bitsandbytes(host, monkeypatch):
    strategy, task = host.strategy("qlora"), host.task("classification")
    monkeypatch.setattr(module, "cuda_visible", lambda: False)
    assert (
        strategy.supports(task, "encoder")
        == "qlora needs a CUDA GPU (bitsandbytes 4-bit kernels); none is visible here"
    )
    monkeypatch.setattr(module, "cuda_visible", lambda: True)
    monkeypatch.setattr(module, "bitsandbytes_installed", lambda: False)
    assert strategy.supports(task, "decoder") == "qlora needs bitsandbytes (pip install 'tuning-harness[qlora]')"
    monkeypatch.setattr(module, "bitsandbytes_installed", lambda: True)
    assert [strategy.supports(task, f) for f in ("encoder", "decoder", "encoder-decoder")] == [None] * 3
    # what LoRA cannot run, qlora cannot either, with LoRA's reason
    assert "tasks with a head" in strategy.supports(SimpleNamespace(name="headless"), "encoder")


@pytest.fixture
def uncached():
    """``_machine_has_gpu`` computed afresh in the test, and forgotten after it (fakes must not leak)."""
    module._machine_has_gpu.cache_clear()
    yield
    module._machine_has_gpu.cache_clear()


def test_cuda_visibility_without_torch(monkeypatch, uncached):
    monkeypatch.setattr(module, "_nvml_gpus", lambda: 1)
    for hidden in ("", "-1", " -1,0"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert module.cuda_visible() is False
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert module.cuda_visible() is True
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    module._machine_has_gpu.cache_clear()
    monkeypatch.setattr(module, "_nvml_gpus", lambda: 0)
    assert module.cuda_visible() is False
    module._machine_has_gpu.cache_clear()
    monkeypatch.setattr(module, "_nvml_gpus", lambda: None)  # no NVML binding: nvidia-smi on the PATH decides
    monkeypatch.setattr(module.shutil, "which", lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    assert module.cuda_visible() is True


def test_nvml_counts_gpus_none_without_a_driver_unknown_without_the_binding(monkeypatch):
    class NVMLError(Exception):
        pass

    calls = []
    fake = types.SimpleNamespace(
        nvmlInit=lambda: calls.append("init"), nvmlDeviceGetCount=lambda: 2, nvmlShutdown=lambda: calls.append("down")
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert module._nvml_gpus() == 2 and calls == ["init", "down"]

    def broken():
        raise NVMLError("NVML Shared Library Not Found")

    monkeypatch.setattr(fake, "nvmlInit", broken)
    assert module._nvml_gpus() == 0
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    assert module._nvml_gpus() is None


# -- what the strategy asks the model source for -------------------------------------------------------------------
def test_quantization_kwargs_keep_the_head_and_lm_head_unquantised():
    options = resolved(QLora(), {"skip_modules": ["embed_out"]})
    assert quantization_kwargs(options, ("classifier.", "score")) == {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": "bfloat16",
        "llm_int8_skip_modules": ["classifier", "embed_out", "lm_head", "score"],
    }
    fp4 = resolved(QLora(), {"bnb_4bit_quant_type": "fp4", "bnb_4bit_use_double_quant": False,
                             "bnb_4bit_compute_dtype": "float16"})  # fmt: skip
    assert quantization_kwargs(fp4)["bnb_4bit_quant_type"] == "fp4"
    assert quantization_kwargs(fp4)["llm_int8_skip_modules"] == ["lm_head"]


def test_load_options_are_a_bitsandbytes_config_on_cuda(monkeypatch, tmp_path):
    import transformers
    from transformers import BitsAndBytesConfig

    strategy = QLora()
    options = resolved(strategy, {"bnb_4bit_compute_dtype": "float16"})
    run = SimpleNamespace(head_prefixes=("classifier", "score"))
    ctx = helpers.cell_context(tmp_path, strategy="ql")
    with pytest.raises(HarnessError) as error:
        strategy.load_options(run, options, ctx)
    assert (
        str(error.value) == "strategies.ql: qlora needs a CUDA GPU (bitsandbytes 4-bit kernels); this cell runs on cpu"
    )
    cuda = helpers.cell_context(tmp_path, device="cuda", strategy="ql")
    monkeypatch.setattr(module, "bitsandbytes_installed", lambda: False)
    with pytest.raises(HarnessError, match=r"^strategies.ql: qlora needs bitsandbytes \(pip install"):
        strategy.load_options(run, options, cuda)
    assert Lora().load_options(run, options, cuda) == {}  # the default: nothing
    if importlib.util.find_spec("bitsandbytes") is None and int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("transformers 4.x builds a 4-bit BitsAndBytesConfig only with bitsandbytes installed")
    monkeypatch.setattr(module, "bitsandbytes_installed", lambda: True)
    config = strategy.load_options(run, options, cuda)["quantization_config"]  # built without bitsandbytes or CUDA
    assert isinstance(config, BitsAndBytesConfig) and config.load_in_4bit and not config.load_in_8bit
    assert (config.bnb_4bit_quant_type, config.bnb_4bit_use_double_quant) == ("nf4", True)
    assert config.bnb_4bit_compute_dtype == torch.float16
    assert config.llm_int8_skip_modules == ["classifier", "lm_head", "score"]


# -- the worker hands load options to the source ----------------------------------------------------------------
SEEN: list[Mapping[str, Any]] = []


class AskingStrategy(Strategy):
    """Evaluates the model as built; asks for a harmless load option (a BERT config field)."""

    name = "asking"
    trains = False

    def load_options(self, run: TaskRun, options: Mapping[str, Any], ctx: CellContext) -> Mapping[str, Any]:
        return {"classifier_dropout": 0.25}

    def apply(self, model: Any, run: TaskRun, options: Mapping[str, Any], ctx: CellContext) -> Any:
        SEEN.append({"config": model.config.classifier_dropout})
        return model


class ListeningSource(rt.ToySource):
    name = "listening"
    takes_load_options = True

    def open(self, options: Mapping[str, Any], ctx: CellContext) -> Any:
        SEEN.append(dict(ctx.load_options))
        return rt.ToyLoaded(options["dropout"])


class DeafSource(rt.ToySource):
    name = "deaf"


probe = types.ModuleType("load_options_probe")
probe.harness_register_strategies = hookimpl(lambda register: register(AskingStrategy()))
probe.harness_register_model_sources = hookimpl(lambda register: (register(ListeningSource()), register(DeafSource())))


@pytest.fixture
def probe_host(monkeypatch) -> PluginHost:
    monkeypatch.setenv(LOAD_ENV, "sources")
    monkeypatch.delenv(EXTRA_ENV, raising=False)
    return PluginHost.load(extra=[("toyrt", rt), ("probe", probe)])


def toy_cell(source: str, strategy: str = "asking", options: Mapping[str, Any] | None = None):
    return helpers.make_cell(
        task="toy", task_type="toy-cls", task_options={"n_train": 8, "n_eval": 8}, strategy=strategy,
        strategy_type=strategy, model_source=source, model_options=options or {"dropout": 0.1},
        budget=Budget(eval_batch_size=8),
    )  # fmt: skip


def test_the_worker_passes_the_strategys_load_options_to_the_source(probe_host, tmp_path):
    SEEN.clear()
    record = run_cell(toy_cell("listening"), probe_host, tmp_path, "cpu", "a1")
    assert record.status == "ok"
    assert SEEN == [{"classifier_dropout": 0.25}, {"config": None}]  # the toy source saw them (and ignored them)


def test_a_source_that_cannot_take_load_options_fails_the_cell_in_one_line(probe_host, tmp_path):
    with pytest.raises(HarnessError) as error:
        run_cell(toy_cell("deaf"), probe_host, tmp_path, "cpu", "a1")
    message = str(error.value)
    assert "\n" not in message and message.startswith(
        "strategy 'asking' loads the model with classifier_dropout, which model source 'deaf' cannot pass on"
    )
    assert not ModelSource.takes_load_options and not probe_host.model_source("deaf").takes_load_options
    assert all(probe_host.model_source(s).takes_load_options for s in ("hub", "local", "tiny"))


def test_tiny_and_local_sources_load_with_the_load_options(probe_host, tmp_path):
    """``tiny`` saves its random model and reloads it with the options (same weights); ``local`` passes them on."""
    SEEN.clear()
    tiny = probe_host.model_source("tiny")
    resolved_options = resolved(tiny, {"architecture": "bert", "layers": 1, "hidden": 32, "heads": 2})
    record = run_cell(toy_cell("tiny", options=resolved_options), probe_host, tmp_path / "cell", "cpu", "a1")
    assert record.status == "ok" and SEEN == [{"config": 0.25}]

    from transformers import AutoModelForSequenceClassification

    plain_ctx = helpers.cell_context(tmp_path)
    asked = CellContext(cell=plain_ctx.cell, device="cpu", out_dir=tmp_path, load_options={"classifier_dropout": 0.25})
    plain = tiny.open(resolved_options, plain_ctx).model(AutoModelForSequenceClassification, num_labels=2)
    reloaded = tiny.open(resolved_options, asked).model(AutoModelForSequenceClassification, num_labels=2)
    assert plain.config.classifier_dropout is None and reloaded.config.classifier_dropout == 0.25
    assert reloaded.config.num_labels == 2
    weights = reloaded.state_dict()
    assert all(torch.equal(tensor, weights[name]) for name, tensor in plain.state_dict().items())

    plain.save_pretrained(tmp_path / "folder")
    local = probe_host.model_source("local")
    loaded = local.open(resolved(local, {"path": str(tmp_path / "folder")}), asked)
    assert loaded.model(AutoModelForSequenceClassification, num_labels=2).config.classifier_dropout == 0.25


# -- LoRA on top of the (quantised) base ----------------------------------------------------------------------------
def prepared(host, data, tmp_path, device="cpu", options=None):
    cell = make_cell(host, data, strategy_options=options)
    ctx = CellContext(cell=cell, device=device, out_dir=tmp_path)
    strategy = host.strategy("qlora")
    run = host.task("classification").setup(cell.task_options, ctx)
    if device.startswith("cuda"):
        ctx = CellContext(cell=cell, device=device, out_dir=tmp_path,
                          load_options=strategy.load_options(run, cell.strategy_options, ctx))  # fmt: skip
    model = run.build_model(host.model_source("tiny").open(cell.model_options, ctx))
    return run, model, strategy, ctx


def test_apply_refuses_a_model_that_was_not_loaded_in_4_bits(host, data, tmp_path):
    run, model, strategy, ctx = prepared(host, data, tmp_path)
    with pytest.raises(
        HarnessError, match=r"^strategies.qlora: the model was not loaded in 4 bits \(model source 'tiny'"
    ):
        strategy.apply(model, run, ctx.cell.strategy_options, ctx)


def test_lora_on_the_prepared_base_counts_as_lora(host, data, tmp_path):
    """On the CPU the base cannot be quantised; marked as 4-bit, the rest of ``apply`` (peft's k-bit preparation,
    then LoRA with the quantisation options left out) gives LoRA's 4 L r H trainable parameters and bytes."""
    run, model, strategy, ctx = prepared(host, data, tmp_path, options={"r": 8, "bnb_4bit_quant_type": "fp4"})
    model.is_loaded_in_4bit = True
    wrapped = strategy.apply(model, run, ctx.cell.strategy_options, ctx)
    params = count_params(wrapped, run.head_prefixes)
    assert params.head == HEAD and params.trainable == 4 * L * 8 * H + HEAD
    assert strategy.stored_bytes(wrapped) == 4 * params.trainable == params.stored_bytes
    config = wrapped.peft_config["default"]
    assert config.r == 8 and sorted(config.target_modules) == ["query", "value"]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_AND_BNB, reason="needs CUDA and bitsandbytes")
def test_a_real_qlora_cell_on_a_gpu(host, data, tmp_path):
    import bitsandbytes as bnb

    run, model, strategy, ctx = prepared(host, data, tmp_path, device="cuda")
    assert model.is_loaded_in_4bit
    four_bit = [name for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(four_bit) == L * 6 + 1  # query, key, value, attention output, intermediate, output; the pooler
    assert not any(name.startswith("classifier") for name in four_bit)
    wrapped = strategy.apply(model, run, ctx.cell.strategy_options, ctx)
    params = count_params(wrapped, run.head_prefixes)
    assert params.trainable == 4 * L * 8 * H + HEAD
    assert strategy.stored_bytes(wrapped) == 4 * params.trainable

    record = run_cell(make_cell(host, data), host, tmp_path / "cell", "cuda", "g1")
    assert record.status == "ok", record.error
    assert record.params.trainable == 4 * L * 8 * H + HEAD and record.params.stored_bytes == 4 * record.params.trainable
    assert record.memory.gpu_peak_allocated_bytes > 0
