"""The training budget: the protocol every strategy in a suite shares, declared like any other options.

Resolution order for a cell, later wins: these defaults, the strategy plugin's ``budget_defaults``, the suite's
``[budget]`` table, then ``[models.M.budget]``, ``[tasks.T.budget]`` and ``[strategies.S.budget]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from harness.api.options import Option

#: ``budget.precision`` values: ``auto`` is resolved in the cell (:mod:`harness.worker.precision`).
PRECISIONS = ("auto", "fp32", "bf16-mixed", "fp16-mixed", "bf16-true")
#: ``budget.attention`` values: transformers' ``attn_implementation`` names, and ``auto`` (transformers' choice).
ATTENTIONS = ("auto", "sdpa", "flash_attention_2", "eager")

BUDGET_OPTIONS: tuple[Option, ...] = (
    Option("epochs", "float", 1.0, "passes over the training set (ignored when max_steps is set)", minimum=0),
    Option("max_steps", "int", None, "optimizer steps to train; overrides epochs", minimum=1),
    Option("batch_size", "int", 16, "training examples per optimizer step", minimum=1),
    Option("grad_accum_steps", "int", 1, "micro-batches accumulated per optimizer step", minimum=1),
    Option("eval_batch_size", "int", 64, "examples per evaluation batch", minimum=1),
    Option("learning_rate", "float", 5e-5, "peak AdamW learning rate", minimum=0),
    Option("weight_decay", "float", 0.0, "AdamW weight decay (not applied to biases and LayerNorm)", minimum=0),
    Option("warmup_ratio", "float", 0.0, "fraction of steps with linear warm-up, then linear decay", minimum=0),
    Option("warmup_steps", "int", None, "warm-up steps; overrides warmup_ratio", minimum=0),
    Option("max_grad_norm", "float", 1.0, "gradient clipping norm (0 disables)", minimum=0),
    Option("max_length", "int", 128, "maximum tokens per example (longer inputs are truncated)", minimum=1),
    Option("max_train_examples", "int", None, "cap on training examples (seeded subsample)", minimum=1),
    Option("eval_size", "int", None, "cap on validation and test examples (seeded subsample)", minimum=1),
    Option(
        "early_stopping_patience",
        "int",
        None,
        "evaluate on validation each epoch, stop after this many epochs without improvement, restore the best",
        minimum=1,
    ),
    Option(
        "length_grouped",
        "bool",
        False,
        "batch examples of similar length (shuffled mega-batches of 50 batches sorted by length) to cut padding",
    ),
    Option(
        "precision",
        "str",
        "auto",
        "numeric precision: fp32, bf16-mixed / fp16-mixed (autocast with fp32 master weights; fp16 with a gradient "
        "scaler), bf16-true (bf16 weights); auto: bf16-mixed on a CUDA GPU with bf16, else fp32",
        choices=PRECISIONS,
    ),
    Option(
        "attention",
        "str",
        "auto",
        "attention implementation the model is built with (auto: sdpa where the architecture has it, else eager)",
        choices=ATTENTIONS,
    ),
    Option("gradient_checkpointing", "bool", False, "recompute activations in the backward pass (non-reentrant)"),
    Option(
        "compile",
        "bool",
        False,
        "compile the training forward and backward with torch.compile; compilation is one-off time, never step time",
    ),
    Option("warmup_steps_excluded", "int", 5, "first steps left out of step-time statistics", minimum=0),
    Option("timeout_s", "float", None, "wall-clock limit of the cell; it is killed and recorded as failed", minimum=1),
)

BUDGET_DEFAULTS: dict[str, Any] = {o.name: o.default for o in BUDGET_OPTIONS}


@dataclass(frozen=True)
class Budget:
    """A resolved budget (see :data:`BUDGET_OPTIONS` for meanings)."""

    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 16
    grad_accum_steps: int = 1
    eval_batch_size: int = 64
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    warmup_steps: int | None = None
    max_grad_norm: float = 1.0
    max_length: int = 128
    max_train_examples: int | None = None
    eval_size: int | None = None
    early_stopping_patience: int | None = None
    length_grouped: bool = False
    precision: str = "auto"
    attention: str = "auto"
    gradient_checkpointing: bool = False
    compile: bool = False
    warmup_steps_excluded: int = 5
    timeout_s: float | None = None

    #: Keys added after results were first written, with the default that behaves as before they existed:
    #: :attr:`harness.api.cells.Cell.key` leaves a key out of the hash while it holds this value, so the cells
    #: planned before it existed keep their keys (and their finished results).
    KEY_NEUTRAL_DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "precision": "auto",
        "attention": "auto",
        "gradient_checkpointing": False,
        "compile": False,
    }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Budget:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


assert set(BUDGET_DEFAULTS) == {f.name for f in fields(Budget)}, "budget options and Budget fields must match"
assert all(BUDGET_DEFAULTS[k] == v for k, v in Budget.KEY_NEUTRAL_DEFAULTS.items()), "key-neutral values are defaults"


def attn_implementation(budget: Budget) -> str | None:
    """The ``attn_implementation`` a model source passes when it builds the model (``from_pretrained`` /
    ``from_config``): ``budget.attention``, or ``None`` for ``auto`` (transformers' own choice: sdpa where the
    architecture supports it, else eager)."""
    return None if budget.attention == "auto" else budget.attention


def total_steps(n_examples: int, budget: Budget) -> int:
    """Optimizer steps the budget asks for."""
    if budget.max_steps is not None:
        return budget.max_steps
    return math.ceil(budget.epochs * math.ceil(n_examples / budget.batch_size))
