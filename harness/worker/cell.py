"""Running one cell in-process (inside its worker): seed, load, prepare, train, evaluate, measure, record.

Files written in the cell's folder: ``predictions.jsonl`` (one JSON object a line: ``id``, ``input``,
``prediction``, ``reference``, then any other keys the task gives), ``steps.json`` (per-step times and losses, the
samples behind the step statistics) and, with ``save_artifacts``, ``artifact/`` (what the strategy saves: adapters as
adapters, a full checkpoint for full fine-tuning; safetensors). In-context learning trains nothing and saves nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.api.cells import Cell
from harness.api.components import CellContext, ModelSource, TaskRun
from harness.errors import HarnessError
from harness.results.records import Compute, Evaluation, Memory, Params, Record, Runtime, Timing, Training, cell_record
from harness.results.store import ARTIFACT, LOG, PREDICTIONS, STEPS, VALIDATION_PREDICTIONS, now
from harness.worker import compute
from harness.worker.measure import GpuMemoryMeter, peak_rss_bytes, synchronize
from harness.worker.precision import ModelRuntime

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.host import PluginHost

#: Prefixes wrappers add to parameter names (PEFT's LoRA-style ``base_model.model.`` and prompt-learning
#: ``base_model.``, DDP, torch.compile), stripped before matching head prefixes.
WRAPPER_PREFIXES = ("base_model.model.", "base_model.", "module.", "_orig_mod.")

Progress = Callable[[str, int, int], None]


@dataclass
class CellState:
    """What is known about a running cell so far; a failure still records every measurement taken before it."""

    cell: Cell
    attempt: str
    device: str
    started_at: str = field(default_factory=now)
    started: float = field(default_factory=time.perf_counter)
    timing: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    params: Params = field(default_factory=Params)
    training: Training = field(default_factory=Training)
    evaluation: Evaluation = field(default_factory=Evaluation)
    compute: dict[str, Any] = field(default_factory=dict)
    runtime: Runtime = field(default_factory=Runtime)
    metrics: dict[str, float] = field(default_factory=dict)
    primary_metric: str | None = None
    metric_info: dict[str, str] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    predictions: str | None = None
    validation_metrics: dict[str, float] = field(default_factory=dict)
    validation_predictions: str | None = None
    gpu_meter: GpuMemoryMeter | None = None

    def record(self, status: str, error: str | None = None) -> Record:
        """The record of the cell as it stands (total time and peak memory taken now)."""
        self.timing["total_s"] = time.perf_counter() - self.started
        self.memory["peak_rss_bytes"] = peak_rss_bytes()
        if self.gpu_meter is not None and self.gpu_meter.start_allocated is not None:
            try:
                gpu = self.gpu_meter.finish()
                self.memory.update(
                    gpu_start_allocated_bytes=gpu.start_allocated,
                    gpu_peak_allocated_bytes=gpu.peak_allocated,
                    gpu_peak_reserved_bytes=gpu.peak_reserved,
                )
            except Exception:  # a broken device must not hide the original error
                pass
        return cell_record(
            self.cell,
            status,
            error,
            metrics=dict(self.metrics),
            primary_metric=self.primary_metric,
            metric_info=dict(self.metric_info),
            params=self.params,
            timing=Timing(**self.timing),
            memory=Memory(**self.memory),
            training=self.training,
            evaluation=self.evaluation,
            compute=Compute(**self.compute),
            runtime=self.runtime,
            env={**self.env, "attempt": self.attempt, "device": self.device},
            started_at=self.started_at,
            finished_at=now(),
            log=LOG,
            predictions=self.predictions,
            validation_metrics=dict(self.validation_metrics),
            validation_predictions=self.validation_predictions,
        )


def _energy_meter(device: str) -> compute.EnergyMeter | None:
    """The NVML energy meter of the cell's GPU, started; ``None`` on a CPU or without a usable counter."""
    if not device.startswith("cuda"):
        return None
    meter = compute.energy_meter()
    if not meter.available:
        return None
    meter.start()
    return meter


