"""The peft config of a cell (light at import: peft is imported inside the functions that build from it).

:func:`config_kwargs` turns a strategy's options into the arguments of its peft config class: the declared options
that are set, the ``peft`` table, the task type (:func:`peft_task_type`: encoder heads ``SEQ_CLS`` / ``TOKEN_CLS``,
decoders ``CAUSAL_LM``, encoder-decoders ``SEQ_2_SEQ_LM``), the task head to train and save (``modules_to_save``),
target modules for model types peft has no default for (:func:`default_targets`), and the defaults that depend on the
model or the cell (AdaLoRA's ``total_step``, the encoder width); :func:`build_config` makes the config from them.

:data:`ENCODER_TASKS` is shared with :mod:`harness_plugins.peft_strategies`, which plans encoder cells by it.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from harness.api.components import CellContext, TaskRun
from harness.api.options import did_you_mean
from harness.errors import HarnessError

#: Encoder task types by task plugin name (see :mod:`harness_plugins.peft_strategies`).
ENCODER_TASKS = {"classification": "SEQ_CLS", "ner": "TOKEN_CLS"}
#: peft task types of the text-to-text families.
FAMILY_TASK_TYPES = {"decoder": "CAUSAL_LM", "encoder-decoder": "SEQ_2_SEQ_LM"}
#: Head classes of transformers models, by the suffix of their class name.
HEAD_CLASS_TASK_TYPES = {"ForSequenceClassification": "SEQ_CLS", "ForTokenClassification": "TOKEN_CLS"}
#: Methods that prepend virtual tokens to the input embeddings.
VIRTUAL_TOKEN_CONFIGS = ("PromptTuningConfig", "PromptEncoderConfig")


def peft_task_type(model: Any, family: str, task: str, where: str) -> str:
    """The peft task type of a cell: by family for text-to-text models, by head class (then task name) for encoders."""
    if family in FAMILY_TASK_TYPES:
        return FAMILY_TASK_TYPES[family]
    name = type(model).__name__
    for suffix, task_type in HEAD_CLASS_TASK_TYPES.items():
        if name.endswith(suffix):
            return task_type
    if task in ENCODER_TASKS:
        return ENCODER_TASKS[task]
    raise HarnessError(f"{where}: no peft task type for task {task!r} on an encoder ({name}); it needs a head model")


def head_modules(model: Any, head_prefixes: Sequence[str]) -> list[str]:
    """Names of the model's modules that are the task head (trained and saved with the adapter)."""
    names = {name for name, _ in model.named_modules()}
    return sorted({p.rstrip(".") for p in head_prefixes if p.rstrip(".") in names})


def _dataclass_in(hint: Any) -> type | None:
    for candidate in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(candidate) and isinstance(candidate, type):
            return candidate
    return None


def build_config(config_class: str, kwargs: Mapping[str, Any], where: str) -> Any:
    """peft's ``config_class`` from ``kwargs``; tables become the dataclasses a field expects."""
    import peft

    cls = getattr(peft, config_class)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # forward references peft does not resolve: fall back to the raw annotations
        hints = {name: f.type for name, f in fields.items()}
    values = dict(kwargs)
    for key, value in values.items():
        if key not in fields:
            raise HarnessError(
                f"{where}.peft.{key}: not a field of peft's {config_class}{did_you_mean(key, list(fields))}"
            )
        nested = _dataclass_in(hints.get(key))
        if isinstance(value, Mapping) and nested is not None:
            try:
                values[key] = nested(**value)
            except TypeError as exc:
                raise HarnessError(f"{where}.peft.{key}: peft's {nested.__name__} rejects it ({exc})") from None
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise HarnessError(f"{where}: peft's {config_class} rejects the options: {exc}") from None


#: Methods whose tuner class keeps no ``target_module_mapping``: peft's constant of their default targets.
TARGET_MAPPINGS = {"LoraConfig": "LORA", "AdaLoraConfig": "ADALORA", "IA3Config": "IA3"}


def target_mapping(config_class: str) -> Mapping[str, Any] | None:
    """peft's per-architecture default target modules of the method of ``config_class`` (``model_type`` -> module
    names), or ``None`` when the method keeps none (prompt learning, or targets it always needs spelled out)."""
    from peft.utils import constants

    key = TARGET_MAPPINGS.get(config_class)
    if key:
        return getattr(constants, f"TRANSFORMERS_MODELS_TO_{key}_TARGET_MODULES_MAPPING", None)
    try:
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
    except ImportError:  # pragma: no cover - an older peft layout
        return None
    for peft_type, cls in PEFT_TYPE_TO_CONFIG_MAPPING.items():
        if cls.__name__ == config_class:
            mapping = getattr(PEFT_TYPE_TO_TUNER_MAPPING.get(peft_type), "target_module_mapping", None)
            return mapping if isinstance(mapping, Mapping) else None
    return None


