"""Records: one per cell, frozen dataclasses with a schema version, written atomically.

Schema (version 1) — the JSON of :meth:`Record.to_json`, also what ``harness report --format json`` prints per
cell: ``schema_version, key, suite, cell_id, task, strategy, model, seed, status (ok|failed|skipped), error,
metrics {name: number}, primary_metric, metric_info {name: text}, params {total, trainable, trainable_pct, head, stored_bytes,
artifact_bytes}, timing {load_s, one_off_s, compile_s, train_s,
eval_s, total_s, train_samples_per_s, train_tokens_per_s, eval_samples_per_s, eval_tokens_per_s, step_s_median,
step_s_p90, step_s_mean, step_s_stdev, step_count, warmup_steps_excluded, step_clock}, memory {peak_rss_bytes,
gpu_peak_allocated_bytes, gpu_peak_reserved_bytes, gpu_start_allocated_bytes}, training {steps, epochs, samples,
tokens, early_stopped, best_epoch, validation, loss_first, loss_last, oom_retries, micro_batch_size,
grad_accum_steps, scaler_skipped_steps}, evaluation {samples, tokens, tokens_per_sample, shots, oom_retries,
eval_batch_size}, compute {matmul_params, train_flops, peak_flops, mfu, train_energy_j, eval_energy_j, energy_j},
runtime {precision, autocast_dtype, weight_dtype, matmul_dtype, attention, gradient_checkpointing, compiled}, config, env,
started_at, finished_at, log, predictions, validation_metrics {name: number}, validation_predictions``. Sizes are bytes, times seconds; GPU fields are null without a GPU.

Fields added within version 1 are optional with defaults (``training.oom_retries``, ``training.micro_batch_size``,
``training.grad_accum_steps``, ``evaluation.oom_retries``, ``evaluation.eval_batch_size``: the out-of-memory
back-off; ``compute``: training FLOPs, MFU and GPU energy; ``validation_metrics``, ``validation_predictions`` and
``timing.validation_s``: a search trial's validation evaluation, ``config.trial``: the trial; ``runtime``,
``timing.compile_s`` and ``training.scaler_skipped_steps``: how the model ran — precision, attention, gradient
checkpointing, compilation), so records written before them still read (as ``0`` / ``null`` / ``false``) and older
readers ignore them. ``config.budget`` holds what the suite asked (``precision = "auto"``), ``runtime`` what ran
(``"bf16-mixed"``); a record without ``runtime.precision`` predates it and ran in the weights' dtype (float32 unless
the model source's ``dtype`` said otherwise).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.cells import Cell

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "skipped")


@dataclass(frozen=True)
class Params:
    total: int | None = None
    trainable: int | None = None
    trainable_pct: float | None = None
    head: int | None = None
    #: Bytes of what must be saved to reproduce the tuned model from the pretrained one: the trainable parameters
    #: (adapter weights and task head for adapters, every weight for full fine-tuning; 0 for in-context learning).
    stored_bytes: int | None = None
    #: Bytes actually written to ``artifact/`` with ``--save-artifacts`` (null when nothing was saved).
    artifact_bytes: int | None = None


@dataclass(frozen=True)
class Timing:
    load_s: float | None = None
    #: One-off preparation during loading (a model cache built by the first cell), excluded from ``load_s``, plus
    #: ``compile_s``.
    one_off_s: float | None = None
    #: ``torch.compile`` warm-up before the first training step (compilation, two passes on one micro-batch),
    #: counted in ``one_off_s`` and never in ``train_s`` or step times. Null without ``budget.compile``.
    compile_s: float | None = None
    train_s: float | None = None
    eval_s: float | None = None
    #: Time of the validation evaluation of a search's trial (``validation_metrics``), outside ``eval_s``.
    validation_s: float | None = None
    total_s: float | None = None
    train_samples_per_s: float | None = None
    train_tokens_per_s: float | None = None
    eval_samples_per_s: float | None = None
    eval_tokens_per_s: float | None = None
    step_s_median: float | None = None
    step_s_p90: float | None = None
    step_s_mean: float | None = None
    step_s_stdev: float | None = None
    step_count: int | None = None
    warmup_steps_excluded: int | None = None
    #: ``cuda_events`` or ``host_clock``: how step times were taken.
    step_clock: str | None = None


@dataclass(frozen=True)
class Memory:
    peak_rss_bytes: int | None = None
    gpu_peak_allocated_bytes: int | None = None
    gpu_peak_reserved_bytes: int | None = None
    #: Memory already allocated on the GPU when the cell started (non-zero flags a GPU that was not clean).
    gpu_start_allocated_bytes: int | None = None


@dataclass(frozen=True)
class Training:
    steps: int = 0
    epochs: float = 0.0
    samples: int = 0
    tokens: int = 0
    early_stopped: bool = False
    best_epoch: int | None = None
    #: Primary validation metric after each epoch (when early stopping evaluates).
    validation: tuple[float, ...] = ()
    loss_first: float | None = None
    loss_last: float | None = None
    #: Out-of-memory back-offs: times the per-device micro-batch was halved and the optimizer step redone (added in
    #: schema 1 with a default: older records read as 0).
    oom_retries: int = 0
    #: The per-device micro-batch (examples) that ran last: ``budget.batch_size // budget.grad_accum_steps``, or less
    #: after back-offs (``config.budget`` keeps what the suite asked). Null without training or in older records.
    micro_batch_size: int | None = None
    #: Micro-batches per optimizer step that ran last: ``ceil(batch_size / micro_batch_size)``. Null as above.
    grad_accum_steps: int | None = None
    #: ``fp16-mixed``: optimizer steps the gradient scaler skipped (infinite or NaN gradients). They still count in
    #: ``steps`` and advance the learning-rate schedule. 0 otherwise and in older records.
    scaler_skipped_steps: int = 0


@dataclass(frozen=True)
class Evaluation:
    """The work of the test evaluation: examples scored and the input tokens the model was given (the prompts,
    in-context demonstrations included — the whole cost of zero- and few-shot strategies)."""

    samples: int | None = None
    tokens: int | None = None
    tokens_per_sample: float | None = None
    #: Mean in-context demonstrations per prompt (null without demonstrations).
    shots: float | None = None
    #: Out-of-memory back-offs of the evaluation batch: times it was halved and the evaluation redone, validation
    #: evaluations of early stopping included (added in schema 1 with a default: older records read as 0).
    oom_retries: int = 0
    #: The evaluation batch (examples) that ran last: ``budget.eval_batch_size``, or less after back-offs. Null in
    #: older records and when the cell failed before evaluating.
    eval_batch_size: int | None = None


class NewerSchemaError(ValueError):
    """A record written by a newer harness: never read as missing (a rerun would overwrite it)."""


class InvalidRecordError(ValueError):
    """A ``record.json`` that exists but is no record this harness can read: truncated or invalid JSON, not an
    object, a required field missing or of the wrong type. The message says why (``truncated JSON at line 3 column
    5``), without the path. ``harness report`` warns and counts the cell as missing; ``harness run`` warns, keeps the
    file as ``record.json.corrupt`` and runs the cell again."""


@dataclass(frozen=True)
class Compute:
    """Training compute and GPU energy (:mod:`harness.worker.compute`; added within schema version 1, null when absent).

    ``train_flops`` = (4·N + 2·N_trainable)·T with N the weights of the model's matrix multiplications
    (``matmul_params``) and T the training tokens (6·N·T for full fine-tuning); ``mfu`` = train_flops / (train_s ·
    ``peak_flops``), the device's data-sheet peak FLOP/s for the training dtype (null on a CPU or an unknown GPU);
    energies in joules from NVML's counter of the cell's GPU (the whole board's draw: several cells sharing a GPU
    each count all of it), null without NVML."""

    matmul_params: int | None = None
    train_flops: float | None = None
    peak_flops: float | None = None
    mfu: float | None = None
    train_energy_j: float | None = None
    eval_energy_j: float | None = None
    energy_j: float | None = None


@dataclass(frozen=True)
class Runtime:
    """How the cell's model ran (:mod:`harness.worker.precision`; added within schema version 1, null / false in
    older records).

    ``precision`` is ``budget.precision`` resolved (``auto`` never appears): ``fp32``, ``bf16-mixed``,
    ``fp16-mixed`` or ``bf16-true``; ``autocast_dtype`` the dtype of torch.autocast around forward passes (training
    and evaluation; null without autocast); ``weight_dtype`` the dtype holding most matmul weights; ``matmul_dtype``
    what the multiplications ran in (the autocast dtype under autocast, else ``weight_dtype``: MFU's peak is that
    dtype's); ``attention`` the attention implementation the model was built with (``config._attn_implementation``:
    ``sdpa``, ``eager``, ``flash_attention_2``); ``gradient_checkpointing`` and ``compiled`` (torch.compile of the
    training forward and backward) whether they ran."""

    precision: str | None = None
    autocast_dtype: str | None = None
    weight_dtype: str | None = None
    matmul_dtype: str | None = None
    attention: str | None = None
    gradient_checkpointing: bool = False
    compiled: bool = False


def _build(cls: type, data: Mapping[str, Any] | None) -> Any:
    data = data or {}
    names = {f.name for f in fields(cls)}
    values = {k: v for k, v in data.items() if k in names}
    if cls is Training and "validation" in values:
        values["validation"] = tuple(values["validation"])
    return cls(**values)


@dataclass(frozen=True)
class Record:
    """The outcome of one cell."""

    key: str
    suite: str
    cell_id: str
    task: str
    strategy: str
    model: str
    seed: int
    status: str
    error: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    primary_metric: str | None = None
    #: How the metrics were computed: metric library and version, sacreBLEU signature, ... (strings).
    metric_info: Mapping[str, str] = field(default_factory=dict)
    params: Params = field(default_factory=Params)
    timing: Timing = field(default_factory=Timing)
    memory: Memory = field(default_factory=Memory)
    training: Training = field(default_factory=Training)
    evaluation: Evaluation = field(default_factory=Evaluation)
    compute: Compute = field(default_factory=Compute)
    runtime: Runtime = field(default_factory=Runtime)
    config: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, Any] = field(default_factory=dict)
    started_at: str | None = None
    finished_at: str | None = None
    log: str | None = None
    predictions: str | None = None
    #: The metrics of the validation split after training, for a search's trial (``config.trial``): what selects
    #: the trial. Empty for other cells.
    validation_metrics: Mapping[str, float] = field(default_factory=dict)
    #: The file of the validation predictions behind ``validation_metrics`` (same format as ``predictions``).
    validation_predictions: str | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["training"]["validation"] = list(self.training.validation)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        """The record of ``data`` (parsed ``record.json``).

        :raises NewerSchemaError: the record's schema is newer than this harness reads.
        :raises InvalidRecordError: ``data`` is not a record (why in the message).
        """
        if not isinstance(data, Mapping):
            raise InvalidRecordError(f"not a JSON object but {_json_kind(data)}")
        version = data.get("schema_version", 0)
        if not _is_int(version):
            raise InvalidRecordError(f"schema_version is {_json_kind(version)}, expected an integer")
        if version > SCHEMA_VERSION:
            raise NewerSchemaError(
                f"record schema {data.get('schema_version')} is newer than this harness reads ({SCHEMA_VERSION}): "
                "written by a newer harness; upgrade harness (or write to another --output)"
            )
        problem = _record_problem(data)
        if problem is not None:
            raise InvalidRecordError(problem)
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["params"] = _build(Params, data.get("params"))
        values["timing"] = _build(Timing, data.get("timing"))
        values["memory"] = _build(Memory, data.get("memory"))
        values["training"] = _build(Training, data.get("training"))
        values["evaluation"] = _build(Evaluation, data.get("evaluation"))
        values["compute"] = _build(Compute, data.get("compute"))
        values["runtime"] = _build(Runtime, data.get("runtime"))
        return cls(**values)


def cell_record(cell: Cell, status: str, error: str | None = None, **fields: Any) -> Record:
    """The record of ``cell`` with the cell's identity and resolved configuration filled in."""
    return Record(
        key=cell.key,
        suite=cell.suite,
        cell_id=cell.cell_id,
        task=cell.task,
        strategy=cell.strategy,
        model=cell.model,
        seed=cell.seed,
        status=status,
        error=error,
        config=cell.config(),
        **fields,
    )


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see the old file or the whole new one, never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: Fields every record has: name -> (what it must be, test).
_REQUIRED: dict[str, tuple[str, Callable[[Any], bool]]] = {
    **{name: ("a string", lambda v: isinstance(v, str))
       for name in ("key", "suite", "cell_id", "task", "strategy", "model")},
    "seed": ("an integer", _is_int),
    "status": (" or ".join(STATUSES), lambda v: v in STATUSES),
}
#: Fields that hold an object (or null) when present.
_OBJECTS = ("metrics", "metric_info", "params", "timing", "memory", "training", "evaluation", "compute", "runtime",
            "config", "env", "validation_metrics")