def _note_training_compute(
    state: CellState, model: Any, device: str, n: int, n_trainable: int, tokens: int, train_s: float,
    energy: compute.EnergyMeter | None,
) -> None:
    """Training FLOPs and MFU (:mod:`harness.worker.compute`; the peak of the dtype the matmuls ran in,
    ``runtime.matmul_dtype``, else the weights'), and the training's GPU energy, into the cell's state."""
    flops = compute.training_flops(n, n_trainable, tokens)
    peak = None
    if device.startswith("cuda"):
        import torch

        dtype = state.runtime.matmul_dtype or compute.matmul_dtype(model)
        peak = compute.peak_flops(torch.cuda.get_device_name(), dtype)
    state.compute.update(train_flops=flops, peak_flops=peak, mfu=compute.mfu(flops, train_s, peak))
    if energy is not None:
        state.compute["train_energy_j"] = energy.stop()


def seed_everything(seed: int, device: str) -> None:
    """Seed python, numpy, torch (and CUDA); deterministic kernels on CPU, where identical metrics are promised."""
    import torch
    from transformers import set_seed

    set_seed(seed)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)


def _strip_wrappers(name: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix) :], True
    return name


#: PEFT keeps a trained copy of the task head (``modules_to_save``) beside the frozen pretrained one
#: (``original_module``); the frozen original is an inert duplicate, left out so totals stay comparable.
PEFT_HEAD_ORIGINAL = ".original_module."


def count_params(model: Any, head_prefixes: Sequence[str]) -> Params:
    """Total, trainable and head parameter counts (shared parameters counted once), and the bytes of the trainable
    parameters (what must be stored to reproduce the tuned model from the pretrained one)."""
    total = trainable = head = stored = 0
    for name, param in model.named_parameters():
        if PEFT_HEAD_ORIGINAL in name:
            continue
        n = compute.logical_numel(param)  # a 4-bit weight (QLoRA's base) counts as the weights it packs
        total += n
        if param.requires_grad:
            trainable += n
            stored += n * param.element_size()
        if head_prefixes and _strip_wrappers(name).startswith(tuple(head_prefixes)):
            head += n
    return Params(
        total=total,
        trainable=trainable,
        trainable_pct=100.0 * trainable / total if total else 0.0,
        head=head,
        stored_bytes=stored,
    )


def folder_bytes(directory: Path) -> int:
    """Bytes of the files under ``directory``."""
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


#: Characters ``str.splitlines`` breaks on that JSON leaves raw; escaped so any line reader sees one row a line.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def write_predictions(path: Path, predictions: Sequence[Mapping[str, Any]]) -> None:
    """One JSON object a line (UTF-8): ``id``, ``input``, ``prediction``, ``reference``, then any other keys."""
    with open(path, "w", encoding="utf-8") as fh:
        for pred in predictions:
            row = {k: pred.get(k) for k in ("id", "input", "prediction", "reference")}
            row.update({k: v for k, v in pred.items() if k not in row})
            fh.write(json.dumps(row, ensure_ascii=False, default=_json_default).translate(_LINE_BREAKS) + "\n")


def _evaluate_validation(
    state: CellState, run: TaskRun, model: Any, eval_batch: Any, device: str, out_dir: Path, runtime: ModelRuntime
) -> None:
    """Score the validation split (a search trial's selection metric) and save its predictions beside the test's."""
    from harness.worker.training import evaluate_with_backoff

    run.prepare("validation")
    started = time.perf_counter()
    with runtime.autocast():
        result = evaluate_with_backoff(run, model, "validation", eval_batch, device)
    synchronize(device)
    state.timing["validation_s"] = time.perf_counter() - started
    state.validation_metrics = {k: float(v) for k, v in result.metrics.items()}
    write_predictions(out_dir / VALIDATION_PREDICTIONS, result.predictions)
    state.validation_predictions = VALIDATION_PREDICTIONS


def with_load_options(ctx: CellContext, options: Mapping[str, Any], source: ModelSource) -> CellContext:
    """``ctx`` carrying the strategy's load options for ``source`` (:meth:`Strategy.load_options`); a source that
    cannot honour them fails the cell rather than load a model the strategy does not expect."""
    options = dict(options)
    if options and not source.takes_load_options:
        raise HarnessError(
            f"strategy {ctx.cell.strategy!r} loads the model with {', '.join(sorted(options))}, which model source "
            f"{source.name!r} cannot pass on (it does not take load options; the built-in hub, local, tiny and gguf sources do)"
        )
    return replace(ctx, load_options=options)


