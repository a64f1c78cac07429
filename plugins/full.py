"""The ``full`` strategy: full fine-tuning, optionally with the embeddings and the first k layers frozen.

Light at import: the model is only touched through its own methods inside :meth:`FullFineTuning.apply`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from harness.api.components import CellContext, Strategy, TaskRun
from harness.api.hookspecs import hookimpl
from harness.api.options import Option
from harness.errors import HarnessError

#: Module names of the repeated blocks of common architectures: ``bert.encoder.layer.3``, ``model.layers.3``
#: (Llama, Qwen), ``transformer.h.3`` (GPT-2), ``encoder.block.3`` (T5), ``transformer.layer.3`` (DistilBERT).
LAYER_PATTERN = re.compile(r"^(?P<stack>(?:.*\.)?(?:layer|layers|h|block|blocks))\.(?P<index>\d+)$")
#: Module names of embedding tables: ``bert.embeddings``, ``embed_tokens``, ``embed_positions``, GPT-2 ``wte``/``wpe``.
EMBEDDING_PATTERN = re.compile(r"(?:^|\.)(?:embeddings|embed_\w+|wte|wpe)$")


def layer_stack(model: Any) -> tuple[str, list[Any]]:
    """The first stack of repeated layers in module order (an encoder-decoder's encoder): its name and layers."""
    stacks: dict[str, dict[int, Any]] = {}
    for name, module in model.named_modules():
        match = LAYER_PATTERN.match(name)
        if match:
            stacks.setdefault(match["stack"], {})[int(match["index"])] = module
    if not stacks:
        return "", []
    stack = next(iter(stacks))
    return stack, [stacks[stack][i] for i in sorted(stacks[stack])]


def embedding_modules(model: Any) -> list[Any]:
    """The input embeddings plus every module named like an embedding table."""
    found = [module for name, module in model.named_modules() if EMBEDDING_PATTERN.search(name)]
    get_input = getattr(model, "get_input_embeddings", None)
    if callable(get_input) and get_input() is not None and all(get_input() is not m for m in found):
        found.append(get_input())
    return found


class FullFineTuning(Strategy):
    """Train every weight of the model and its task head.

    Budget defaults follow the standard recipes for fine-tuning pretrained encoders: learning rate 2e-5 (BERT's
    grid was 2e-5..5e-5 and RoBERTa's GLUE runs 1e-5..3e-5; full fine-tuning diverges at the 1e-3..1e-4 rates
    adapters use), 6 % linear warm-up (RoBERTa) and weight decay 0.01 (BERT). A suite's ``[budget]`` overrides them.
    """

    name = "full"
    description = "full fine-tuning: every weight trains (optionally freeze the embeddings and the first k layers)"
    options = (
        Option("freeze_embeddings", "bool", False, "keep the embedding tables frozen"),
        Option("freeze_layers", "int", 0, "freeze the embeddings and the first k layers", minimum=0),
    )
    budget_defaults = {"learning_rate": 2e-5, "warmup_ratio": 0.06, "weight_decay": 0.01}

    def apply(self, model: Any, run: TaskRun, options: Mapping[str, Any], ctx: CellContext) -> Any:
        for param in model.parameters():
            param.requires_grad_(True)
        freeze_layers = int(options.get("freeze_layers", 0))
        frozen: list[Any] = []
        if options.get("freeze_embeddings", False) or freeze_layers:
            frozen += embedding_modules(model)
        if freeze_layers:
            stack, layers = layer_stack(model)
            if freeze_layers > len(layers):
                where = f"strategies.{ctx.cell.strategy}.freeze_layers"
                found = f"{len(layers)} layers in {stack!r}" if layers else "no repeated layers"
                raise HarnessError(f"{where}: {freeze_layers} exceeds the model's layer count ({found})")
            frozen += layers[:freeze_layers]
        for module in frozen:
            for param in module.parameters():
                param.requires_grad_(False)
        return model


@hookimpl
def harness_register_strategies(register):
    register(FullFineTuning())