def _json_kind(value: Any) -> str:
    """What a parsed JSON value is, for messages: ``a list``, ``a string``, ``null``..."""
    if value is None:
        return "null"
    kinds = ((bool, "a boolean"), (int, "a number"), (float, "a number"), (str, "a string"), (list, "a list"))
    return next((kind for t, kind in kinds if isinstance(value, t)), f"a {type(value).__name__}")


def _record_problem(data: Mapping[str, Any]) -> str | None:
    """Why ``data`` is not a record (a required field missing or of the wrong type), or ``None``."""
    missing = [name for name in _REQUIRED if name not in data]
    if missing:
        return f"missing field{'s' if len(missing) > 1 else ''} {', '.join(repr(n) for n in missing)}"
    for name, (expected, test) in _REQUIRED.items():
        value = data[name]
        if not test(value):
            shown = f" ({value!r:.40})" if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""
            return f"field {name!r} is {_json_kind(value)}{shown}, expected {expected}"
    for name in _OBJECTS:
        if data.get(name) is not None and not isinstance(data[name], Mapping):
            return f"field {name!r} is {_json_kind(data[name])}, expected an object"
    validation = (data.get("training") or {}).get("validation")
    if validation is not None and not isinstance(validation, list):
        return f"field 'training.validation' is {_json_kind(validation)}, expected a list"
    return None