def default_targets(model: Any, config_class: str) -> dict[str, Any]:
    """Target modules for a model type peft has no default for: the defaults of the first architecture in peft's
    mapping whose module names the model shares (Marian takes BART's ``q_proj``, ``v_proj``); empty when peft
    knows the model type, or no architecture fits (:func:`missing_targets` then says what to set)."""
    from peft.utils import constants

    targets = target_mapping(config_class) or {}
    ia3 = config_class == "IA3Config"
    feedforward = getattr(constants, "TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING", {})
    if not targets or getattr(model.config, "model_type", None) in targets:
        return {}
    names = [name for name, module in model.named_modules() if not list(module.children())]

    def present(suffix: str) -> bool:
        return any(name == suffix or name.endswith("." + suffix) for name in names)

    for other, modules in targets.items():
        if modules and all(present(m) for m in modules) and (not ia3 or other in feedforward):
            return {
                "target_modules": list(modules),
                **({"feedforward_modules": list(feedforward[other])} if ia3 else {}),
            }
    return {}


def missing_targets(model: Any, config_class: str, head_prefixes: Sequence[str], key: str) -> str | None:
    """Why a method that adapts named modules cannot run without ``target_modules`` on ``model`` (peft keeps
    defaults for other architectures only), naming the modules of the model that could be targets; ``None`` when
    peft has a default for it or the method takes no target modules."""
    import torch
    from transformers.pytorch_utils import Conv1D

    linear = (torch.nn.Linear, Conv1D)  # GPT-2 builds its linear layers as Conv1D
    targets = target_mapping(config_class)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if not targets or model_type in targets:
        return None
    norms = config_class == "LNTuningConfig"
    heads = tuple(p.rstrip(".") for p in head_prefixes)
    candidates = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if not list(module.children())
            and not (heads and name.startswith(heads))
            and (("Norm" in type(module).__name__) if norms else isinstance(module, linear))
        }
    )
    kind = "normalisation" if norms else "linear"
    return (
        f"peft's {config_class} has no default target modules for model type {model_type!r}; set {key} to module "
        f"names: the model's {kind} layers are {', '.join(candidates) or 'none'}"
    )


def hidden_size(model: Any) -> int:
    """Width of the model's token embeddings."""
    return int(model.get_input_embeddings().embedding_dim)


def planned_steps(run: TaskRun, ctx: CellContext) -> int:
    """Optimizer steps the cell's budget asks for (AdaLoRA's ``total_step``)."""
    from harness.api.budget import total_steps

    return max(1, total_steps(len(run.examples("train")), ctx.budget))


def config_kwargs(
    model: Any, run: TaskRun, config_class: str, options: Mapping[str, Any], ctx: CellContext, task_type: str
) -> dict[str, Any]:
    """peft config arguments from the strategy options: the declared ones that are set, the ``peft`` table, the task
    type, the head to train and save, and the defaults that depend on the model or the cell."""
    kwargs = {k: v for k, v in options.items() if k != "peft" and v is not None}
    extra = dict(options.get("peft") or {})
    modules = list(extra.pop("modules_to_save", None) or [])
    kwargs.update(extra, task_type=task_type)
    if kwargs.get("target_modules") == ["all-linear"]:
        kwargs["target_modules"] = "all-linear"  # peft's special value: every linear layer but the output layer
    elif "target_modules" not in kwargs and "target_parameters" not in kwargs:
        kwargs.update({k: v for k, v in default_targets(model, config_class).items() if k not in kwargs})
        where = f"strategies.{ctx.cell.strategy}"
        key = f"{where}.target_modules" if "target_modules" in options else f"{where}.peft.target_modules"
        reason = None if "target_modules" in kwargs else missing_targets(model, config_class, run.head_prefixes, key)
        if reason:
            raise HarnessError(f"{where}: {reason}")
    if task_type in HEAD_CLASS_TASK_TYPES.values():
        modules += head_modules(model, run.head_prefixes)
    if modules:
        kwargs["modules_to_save"] = sorted(set(modules))
    if config_class == "AdaLoraConfig":
        kwargs.setdefault("total_step", planned_steps(run, ctx))
    if config_class == "PromptEncoderConfig" or kwargs.get("prefix_projection"):
        kwargs.setdefault("encoder_hidden_size", hidden_size(model))
    if config_class in VIRTUAL_TOKEN_CONFIGS and task_type == "SEQ_2_SEQ_LM":
        # peft's default of 2 also allocates prompts for the decoder, which these methods never use
        kwargs.setdefault("num_transformer_submodules", 1)
    return kwargs
