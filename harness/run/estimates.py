"""GPU memory and duration estimates of cells, for placing them on GPUs (:mod:`harness.run.scheduler`); no torch.

**Memory estimate** (GPU bytes a cell needs at its peak, :func:`estimate_demands`). For a model of ``P``
parameters stored ``w`` bytes each (4 for float32, 2 for bfloat16/float16), ``L`` transformer blocks (encoder plus
decoder), hidden size ``h``, ``a`` attention heads and a vocabulary of ``V``; micro-batch ``b = batch_size //
grad_accum_steps``, evaluation batch ``e = eval_batch_size`` and sequence length ``s = max_length``:

- static: ``w·P`` for the weights, plus ``3·w·T`` for the gradients and AdamW's two moments of the ``T`` trainable
  parameters (full fine-tuning ``T = P``: 16 bytes per parameter in float32; adapters ``T ≈ 2 % of P``, or a
  strategy's ``trainable_fraction`` attribute when it declares one; strategies that do not train ``T = 0``);
- training activations: ``L · s·b·h·(34 + 5·a·s/h) · w/2`` — the per-layer activation memory of a transformer
  block with 16-bit activations and no recomputation, ``s·b·h·(34 + 5·a·s/h)`` bytes (Korthikanti et al. 2022,
  "Reducing Activation Recomputation in Large Transformer Models", §4.1, eq. 1), scaled by ``w/2`` for other widths;
  adapters store the same activations (the gradient flows back through every frozen block). Models with a language
  model head (decoders, encoder-decoders) add ``2 · b·s·V·4`` bytes of float32 logits and their gradient;
- evaluation: two blocks' activations at the evaluation batch (without autograd only about one block's tensors are
  alive at a time), plus, with a language model head, ``e·s·V·4`` bytes of logits and a key/value cache of
  ``2·L·e·s·h·w`` bytes;
- peak = static + max(training activations, evaluation); the estimate is ``peak × 1.2`` (the caching allocator
  reserves more than it allocates) ``+ 512 MiB`` (each process's CUDA context, which ``torch.cuda`` peaks omit).

Without a model's shape, ``h ≈ (64·P/12)^(1/3)`` and ``L ≈ h/64`` (``P ≈ 12·L·h²`` with ``h/L ≈ 64``, as BERT-base
and GPT-2 have), ``a = h/64``. The shape and ``P`` come from the cell's model source when it has an
``estimate_size(options) -> ModelSize | None`` method (the built-in ``hub``, ``local``, ``tiny`` and ``gguf``
sources read ``config.json``, safetensors headers, the tiny options or the GGUF header; never the weights);
without it the estimate is unknown and the cell gets a GPU to itself.

**Measured peaks** replace the formula: the ``ok`` records already in the results directory whose model (source
and options) equals the cell's give ``memory.gpu_peak_reserved_bytes`` (else ``gpu_peak_allocated_bytes``). Records
of the same strategy (type and options) are preferred, then any strategy of the same model. A record's peak is
scaled by formula(this cell) / formula(that record) when the model's size is known — so a measured LoRA peak at
batch 16 predicts batch 32; the record's batch sizes are those that ran (``training.micro_batch_size``,
``evaluation.eval_batch_size`` after an out-of-memory back-off) — else used only for an identical workload; the largest such value × 1.1 + the CUDA
context is the estimate. Expected durations are the median ``timing.total_s`` of ``ok`` records of the same
configuration, seeds apart.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from harness.api.components import ModelSize

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.cells import Cell
    from harness.api.host import PluginHost
    from harness.results.records import Record

MIB = 1 << 20
#: Bytes of one process's CUDA context and library workspaces, which ``torch.cuda`` memory statistics leave out.
CUDA_CONTEXT_BYTES = 512 * MIB
#: Reserved / allocated: what the caching allocator holds beyond the tensors' bytes.
ALLOCATOR_OVERHEAD = 1.2
#: Safety factor on a measured (and scaled) peak.
MEASURED_MARGIN = 1.1
#: Trainable share of the parameters of a strategy that trains but is not full fine-tuning (adapters, prompts).
ADAPTER_TRAINABLE_FRACTION = 0.02
#: Strategy types that train every weight.
FULL_STRATEGIES = frozenset({"full"})
_HEAD_DIM = 64  # hidden / heads, and hidden / layers, when a model's shape is unknown


# -- estimates ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Demand:
    """What a cell is expected to need: GPU bytes at its peak (``None``: unknown, it runs alone) and seconds
    (``None``: unknown); ``basis`` is ``measured``, ``formula`` or ``unknown``."""

    memory_bytes: int | None = None
    duration_s: float | None = None
    basis: str = "unknown"


@dataclass(frozen=True)
class Workload:
    """What the formula needs of a cell, read from its configuration (``Cell.config()`` or a record's ``config``).
    ``model`` and ``strategy`` are identities (source or type and options, as canonical JSON); ``config`` is the
    whole configuration but the seed and the time limit (durations are matched on it)."""

    model: str
    strategy: str
    config: str
    trains: bool
    trainable_fraction: float
    family: str
    micro_batch: int
    eval_batch: int
    max_length: int

    def same_shape(self, other: Workload) -> bool:
        return (self.strategy, self.micro_batch, self.eval_batch, self.max_length) == (
            other.strategy, other.micro_batch, other.eval_batch, other.max_length
        )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _shape(size: ModelSize) -> tuple[int, int, int]:
    """``(layers, hidden, heads)``, filled in from the parameter count where the source did not say."""
    hidden = size.hidden or max(_HEAD_DIM, round((_HEAD_DIM * size.parameters / 12) ** (1 / 3)))
    layers = size.layers or max(1, round(hidden / _HEAD_DIM))
    return layers, hidden, size.heads or max(1, hidden // _HEAD_DIM)


def peak_bytes(size: ModelSize, work: Workload) -> int:
    """The formula's peak of tensor bytes (no allocator overhead, no CUDA context); see the module docstring."""
    w = size.bytes_per_parameter or 4
    trainable = size.parameters * work.trainable_fraction if work.trains else 0
    static = w * size.parameters + 3 * w * trainable
    layers, hidden, heads = _shape(size)
    s = work.max_length
    lm_vocab = size.vocab if work.family != "encoder" and size.vocab else 0

    def block(batch: int) -> float:  # Korthikanti et al. 2022, eq. 1, at w bytes per value
        return s * batch * hidden * (34 + 5 * heads * s / hidden) * w / 2

    train = 0.0
    if work.trains:
        train = layers * block(work.micro_batch) + 2 * work.micro_batch * s * lm_vocab * 4
    e = work.eval_batch
    evaluation = 2 * block(e) + (e * s * lm_vocab * 4 + 2 * layers * e * s * hidden * w if lm_vocab else 0)
    return int(static + max(train, evaluation))


def formula_bytes(size: ModelSize, work: Workload) -> int:
    """The estimate from the formula alone: peak × allocator overhead + the CUDA context."""
    return int(peak_bytes(size, work) * ALLOCATOR_OVERHEAD) + CUDA_CONTEXT_BYTES


def measured_peak(record: Record) -> int | None:
    """A record's GPU peak: reserved bytes, else allocated (``None`` on the CPU)."""
    return record.memory.gpu_peak_reserved_bytes or record.memory.gpu_peak_allocated_bytes or None


def memory_estimate(
    work: Workload, size: ModelSize | None, history: Sequence[tuple[Workload, int]]
) -> tuple[int | None, str]:
    """GPU bytes for ``work`` and their basis, from measured peaks ``history`` ((workload, peak bytes) of ``ok``
    records) where one matches, else the formula, else ``(None, "unknown")``."""
    same_model = [(w, peak) for w, peak in history if w.model == work.model]
    for group in ([x for x in same_model if x[0].strategy == work.strategy], same_model):
        scaled = []
        for then, peak in group:
            if size is not None:
                scaled.append(peak * peak_bytes(size, work) / max(1, peak_bytes(size, then)))
            elif then.same_shape(work):
                scaled.append(peak)
        if scaled:
            return int(max(scaled) * MEASURED_MARGIN) + CUDA_CONTEXT_BYTES, "measured"
    if size is not None:
        return formula_bytes(size, work), "formula"
    return None, "unknown"


def _workload(config: Mapping[str, Any], strategies: dict[str, tuple[bool, float]], host: PluginHost) -> Workload:
    strategy, model, budget = config["strategy"], config["model"], dict(config["budget"])
    kind = strategy["type"]
    if kind not in strategies:
        try:
            component = host.strategy(kind)
            trains = bool(component.trains)
            declared = getattr(component, "trainable_fraction", None)
        except Exception:  # a strategy no longer installed: assume it trains every weight
            trains, declared = True, 1.0
        if declared is None:
            declared = 1.0 if kind in FULL_STRATEGIES else ADAPTER_TRAINABLE_FRACTION
        strategies[kind] = (trains, float(declared))
    trains, fraction = strategies[kind]
    batch, accum = int(budget.get("batch_size") or 1), int(budget.get("grad_accum_steps") or 1)
    rest = {k: v for k, v in config.items() if k != "seed"}
    rest["budget"] = {k: v for k, v in budget.items() if k != "timeout_s"}
    return Workload(
        model=_canonical([model["source"], model.get("options", {})]),
        strategy=_canonical([kind, strategy.get("options", {})]),
        config=_canonical(rest),
        trains=trains,
        trainable_fraction=fraction,
        family=str(model.get("family", "encoder")),
        micro_batch=max(1, batch // max(1, accum)),
        eval_batch=int(budget.get("eval_batch_size") or 1),
        max_length=int(budget.get("max_length") or 1),
    )


def estimate_demands(
    cells: Sequence[Cell], host: PluginHost, records: Iterable[Record], memory: bool = True
) -> dict[str, Demand]:
    """Each cell's :class:`Demand`, by cell key, from its configuration, its model source's ``estimate_size`` and the
    ``ok`` records of earlier runs. ``memory=False`` (a CPU run) estimates durations only. Never raises for a model
    or record it cannot read: that estimate is unknown."""
    strategies: dict[str, tuple[bool, float]] = {}
    sizes: dict[str, ModelSize | None] = {}
    peaks: list[tuple[Workload, int]] = []
    durations: dict[str, list[float]] = {}
    for record in records:
        if record.status != "ok":
            continue
        try:
            then = _workload(record.config, strategies, host)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        ran = getattr(record.training, "micro_batch_size", None), getattr(record.evaluation, "eval_batch_size", None)
        then = replace(then, micro_batch=ran[0] or then.micro_batch, eval_batch=ran[1] or then.eval_batch)
        peak = measured_peak(record)
        if peak:
            peaks.append((then, int(peak)))
        if record.timing.total_s:
            durations.setdefault(then.config, []).append(float(record.timing.total_s))
    demands = {}
    for cell in cells:
        work = _workload(cell.config(), strategies, host)
        known = durations.get(work.config)
        duration = statistics.median(known) if known else None
        if not memory:
            demands[cell.key] = Demand(None, duration)
            continue
        if work.model not in sizes:
            sizes[work.model] = _model_size(host, cell)
        bytes_, basis = memory_estimate(work, sizes[work.model], peaks)
        demands[cell.key] = Demand(bytes_, duration, basis)
    return demands


def _model_size(host: PluginHost, cell: Cell) -> ModelSize | None:
    try:
        estimate = getattr(host.model_source(cell.model_source), "estimate_size", None)
        size = estimate(cell.model_options) if estimate is not None else None
    except Exception:  # an estimate must never stop a run
        return None
    return size if isinstance(size, ModelSize) and size.parameters > 0 else None
