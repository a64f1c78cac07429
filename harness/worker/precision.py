"""How a cell's model runs: precision, attention implementation, gradient checkpointing and ``torch.compile`` (the
budget keys ``precision``, ``attention``, ``gradient_checkpointing`` and ``compile``), and what the record says ran
(:class:`harness.results.records.Runtime`).

**Precision** (``budget.precision``), resolved once per cell (:func:`resolve_precision`; ``auto`` is ``bf16-mixed``
on a CUDA GPU that supports bfloat16, else ``fp32``); the record's ``runtime.precision`` is the resolved value:

* ``fp32``: every floating-point weight in float32 (one loaded in 16 bits is cast up), no autocast.
* ``bf16-mixed`` / ``fp16-mixed``: ``torch.autocast(device type, dtype)`` around every forward pass and its loss —
  training steps, the early-stopping validation and the test evaluation, generation included — never around the
  backward pass (as torch recommends). Trainable parameters are float32 master weights (a trainable weight loaded in
  16 bits is cast up); frozen ones stay as loaded (a bf16 base under a float32 adapter). ``fp16-mixed`` scales the
  loss with ``torch.amp.GradScaler``; gradients are unscaled before clipping. A step whose gradients overflow is
  skipped by the scaler but still counts as a step — it consumed its batch, and the learning-rate schedule advances
  as in every other precision, so step *k* has the same learning rate whatever the precision (transformers'
  ``Trainer`` holds its schedule back instead); ``training.scaler_skipped_steps`` counts them (the scale fell: one
  host read of the scale per step).
* ``bf16-true``: every floating-point weight and buffer cast to bfloat16 once the strategy has applied (adapters
  too), so AdamW updates bf16 weights; no autocast.

On a CPU, torch's autocast runs bfloat16 and float16 and ``GradScaler("cpu")`` exists, so every precision runs there
— mixed precision is usually *slower* than fp32 on CPUs without bf16/fp16 matrix units (AMX): it is there to check a
suite, not for speed. A CUDA GPU without bfloat16 refuses ``bf16-*`` with one line; so does a torch whose autocast
lacks the dtype on the device.

**Attention** (``budget.attention``): the built-in model sources pass ``attn_implementation``
(:func:`harness.api.budget.attn_implementation`) when they build the model; a model another source built otherwise
is switched with transformers' ``set_attn_implementation`` (:meth:`ModelRuntime.built`). ``auto`` leaves
transformers' choice (sdpa where the architecture has it, else eager). ``flash_attention_2`` needs a CUDA GPU, the
``flash_attn`` package and a 16-bit precision: without them the cell fails before loading, with one line.
``runtime.attention`` is the model's ``config._attn_implementation`` once built.

**Gradient checkpointing**: ``gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant":
False})`` on the model once the strategy has applied (peft's wrappers pass it to the transformers model; transformers
5.x's new name ``activation_checkpointing_enable`` where it exists), checked to be on
(``runtime.gradient_checkpointing``). Non-reentrant checkpointing restores the RNG state when it
recomputes, so dropout draws, losses and gradients equal those without it.

**Compile** (:func:`compile_for_training`): ``torch.compile(model, dynamic=True)`` — shapes change from batch to
batch, each padded to its own longest member — runs the training forward and backward passes; evaluation uses the
eager module (eval-mode graphs and generation would compile inside ``eval_s``), sharing its weights. Before the
training clock starts, a warm-up runs two forward and backward passes on the first micro-batch of training examples
(in dataset order: nothing is drawn from the data-order generator), then drops their gradients and restores the RNG
state: the first pass compiles, the second catches recompilations the first one's side effects cause (BERT sets
``config.problem_type`` on its first call). Its wall time is ``timing.compile_s``, counted in ``timing.one_off_s``,
never in ``train_s`` or step times. A later recompilation (a micro-batch of one example) lands in its step;
``budget.warmup_steps_excluded`` keeps the first steps out of the step statistics.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from harness.api.budget import Budget, attn_implementation
from harness.errors import HarnessError
from harness.results.records import Runtime
from harness.worker import compute
from harness.worker.measure import synchronize
from harness.worker.oom import Log, first_line, log_to_stderr, rng_state, set_rng_state

#: The autocast dtype of each mixed precision.
AUTOCAST = {"bf16-mixed": "bfloat16", "fp16-mixed": "float16"}
#: ``torch.compile`` arguments (tests add ``backend="eager"``, which compiles in a second instead of a minute).
COMPILE_OPTIONS: dict[str, Any] = {"dynamic": True}
#: The gradient scaler's first scale (torch's default; tests raise it to force skipped steps).
GRAD_SCALER_INIT_SCALE = 2.0**16
#: The warm-up passes of :func:`compile_for_training`.
COMPILE_WARMUP_PASSES = 2


def device_type(device: str) -> str:
    """``"cuda"`` for ``"cuda:0"``, ``"cpu"`` for ``"cpu"``."""
    return device.split(":", 1)[0]


def resolve_precision(requested: str, device: str) -> str:
    """``budget.precision`` as it runs on ``device``: ``auto`` resolved, the rest checked.

    :raises HarnessError: a bf16 precision on a CUDA GPU without bfloat16, or autocast without the dtype."""
    import torch

    kind = device_type(device)
    bf16_gpu = kind == "cuda" and torch.cuda.is_bf16_supported()
    if requested == "auto":
        return "bf16-mixed" if bf16_gpu else "fp32"
    if requested.startswith("bf16") and kind == "cuda" and not bf16_gpu:
        raise HarnessError(
            f"budget.precision = {requested!r}: this GPU ({torch.cuda.get_device_name()}) has no bfloat16; "
            "use 'fp16-mixed' or 'fp32'"
        )
    if requested in AUTOCAST:
        with torch.autocast(kind, dtype=getattr(torch, AUTOCAST[requested])):
            enabled = torch.is_autocast_enabled(kind)
        if not enabled:
            raise HarnessError(
                f"budget.precision = {requested!r}: torch {torch.__version__} has no {AUTOCAST[requested]} autocast "
                f"on {kind}; use 'fp32'"
            )
    return requested


def check_attention(budget: Budget, device: str, precision: str) -> None:
    """Refuse ``flash_attention_2`` where it cannot run (no CUDA, no ``flash_attn``, float32), before loading."""
    if budget.attention != "flash_attention_2":
        return
    where = "budget.attention = 'flash_attention_2'"
    if device_type(device) != "cuda":
        raise HarnessError(f"{where} needs a CUDA GPU; this cell runs on {device} (use 'sdpa' or 'auto')")
    if importlib.util.find_spec("flash_attn") is None:
        raise HarnessError(f"{where} needs the flash_attn package (pip install flash-attn); or use 'sdpa' or 'auto'")
    if precision == "fp32":
        raise HarnessError(f"{where} runs in 16 bits: set precision to 'bf16-mixed', 'fp16-mixed' or 'bf16-true'")


def attention_of(model: Any) -> str | None:
    """The attention implementation of a transformers model (through peft's and other wrappers), else ``None``."""
    for module in (model, *getattr(model, "modules", lambda: ())()):
        found = getattr(getattr(module, "config", None), "_attn_implementation", None)
        if isinstance(found, str):
            return found
    return None


def _enable_checkpointing(model: Any) -> None:
    """Non-reentrant checkpointing through transformers' ``activation_checkpointing_enable`` (5.x) or
    ``gradient_checkpointing_enable`` (its name before, deprecated since); ``ValueError`` when it cannot."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        raise ValueError(f"{type(model).__name__} has no gradient checkpointing")


def _checkpointing_on(model: Any) -> bool:
    if any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules()):
        return True
    return getattr(model, "is_activation_checkpointing", False) is True


def _dtype_name(dtype: Any) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class ModelRuntime:
    """The cell's resolved precision and speed settings (see the module docs); :meth:`for_cell` builds one."""

    budget: Budget
    device: str
    precision: str

    @classmethod
    def resolve(cls, budget: Budget, device: str) -> ModelRuntime:
        """``budget`` on ``device``, its precision resolved (:func:`resolve_precision`)."""
        return cls(budget, device, resolve_precision(budget.precision, device))

    @classmethod
    def for_cell(cls, budget: Budget, device: str) -> ModelRuntime:
        """:meth:`resolve`, then :meth:`check`."""
        runtime = cls.resolve(budget, device)
        runtime.check()
        return runtime

    def check(self) -> None:
        """Refuse what cannot run on this device (:func:`check_attention`), before anything loads."""
        check_attention(self.budget, self.device, self.precision)

    @property
    def autocast_dtype(self) -> Any:
        """The torch dtype of autocast, ``None`` without it."""
        import torch

        name = AUTOCAST.get(self.precision)
        return getattr(torch, name) if name else None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """``torch.autocast`` with mixed precision; nothing otherwise. Wrap forward passes, never backward."""
        dtype = self.autocast_dtype
        if dtype is None:
            yield
            return
        import torch

        with torch.autocast(device_type(self.device), dtype=dtype):
            yield

    def built(self, model: Any) -> Any:
        """Give a freshly built model the requested attention implementation where its source did not."""
        wanted = attn_implementation(self.budget)
        if wanted is None or attention_of(model) in (wanted, None):
            return model
        setter = getattr(model, "set_attn_implementation", None)
        if setter is None:
            raise HarnessError(f"budget.attention = {wanted!r}: {type(model).__name__} cannot switch its attention")
        try:
            setter(wanted)
        except (ValueError, ImportError) as exc:
            raise HarnessError(f"budget.attention = {wanted!r}: {first_line(exc)}") from None
        if attention_of(model) != wanted:  # older transformers log a warning and keep what was built
            raise HarnessError(f"budget.attention = {wanted!r}: {type(model).__name__} cannot switch its attention "
                               f"after it is built (it kept {attention_of(model)!r}); its model source must build it "
                               "with attn_implementation")  # fmt: skip
        return model

    def prepare(self, model: Any, log: Log = log_to_stderr) -> Any:
        """Weights in the precision's dtypes and gradient checkpointing on; call once the strategy has applied."""
        import torch

        if self.precision == "bf16-true":
            model.to(torch.bfloat16)
        else:
            cast = [
                p for p in model.parameters()
                if p.dtype in (torch.bfloat16, torch.float16) and (p.requires_grad or self.precision == "fp32")
            ]
            for param in cast:
                param.data = param.data.float()
            if cast:
                log(f"precision {self.precision!r}: {len(cast)} weight tensor(s) loaded in 16 bits cast to float32")
        if self.budget.gradient_checkpointing:
            try:
                _enable_checkpointing(model)
            except ValueError as exc:
                raise HarnessError(f"budget.gradient_checkpointing: {first_line(exc)}") from None
            if not _checkpointing_on(model):
                raise HarnessError(f"budget.gradient_checkpointing: {type(model).__name__} did not turn it on")
        return model

    def describe(self, model: Any | None = None, *, compiled: bool = False) -> Runtime:
        """What ran, for the record (``model`` ``None``: before loading, the precision alone)."""
        autocast = _dtype_name(self.autocast_dtype)
        if model is None:
            return Runtime(precision=self.precision, autocast_dtype=autocast)
        weights = _dtype_name(compute.weight_dtype(model))
        return Runtime(
            precision=self.precision,
            autocast_dtype=autocast,
            weight_dtype=weights,
            matmul_dtype=autocast or weights,
            attention=attention_of(model),
            gradient_checkpointing=_checkpointing_on(model),
            compiled=compiled,
        )

    def scaler(self) -> GradientScaling:
        """The loss scaling of a training run (a no-op without ``fp16-mixed``)."""
        return GradientScaling(self.device if self.precision == "fp16-mixed" else None)


class GradientScaling:
    """Backward and optimizer step through ``torch.amp.GradScaler`` on ``device``, or plainly when ``None``."""

    def __init__(self, device: str | None) -> None:
        self.skipped = 0
        self._scaler = None
        if device is not None:
            import torch

            self._scaler = torch.amp.GradScaler(device_type(device), init_scale=GRAD_SCALER_INIT_SCALE)

    def backward(self, loss: Any) -> None:
        (loss if self._scaler is None else self._scaler.scale(loss)).backward()

    def step(self, optimizer: Any, scheduler: Any, params: list[Any], max_grad_norm: float) -> None:
        """Clip (gradients unscaled first), step the optimizer (the scaler may skip it), advance the schedule."""
        import torch

        scaler = self._scaler
        if scaler is not None:
            scaler.unscale_(optimizer)
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        if scaler is None:
            optimizer.step()
            scheduler.step()
            return
        before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        self.skipped += scaler.get_scale() < before
        with warnings.catch_warnings():  # a skipped first step: torch warns that the schedule stepped first
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            scheduler.step()


def compile_for_training(model: Any, warmup: Callable[[Any], None], device: str) -> tuple[Any, float]:
    """``torch.compile(model)`` and its warm-up (``warmup(compiled)`` runs one forward and backward pass, twice; see
    the module docs); returns the compiled module and the seconds spent. The caller drops the gradients."""
    import torch

    compiled = torch.compile(model, **COMPILE_OPTIONS)
    state = rng_state(device)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(COMPILE_WARMUP_PASSES):
        warmup(compiled)
    synchronize(device)
    seconds = time.perf_counter() - started
    set_rng_state(state)
    return compiled, seconds
