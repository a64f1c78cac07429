"""Precision, attention, gradient checkpointing and compilation: the budget keys, the cell key, what runs and what the
record says ran (:mod:`harness.worker.precision`)."""

from __future__ import annotations

import json
import math

import pytest
import runtime_toys as rt
import torch

from harness.api.budget import BUDGET_OPTIONS, Budget, attn_implementation
from harness.api.cells import Cell
from harness.api.options import check_options
from harness.errors import HarnessError, ValidationError
from harness.results.records import Record, Runtime, Training
from harness.testing import run_cell, suite_toml, tiny_model, tiny_task
from harness.worker import compute, precision, training
from harness.worker.precision import ModelRuntime, attention_of, resolve_precision
from harness.worker.training import train

FAST = dict(batch_size=16, learning_rate=5e-3, warmup_steps_excluded=1)
NEW_KEYS = {"precision": "bf16-mixed", "attention": "eager", "gradient_checkpointing": True, "compile": True}


def cell_of(**budget) -> Cell:
    return Cell(
        suite="s", task="sentiment", task_type="classification", task_options={"train": "/data/train.csv"},
        strategy="lora", strategy_type="lora", strategy_options={"r": 8}, model="minilm", model_source="local",
        model_options={"path": "/models/minilm", "dtype": "float32"}, model_family="encoder", seed=1,
        budget=Budget(epochs=2.0, batch_size=32, learning_rate=5e-4, length_grouped=True, timeout_s=60.0, **budget),
    )  # fmt: skip


# -- the budget keys and the cell key --------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value", [("precision", "bf16"), ("attention", "flash"), ("compile", 1),
                                        ("gradient_checkpointing", "yes")])  # fmt: skip
def test_a_bad_value_is_one_line(key, value):
    _, problems = check_options(BUDGET_OPTIONS, {key: value}, "budget")
    assert len(problems) == 1
    assert str(problems[0]).startswith(f"budget.{key}: expected ") and "\n" not in str(problems[0])