def run_cell(
    cell: Cell,
    host: PluginHost,
    out_dir: Path,
    device: str,
    attempt: str,
    *,
    save_artifacts: bool = False,
    suite_sha256: str | None = None,
    progress: Progress | None = None,
    state: CellState | None = None,
) -> Record:
    """Run ``cell`` in this process on ``device`` and return its ``ok`` record (exceptions propagate).

    :param state: filled in as the cell runs, so a caller catching an exception can still record what was measured.

    Training and evaluation back off on out-of-memory errors (halving the micro-batch or the evaluation batch, see
    :mod:`harness.worker.training`); ``training.oom_retries``, ``training.micro_batch_size``, ``training.grad_accum_steps``,
    ``evaluation.oom_retries`` and ``evaluation.eval_batch_size`` record what ran, in failed records too.
    """
    if device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA initialises
    state = state if state is not None else CellState(cell, attempt, device)
    progress = progress or (lambda phase, done, total: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from harness.worker import envinfo

    state.env = envinfo.collect(host, suite_sha256=suite_sha256, seed=cell.seed, device=device)

    seed_everything(cell.seed, device)
    runtime = ModelRuntime.resolve(cell.budget, device)
    state.runtime = runtime.describe()
    runtime.check()  # refuses what cannot run here before anything loads
    if device.startswith("cuda"):
        state.gpu_meter = GpuMemoryMeter()
        state.gpu_meter.start()

    progress("load", 0, 1)
    load_started = time.perf_counter()
    task = host.task(cell.task_type)
    strategy = host.strategy(cell.strategy_type)
    source = host.model_source(cell.model_source)
    ctx = CellContext(cell=cell, device=device, out_dir=out_dir, progress=progress)
    run: TaskRun = task.setup(cell.task_options, ctx)
    state.primary_metric = run.primary_metric or None
    state.metric_info = {str(k): str(v) for k, v in run.metadata.items()}
    ctx = with_load_options(ctx, strategy.load_options(run, cell.strategy_options, ctx), source)
    loaded = source.open(cell.model_options, ctx)
    model = strategy.apply(runtime.built(run.build_model(loaded)), run, cell.strategy_options, ctx)
    runtime.prepare(model).to(device)
    state.runtime = runtime.describe(model)
    synchronize(device)
    state.timing["one_off_s"] = loaded.one_off_s or None
    state.timing["load_s"] = time.perf_counter() - load_started - loaded.one_off_s
    state.params = count_params(model, run.head_prefixes)
    stored = strategy.stored_bytes(model)
    if stored is not None:
        state.params = replace(state.params, stored_bytes=stored)
    progress("load", 1, 1)

    if state.gpu_meter is not None:
        state.gpu_meter.reset_peak()
    energy = _energy_meter(device)
    n_matmul, n_trainable = compute.matmul_parameters(model)
    state.compute["matmul_params"] = n_matmul
    from harness.worker.training import BatchBackoff, accumulation_steps, evaluate_with_backoff, train

    budget = cell.budget
    # halved in place on out-of-memory errors (see harness.worker.training); the record says what ran
    micro = BatchBackoff(max(1, budget.batch_size // budget.grad_accum_steps))
    eval_batch = BatchBackoff(budget.eval_batch_size)

    def note_eval_batch() -> None:
        state.evaluation = replace(state.evaluation, oom_retries=eval_batch.retries, eval_batch_size=eval_batch.size)

    if strategy.trains:
        try:
            outcome = train(
                model, run, budget, device, cell.seed, progress, micro=micro, eval_batch=eval_batch, runtime=runtime
            )
        except BaseException:  # a failed record still says how far the back-off went
            state.training = replace(
                state.training,
                oom_retries=micro.retries,
                micro_batch_size=micro.size,
                grad_accum_steps=accumulation_steps(budget.batch_size, micro.size),
            )
            note_eval_batch()
            raise
        state.training = Training(
            steps=outcome.steps,
            epochs=outcome.epochs,
            samples=outcome.samples,
            tokens=outcome.tokens,
            early_stopped=outcome.early_stopped,
            best_epoch=outcome.best_epoch,
            validation=outcome.validation,
            loss_first=outcome.loss_first,
            loss_last=outcome.loss_last,
            oom_retries=outcome.oom_retries,
            micro_batch_size=outcome.micro_batch_size,
            grad_accum_steps=outcome.grad_accum_steps,
            scaler_skipped_steps=outcome.scaler_skipped_steps,
        )
        if outcome.compile_s is not None:
            state.runtime = replace(state.runtime, compiled=True)
            state.timing.update(compile_s=outcome.compile_s, one_off_s=loaded.one_off_s + outcome.compile_s)
        stats = outcome.step_stats
        _note_training_compute(state, model, device, n_matmul, n_trainable, outcome.tokens, outcome.train_s, energy)
        state.timing.update(
            train_s=outcome.train_s,
            train_samples_per_s=outcome.samples / outcome.train_s if outcome.train_s > 0 else None,
            train_tokens_per_s=outcome.tokens / outcome.train_s if outcome.train_s > 0 else None,
            step_s_median=stats.median,
            step_s_p90=stats.p90,
            step_s_mean=stats.mean,
            step_s_stdev=stats.stdev,
            step_count=stats.count,
            warmup_steps_excluded=stats.warmup_steps_excluded,
            step_clock=outcome.clock,
        )
        steps_doc = {
            "clock": outcome.clock,
            "warmup_steps_excluded": stats.warmup_steps_excluded,
            "step_s": list(outcome.step_times),
            "host_step_s": list(outcome.host_step_times),
            "loss": list(outcome.losses),
        }
        (out_dir / STEPS).write_text(json.dumps(steps_doc) + "\n", encoding="utf-8")
        stored = strategy.stored_bytes(model)  # again: training may change it (AdaLoRA prunes ranks)
        if stored is not None:
            state.params = replace(state.params, stored_bytes=stored)

    if cell.trial is not None:  # a search's trial: its validation metrics select the setting, never test's
        _evaluate_validation(state, run, model, eval_batch, device, out_dir, runtime)
        note_eval_batch()

    progress("eval", 0, 1)
    run.prepare("test")  # encoding is not inference: keep it out of eval_s and eval throughput
    if energy is not None:
        energy.start()
    eval_started = time.perf_counter()
    try:
        with runtime.autocast():
            result = evaluate_with_backoff(run, model, "test", eval_batch, device)
    finally:
        note_eval_batch()
    synchronize(device)
    eval_s = time.perf_counter() - eval_started
    if energy is not None:
        state.compute["eval_energy_j"] = energy.stop()
        parts = [state.compute.get("train_energy_j"), state.compute["eval_energy_j"]]
        if state.compute["eval_energy_j"] is not None:
            state.compute["energy_j"] = sum(p for p in parts if p is not None)
    state.timing.update(
        eval_s=eval_s,
        eval_samples_per_s=result.samples / eval_s if eval_s > 0 else None,
        eval_tokens_per_s=result.tokens / eval_s if eval_s > 0 else None,
    )
    state.metrics = {k: float(v) for k, v in result.metrics.items()}
    state.metric_info = {str(k): str(v) for k, v in run.metadata.items()}  # as the strategy and model left it
    state.evaluation = Evaluation(
        samples=result.samples,
        tokens=result.tokens,
        tokens_per_sample=result.tokens / result.samples if result.samples else None,
        shots=result.shots,
        oom_retries=eval_batch.retries,
        eval_batch_size=eval_batch.size,
    )
    write_predictions(out_dir / PREDICTIONS, result.predictions)
    state.predictions = PREDICTIONS
    progress("eval", 1, 1)

    if save_artifacts and strategy.trains:
        strategy.save(model, out_dir / ARTIFACT)
        state.params = replace(state.params, artifact_bytes=folder_bytes(out_dir / ARTIFACT))
    return state.record("ok")