#: What the text after a parse error may be when the file was cut short: an unfinished literal or number.
_LITERALS = ("true", "false", "null", "NaN", "Infinity", "-Infinity")
_NUMBER_PREFIX = re.compile(r"-?\d*(\.\d*)?([eE][+-]?\d*)?")


def _json_problem(exc: json.JSONDecodeError) -> str:
    """``truncated JSON at line 3 column 5`` (the text stops before the JSON is complete: the place is where it
    stops) or ``invalid JSON at line 3 column 5 (Expecting ',' delimiter)``; ``empty file`` for a blank file."""
    doc = exc.doc
    end = len(doc.rstrip())
    if not end:
        return "empty file"
    tail = doc[exc.pos:end]
    if (not tail or exc.msg.startswith("Unterminated string") or _NUMBER_PREFIX.fullmatch(tail)
            or any(literal.startswith(tail) for literal in _LITERALS)):
        line, column = doc.count("\n", 0, end) + 1, end - doc.rfind("\n", 0, end)
        return f"truncated JSON at line {line} column {column}"
    return f"invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})"


def read_record(path: Path) -> Record:
    """The record in the file ``path``.

    :raises FileNotFoundError: there is no such file (the cell has no record).
    :raises NewerSchemaError: the record was written by a newer harness.
    :raises InvalidRecordError: the file cannot be read or is no record; the message says why, without the path.
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InvalidRecordError(f"cannot be read ({exc.strerror or exc})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        cut = exc.reason == "unexpected end of data"  # the file stops inside a character
        why = "truncated inside a UTF-8 character" if cut else f"not UTF-8 text (byte {exc.start})"
        raise InvalidRecordError(why) from None
    except json.JSONDecodeError as exc:
        raise InvalidRecordError(_json_problem(exc)) from None
    return Record.from_json(data)