def test_validate_refuses_a_bad_precision_with_its_place(tmp_path):
    from harness.api.host import PluginHost
    from harness.planning.suite import load_suite

    text = suite_toml(task=tiny_task(tmp_path / "data"), strategy={"type": "full"}, model=tiny_model(), seed=0,
                      budget={"precision": "fp8", "attention": "sdpa"})  # fmt: skip
    (tmp_path / "s.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ValidationError) as caught:
        load_suite(tmp_path / "s.toml", PluginHost.load())
    (problem,) = caught.value.problems
    assert "budget.precision: expected one of 'auto', 'fp32', 'bf16-mixed', 'fp16-mixed', 'bf16-true', got 'fp8'" in str(
        problem
    )


def test_new_budget_keys_at_their_defaults_leave_an_old_cells_key_unchanged():
    # the key this cell had before the keys existed (sha256 of its configuration without them, as it was computed)
    assert cell_of().key == "4c502a938324f595"
    assert cell_of(precision="auto", attention="auto", gradient_checkpointing=False, compile=False).key == cell_of().key
    old_plan = cell_of().to_json()
    for name in NEW_KEYS:
        del old_plan["budget"][name]  # a plan.json written before the keys existed
    assert Cell.from_json(old_plan).key == cell_of().key
    keys = {cell_of(**{name: value}).key for name, value in NEW_KEYS.items()}
    assert len(keys) == len(NEW_KEYS) and cell_of().key not in keys  # set away from its default, a key is hashed
    assert cell_of(precision="bf16-mixed").config()["budget"]["precision"] == "bf16-mixed"


def test_attention_passed_to_sources():
    assert attn_implementation(Budget()) is None
    assert attn_implementation(Budget(attention="eager")) == "eager"


# -- precision ---------------------------------------------------------------------------------------------------------
def test_auto_is_fp32_on_cpu_and_bf16_mixed_on_a_gpu_with_bf16(monkeypatch):
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("fp16-mixed", "cpu") == "fp16-mixed"  # torch's CPU autocast runs float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda") == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    assert resolve_precision("auto", "cuda:0") == "fp32"
    with pytest.raises(HarnessError, match=r"this GPU \(Tesla V100\) has no bfloat16; use 'fp16-mixed' or 'fp32'"):
        resolve_precision("bf16-true", "cuda")


def linear_output_dtypes(model) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    model.bert.encoder.layer[0].attention.self.query.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    return seen


def test_bf16_mixed_trains_under_autocast_with_float32_master_weights():
    run = rt.ToyRun(n_train=64)
    budget = Budget(**FAST, epochs=2, precision="bf16-mixed", early_stopping_patience=2)
    runtime = ModelRuntime.for_cell(budget, "cpu")
    model = runtime.prepare(rt.tiny_bert(0))
    seen = linear_output_dtypes(model)
    outcome = train(model, run, budget, "cpu", 0, runtime=runtime)
    assert outcome.steps == 8 and all(math.isfinite(x) for x in outcome.losses)
    assert len(outcome.validation) == 2  # validation ran, under autocast too
    assert len(seen) == 8 + 2 and set(seen) == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    described = runtime.describe(model)
    assert (described.precision, described.autocast_dtype, described.weight_dtype, described.matmul_dtype) == (
        "bf16-mixed", "bfloat16", "float32", "bfloat16",
    )  # fmt: skip


def test_bf16_true_casts_the_weights_and_trains_them_in_bf16():
    budget = Budget(**FAST, max_steps=4, precision="bf16-true")
    runtime = ModelRuntime.for_cell(budget, "cpu")
    model = runtime.prepare(rt.tiny_bert(0))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    seen = linear_output_dtypes(model)
    before = [p.detach().clone() for p in model.parameters()]
    outcome = train(model, rt.ToyRun(n_train=64), budget, "cpu", 0, runtime=runtime)
    assert all(math.isfinite(x) for x in outcome.losses) and set(seen) == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert runtime.describe(model) == Runtime("bf16-true", None, "bfloat16", "bfloat16", "sdpa", False, False)


def test_mixed_precision_casts_trainable_16_bit_weights_up_and_fp32_casts_all(capsys):
    model = rt.tiny_bert(0).to(torch.bfloat16)
    model.bert.embeddings.requires_grad_(False)
    ModelRuntime.for_cell(Budget(precision="bf16-mixed"), "cpu").prepare(model)
    assert {p.dtype for p in model.bert.embeddings.parameters()} == {torch.bfloat16}  # frozen: as loaded
    assert {p.dtype for p in model.bert.encoder.parameters()} == {torch.float32}  # master weights
    ModelRuntime.for_cell(Budget(precision="fp32"), "cpu").prepare(model)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert "16 bits cast to float32" in capsys.readouterr().err


def test_fp16_mixed_skipped_steps_count_as_steps_and_advance_the_schedule(monkeypatch):
    """A scale far too large overflows every float16 gradient: the scaler skips every update, the loop still runs
    its steps and the learning-rate schedule still advances."""
    import transformers

    schedules = []
    original = transformers.get_linear_schedule_with_warmup

    def keep(*args, **kwargs):
        schedules.append(original(*args, **kwargs))
        return schedules[-1]

    monkeypatch.setattr(transformers, "get_linear_schedule_with_warmup", keep)
    monkeypatch.setattr(precision, "GRAD_SCALER_INIT_SCALE", 2.0**100)
    budget = Budget(**FAST, max_steps=4, precision="fp16-mixed", warmup_steps=1)
    runtime = ModelRuntime.for_cell(budget, "cpu")
    model = runtime.prepare(rt.tiny_bert(0))
    before = [p.detach().clone() for p in model.parameters()]
    outcome = train(model, rt.ToyRun(n_train=64), budget, "cpu", 0, runtime=runtime)
    assert outcome.steps == 4 and outcome.scaler_skipped_steps == 4
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # nothing was applied
    assert schedules[0].last_epoch == 4 and schedules[0].get_last_lr()[0] == 0.0  # the schedule ran to its end


def test_fp16_mixed_cell_on_cpu_trains_and_says_so(tmp_path):
    record = run_cell(tmp_path, budget={"precision": "fp16-mixed", "learning_rate": 1e-3})
    assert record.status == "ok", record.error
    assert record.runtime.precision == "fp16-mixed" and record.runtime.autocast_dtype == "float16"
    assert record.training.scaler_skipped_steps < record.training.steps == 8
    assert math.isfinite(record.training.loss_first) and math.isfinite(record.training.loss_last)


def test_evaluation_runs_under_the_same_autocast(tmp_path, monkeypatch):
    seen = []
    original = training.evaluate_with_backoff

    def spy(run, model, split, *args, **kwargs):
        seen.append((split, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return original(run, model, split, *args, **kwargs)

    monkeypatch.setattr(training, "evaluate_with_backoff", spy)
    budget = {"precision": "bf16-mixed", "max_steps": None, "epochs": 1, "early_stopping_patience": 1}
    record = run_cell(tmp_path, budget=budget)
    assert record.status == "ok", record.error
    assert seen == [("validation", True, torch.bfloat16), ("test", True, torch.bfloat16)]
    assert record.config["budget"]["precision"] == "bf16-mixed" and record.runtime.precision == "bf16-mixed"
    assert record.runtime.matmul_dtype == "bfloat16" and record.runtime.weight_dtype == "float32"


def test_generation_runs_under_bf16_autocast(tmp_path):
    task = tiny_task(tmp_path / "data", n=16, n_eval=4, decision="generate")
    record = run_cell(tmp_path, task=task, model=tiny_model("decoder"), budget={"precision": "bf16-mixed",
                                                                                "max_steps": 2})  # fmt: skip
    assert record.status == "ok", record.error
    assert record.runtime.precision == "bf16-mixed" and record.evaluation.samples == 4


def test_the_default_on_cpu_is_fp32_and_the_record_says_so(tmp_path):
    record = run_cell(tmp_path, budget={"max_steps": 2})
    assert record.status == "ok", record.error
    assert record.config["budget"]["precision"] == "auto"
    assert record.runtime == Runtime("fp32", None, "float32", "float32", "sdpa", False, False)


# -- MFU -----------------------------------------------------------------------------------------------------------
def test_mfu_uses_the_peak_of_the_autocast_dtype(monkeypatch):
    from harness.worker import cell

    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    assert compute.matmul_dtype(model) == "torch.float32"
    assert compute.matmul_dtype(model, "torch.bfloat16") == "torch.bfloat16"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    state = cell.CellState(cell=None, attempt="a", device="cuda")
    cell._note_training_compute(state, model, "cuda", 100, 100, 10, 1.0, None)
    assert state.compute["peak_flops"] == pytest.approx(66.9e12)  # float32 weights, no autocast
    state.runtime = Runtime(precision="bf16-mixed", autocast_dtype="bfloat16", matmul_dtype="bfloat16")
    cell._note_training_compute(state, model, "cuda", 100, 100, 10, 1.0, None)
    assert state.compute["peak_flops"] == pytest.approx(989.4e12)


# -- attention ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("requested, ran", [("auto", "sdpa"), ("sdpa", "sdpa"), ("eager", "eager")])
def test_the_attention_implementation_is_built_and_recorded(tmp_path, requested, ran):
    record = run_cell(tmp_path, budget={"attention": requested, "max_steps": 1})
    assert record.status == "ok", record.error
    assert record.runtime.attention == ran


def test_a_model_built_without_the_request_is_switched_or_refused():
    import transformers

    model = rt.tiny_bert(0)  # the toy source builds without attn_implementation
    assert attention_of(model) == "sdpa"
    runtime = ModelRuntime.for_cell(Budget(attention="eager"), "cpu")
    if int(transformers.__version__.split(".")[0]) >= 5:
        runtime.built(model)
        assert attention_of(model) == "eager"
    else:  # transformers 4.57's BERT cannot switch once built: one clear line, never a silent sdpa
        with pytest.raises(HarnessError, match="cannot switch its attention after it is built"):
            runtime.built(model)


def test_flash_attention_on_cpu_fails_the_cell_with_one_line(tmp_path):
    record = run_cell(tmp_path, budget={"attention": "flash_attention_2"})
    assert record.status == "failed"
    assert record.error == (
        "HarnessError: budget.attention = 'flash_attention_2' needs a CUDA GPU; this cell runs on cpu "
        "(use 'sdpa' or 'auto')"
    )
    assert record.runtime.precision == "fp32"


def test_flash_attention_needs_its_package_and_16_bits(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else real(name, *a))
    with pytest.raises(HarnessError, match=r"needs the flash_attn package \(pip install flash-attn\)"):
        ModelRuntime.for_cell(Budget(attention="flash_attention_2"), "cuda")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "flash_attn" else None)
    with pytest.raises(HarnessError, match=r"runs in 16 bits: set precision to 'bf16-mixed'"):
        ModelRuntime.for_cell(Budget(attention="flash_attention_2", precision="fp32"), "cuda")
    assert ModelRuntime.for_cell(Budget(attention="flash_attention_2"), "cuda").precision == "bf16-mixed"


# -- gradient checkpointing ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_gradient_checkpointing_is_on_and_changes_no_loss(tmp_path, strategy):
    plain = run_cell(tmp_path / "plain", strategy=strategy, budget={"max_steps": 3})
    checkpointed = run_cell(tmp_path / "gc", strategy=strategy, budget={"max_steps": 3, "gradient_checkpointing": True})
    assert plain.status == checkpointed.status == "ok", (plain.error, checkpointed.error)
    assert not plain.runtime.gradient_checkpointing and checkpointed.runtime.gradient_checkpointing
    steps = [json.loads((r / "cell/steps.json").read_text())["loss"] for r in (tmp_path / "plain", tmp_path / "gc")]
    assert steps[1] == pytest.approx(steps[0], rel=1e-5)  # dropout draws replayed: the same losses
    assert checkpointed.metrics == pytest.approx(plain.metrics)


def test_gradient_checkpointing_on_a_model_without_it_is_one_line():
    runtime = ModelRuntime.for_cell(Budget(gradient_checkpointing=True), "cpu")
    with pytest.raises(HarnessError, match=r"^budget.gradient_checkpointing: Sequential has no gradient checkpointing$"):
        runtime.prepare(torch.nn.Sequential(torch.nn.Linear(2, 2)))


# -- compile -----------------------------------------------------------------------------------------------------------
def test_compile_time_is_one_off_and_the_run_is_unchanged(tmp_path, monkeypatch):
    """The compile path with dynamo's eager backend (seconds; inductor takes a minute on a CPU: the slow test)."""
    monkeypatch.setattr(precision, "COMPILE_OPTIONS", {**precision.COMPILE_OPTIONS, "backend": "eager"})
    plain = run_cell(tmp_path / "plain", budget={"max_steps": 4})
    compiled = run_cell(tmp_path / "compiled", budget={"max_steps": 4, "compile": True})
    assert plain.status == compiled.status == "ok", (plain.error, compiled.error)
    assert compiled.runtime.compiled and not plain.runtime.compiled
    assert compiled.timing.compile_s > 0 and compiled.timing.one_off_s == compiled.timing.compile_s
    assert plain.timing.compile_s is None and plain.timing.one_off_s is None
    assert compiled.timing.step_count == plain.timing.step_count and compiled.training.steps == 4
    # the warm-up restored the RNG and dropped its gradients: the same steps, the same losses
    losses = [json.loads((tmp_path / d / "cell/steps.json").read_text())["loss"] for d in ("plain", "compiled")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert compiled.timing.train_s < compiled.timing.compile_s + plain.timing.train_s * 5


@pytest.mark.slow
def test_compile_with_inductor_on_cpu(tmp_path):
    record = run_cell(tmp_path, budget={"max_steps": 4, "compile": True, "precision": "bf16-mixed"})
    assert record.status == "ok", record.error
    assert record.runtime.compiled and record.timing.compile_s > record.timing.train_s


# -- records -------------------------------------------------------------------------------------------------------
def test_records_written_before_the_runtime_fields_still_read():
    record = Record(key="k", suite="s", cell_id="c", task="t", strategy="full", model="m", seed=0, status="ok",
                    training=Training(steps=3), runtime=Runtime(precision="bf16-mixed"))  # fmt: skip
    assert Record.from_json(json.loads(json.dumps(record.to_json()))) == record
    old = record.to_json()
    del old["runtime"], old["timing"]["compile_s"], old["training"]["scaler_skipped_steps"]
    read = Record.from_json(old)
    assert read.runtime == Runtime() and read.timing.compile_s is None and read.training.scaler_skipped_steps == 0


# -- on a GPU ----------------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("requested", ["auto", "bf16-mixed", "fp16-mixed", "bf16-true", "fp32"])
def test_precisions_on_a_real_gpu(tmp_path, requested):
    record = run_cell(tmp_path, device="cuda", budget={"precision": requested})
    assert record.status == "ok", record.error
    expected = resolve_precision(requested, "cuda")
    assert record.runtime.precision == expected
    assert record.runtime.matmul_dtype == {"fp32": "float32", "fp16-mixed": "float16"}.get(expected, "bfloat16")
    assert math.isfinite(record.training.loss_last)
    if compute.peak_flops(torch.cuda.get_device_name(), record.runtime.matmul_dtype) is not None:
        assert record.compute.peak_flops == compute.peak_flops(torch.cuda.get_device_name(),
                                                               record.runtime.matmul_dtype)  # fmt: skip
