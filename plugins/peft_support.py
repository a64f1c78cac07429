"""Worker-side machinery of the peft strategies (heavy: imports torch and peft; only ``apply`` imports it).

:func:`apply_peft` builds the peft config from a cell's options and wraps the model; on top of peft (0.17 to 0.21,
with transformers 4.57 and 5.x) it

* maps the cell to peft's task type (encoder heads: ``SEQ_CLS`` / ``TOKEN_CLS``; decoders ``CAUSAL_LM``;
  encoder-decoders ``SEQ_2_SEQ_LM``) and trains the task head (``modules_to_save`` from ``run.head_prefixes``);
* aligns outputs with the input positions where prompt tuning and P-tuning prepend virtual tokens: a causal LM's
  logits lose the virtual positions (log-likelihood scoring reads logits by position), and token classification
  computes its loss on the real positions (peft 0.21 does not pad the labels for the virtual tokens and fails);
* generates from causal LMs after their virtual tokens itself: peft 0.21 drops position ids, so with prompt tuning
  and P-tuning a left-padded prompt in a batch was answered differently than alone (transformers 4.57 and 5), and
  it reads the cache as ``past_key_values``, which transformers 5 renamed ``cache``, so prefix tuning lost its
  prefix after the first step (answers unlike greedy decoding);
* runs prefix tuning on encoders whose forward takes the key/value cache as ``cache`` (transformers 5), where
  peft looks for ``past_key_values`` and refuses;
* calls AdaLoRA's ``update_and_allocate`` after every optimizer step of the harness's training loop;
* initialises prompt tuning from text with the task's own tokenizer (peft would load one by name);
* turns peft's complaints about options into one-line :class:`HarnessError` s.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import peft
import torch
from peft import get_peft_model

from harness.api.components import CellContext, TaskRun
from harness.api.options import did_you_mean
from harness.errors import HarnessError

from .peft_strategies import ENCODER_TASKS

#: peft task types of the text-to-text families.
FAMILY_TASK_TYPES = {"decoder": "CAUSAL_LM", "encoder-decoder": "SEQ_2_SEQ_LM"}
#: Head classes of transformers models, by the suffix of their class name.
HEAD_CLASS_TASK_TYPES = {"ForSequenceClassification": "SEQ_CLS", "ForTokenClassification": "TOKEN_CLS"}
#: Methods that prepend virtual tokens to the input embeddings.
VIRTUAL_TOKEN_CONFIGS = ("PromptTuningConfig", "PromptEncoderConfig")
IGNORE_INDEX = -100


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


def task_tokenizer(run: TaskRun) -> Any:
    """The tokenizer the task bound in ``build_model`` (every built-in task keeps one), or ``None``."""
    for attribute in ("tokenizer", "_tokenizer"):
        value = getattr(run, attribute, None)
        if value is not None and hasattr(value, "convert_tokens_to_ids"):
            return value
    return None


def _dataclass_in(hint: Any) -> type | None:
    for candidate in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(candidate) and isinstance(candidate, type):
            return candidate
    return None


def build_config(config_class: str, kwargs: Mapping[str, Any], where: str) -> Any:
    """peft's ``config_class`` from ``kwargs``; tables become the dataclasses a field expects."""
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


#: peft's per-architecture default target modules, by config class (``TRANSFORMERS_MODELS_TO_{key}_...``).
TARGET_MAPPINGS = {"LoraConfig": "LORA", "AdaLoraConfig": "ADALORA", "IA3Config": "IA3"}


def default_targets(model: Any, config_class: str) -> dict[str, Any]:
    """Target modules for a model type peft has no default for: the defaults of the first architecture in peft's
    mapping whose module names the model shares (Marian takes BART's ``q_proj``, ``v_proj``); empty when peft
    knows the model type, or no architecture fits (peft then asks for ``target_modules``)."""
    from peft.utils import constants

    key = TARGET_MAPPINGS.get(config_class)
    targets = getattr(constants, f"TRANSFORMERS_MODELS_TO_{key}_TARGET_MODULES_MAPPING", {}) if key else {}
    feedforward = getattr(constants, "TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING", {})
    if not targets or getattr(model.config, "model_type", None) in targets:
        return {}
    names = [name for name, module in model.named_modules() if not list(module.children())]

    def present(suffix: str) -> bool:
        return any(name == suffix or name.endswith("." + suffix) for name in names)

    for other, modules in targets.items():
        if modules and all(present(m) for m in modules) and (key != "IA3" or other in feedforward):
            return {
                "target_modules": list(modules),
                **({"feedforward_modules": list(feedforward[other])} if key == "IA3" else {}),
            }
    return {}


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
    elif config_class in TARGET_MAPPINGS and "target_modules" not in kwargs:
        kwargs.update({k: v for k, v in default_targets(model, config_class).items() if k not in kwargs})
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


def apply_peft(model: Any, run: TaskRun, config_class: str, options: Mapping[str, Any], ctx: CellContext) -> Any:
    """Wrap ``model`` (with the task's head) in peft's ``config_class`` built from the strategy ``options``."""
    where = f"strategies.{ctx.cell.strategy}"
    if config_class == "AdaLoraConfig" and ctx.budget.early_stopping_patience:
        raise HarnessError(
            f"{where}: adalora cannot run with budget.early_stopping_patience: restoring an earlier epoch's weights "
            "would not restore the rank budget they were pruned under (the saved adapter would cut live ranks)"
        )
    task_type = getattr(run, "peft_task_type", None) or peft_task_type(
        model, ctx.cell.model_family, ctx.cell.task_type, where
    )
    kwargs = config_kwargs(model, run, config_class, options, ctx, task_type)
    init_text = None
    if config_class == "PromptTuningConfig" and kwargs.get("prompt_tuning_init") == "TEXT":
        if not kwargs.get("tokenizer_name_or_path"):  # peft would load a tokenizer by name; use the task's own
            init_text = kwargs.pop("prompt_tuning_init_text", None)
            kwargs["prompt_tuning_init"] = "RANDOM"
    prompt_method = config_class in VIRTUAL_TOKEN_CONFIGS or config_class == "PrefixTuningConfig"
    head = task_type in HEAD_CLASS_TASK_TYPES.values()
    cache = encoder_cache_argument(model, where) if config_class == "PrefixTuningConfig" and head else None
    config = build_config(config_class, kwargs, where)
    try:
        wrapped = get_peft_model(model, config)
    except (ValueError, TypeError, NotImplementedError, KeyError) as exc:
        raise HarnessError(f"{where}: peft cannot apply {config_class} to {type(model).__name__}: {exc}") from None
    if init_text is not None:
        init_from_text(wrapped, init_text, task_tokenizer(run), where)
    if config_class in VIRTUAL_TOKEN_CONFIGS and task_type == "TOKEN_CLS":
        align_token_classification(wrapped)
    if config_class in VIRTUAL_TOKEN_CONFIGS and task_type == "CAUSAL_LM":
        strip_virtual_logits(wrapped)
    if prompt_method and task_type == "CAUSAL_LM":
        generate_after_virtual_tokens(wrapped)
    if cache == "cache":
        encoder_prefix_forward(wrapped)
    if config_class == "AdaLoraConfig":
        allocate_ranks_after_each_step(wrapped)
    return wrapped


def init_from_text(model: Any, text: str, tokenizer: Any, where: str) -> None:
    """Initialise the soft prompt with the embeddings of ``text``'s tokens, repeated or cut to the virtual tokens
    (what peft's ``PromptTuningInit.TEXT`` does with a tokenizer it loads itself)."""
    if tokenizer is None:
        raise HarnessError(
            f"{where}.prompt_tuning_init: TEXT needs a tokenizer; the task has none, set peft.tokenizer_name_or_path"
        )
    config = model.active_peft_config
    total = config.num_virtual_tokens * config.num_transformer_submodules
    ids = list(tokenizer(text)["input_ids"])
    if not ids:
        raise HarnessError(f"{where}.prompt_tuning_init_text: the text has no tokens")
    ids = (ids * math.ceil(total / len(ids)))[:total]
    embedding = model.prompt_encoder[model.active_adapter].embedding
    with torch.no_grad():
        weights = model.word_embeddings(torch.tensor(ids, device=embedding.weight.device))
        embedding.weight.copy_(weights.to(embedding.weight.dtype))
    config.prompt_tuning_init = peft.PromptTuningInit.TEXT
    config.prompt_tuning_init_text = text
    # peft refuses to load a TEXT-initialised config without a tokenizer name (it never loads it in inference mode)
    config.tokenizer_name_or_path = getattr(tokenizer, "name_or_path", None) or "task tokenizer"


def _virtual_tokens(model: Any) -> int:
    return int(model.active_peft_config.num_virtual_tokens)


def _length(input_ids: Any, inputs_embeds: Any) -> int:
    return int((input_ids if input_ids is not None else inputs_embeds).shape[1])


def strip_virtual_logits(model: Any) -> None:
    """A causal LM with prepended virtual tokens returns logits for them too; drop them so position ``i`` of the
    logits belongs to input token ``i`` (peft's loss already ignores them through padded labels)."""
    original = model.forward

    def forward(input_ids: Any = None, attention_mask: Any = None, inputs_embeds: Any = None, **kwargs: Any) -> Any:
        output = original(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs)
        n, length = _virtual_tokens(model), _length(input_ids, inputs_embeds)
        if getattr(output, "logits", None) is not None and output.logits.shape[1] == length + n:
            output["logits"] = output.logits[:, n:]
        return output

    model.forward = forward


def generate_after_virtual_tokens(model: Any) -> None:
    """Greedy or beam generation of a causal LM after its virtual tokens, as it was trained: the virtual tokens
    (prompt embeddings, or the prefix's keys and values) come first with positions 0..n-1, the prompt's tokens follow
    at n.. whatever the left padding, and the answer continues the cache.

    peft 0.21's own generation drops position ids (prompt tuning, P-tuning: a left-padded prompt is answered
    differently in a batch than alone) and looks for the cache under ``past_key_values``, which transformers 5 renamed
    ``cache`` (it re-injects the prompt at every step, and prefix tuning loses its prefix). Here the base model
    generates from the virtual tokens prefilled as the first n positions of its input (filler ids in ``input_ids``,
    which generation never embeds), and the filler columns are cut from the output."""
    base = model.get_base_model()
    cache_name = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    prefix = model.active_peft_config.peft_type == peft.PeftType.PREFIX_TUNING

    def generate(input_ids: Any = None, attention_mask: Any = None, **kwargs: Any) -> Any:
        if input_ids is None:
            raise ValueError("generation after virtual tokens needs input_ids")
        batch, n = input_ids.shape[0], _virtual_tokens(model)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        config = kwargs.get("generation_config")
        pad = getattr(config, "pad_token_id", None)
        filler = torch.full(
            (batch, n), pad if isinstance(pad, int) else 0, dtype=input_ids.dtype, device=input_ids.device
        )
        ones = torch.ones(batch, n, dtype=attention_mask.dtype, device=attention_mask.device)
        if prefix:  # one prefix row per beam: generation expands the inputs, never a cache it is given
            beams = kwargs.get("num_beams") or getattr(config, "num_beams", None) or 1
            kwargs[cache_name] = model.get_prompt(batch * beams)
        else:
            embeds = model.word_embeddings(input_ids)
            kwargs["inputs_embeds"] = torch.cat((model.get_prompt(batch).to(embeds.dtype), embeds), dim=1)
        output = base.generate(
            input_ids=torch.cat((filler, input_ids), dim=1),
            attention_mask=torch.cat((ones, attention_mask), dim=1),
            **kwargs,
        )
        return output[:, n:]

    model.generate = generate


def align_token_classification(model: Any) -> None:
    """Token classification with prepended virtual tokens: logits of the real positions only, and the loss over them
    (cross-entropy ignoring -100, as transformers' token-classification heads compute it)."""
    from transformers.modeling_outputs import TokenClassifierOutput

    original = model.forward

    def forward(
        input_ids: Any = None, attention_mask: Any = None, inputs_embeds: Any = None, labels: Any = None, **kwargs: Any
    ) -> Any:
        kwargs.pop("return_dict", None)
        output = original(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, return_dict=True, **kwargs
        )
        n, length = _virtual_tokens(model), _length(input_ids, inputs_embeds)
        logits = output.logits[:, n:] if output.logits.shape[1] == length + n else output.logits
        loss = None
        if labels is not None:
            flat = logits.reshape(-1, logits.shape[-1])
            loss = torch.nn.functional.cross_entropy(
                flat, labels.reshape(-1).to(logits.device), ignore_index=IGNORE_INDEX
            )
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=output.hidden_states, attentions=output.attentions
        )

    model.forward = forward


def encoder_cache_argument(model: Any, where: str) -> str:
    """How an encoder with a head takes prefix tuning's keys and values: ``past_key_values`` (peft passes them,
    transformers 4) or ``cache`` (transformers 5 encoders, which peft refuses). Encoders that take neither (DistilBERT)
    cannot hold a prefix: a clear error before peft's own."""
    from transformers import PreTrainedModel

    head_params = inspect.signature(model.forward).parameters
    backbone = next((m for _, m in model.named_children() if isinstance(m, PreTrainedModel)), None)
    backbone_params = inspect.signature(backbone.forward).parameters if backbone is not None else {}
    if "past_key_values" in head_params or "past_key_values" in backbone_params:
        return "past_key_values"
    if "cache" in backbone_params and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in head_params.values()):
        return "cache"
    name = type(backbone if backbone is not None else model).__name__
    raise HarnessError(
        f"{where}: prefix tuning needs an encoder that takes past keys and values; "
        f"{name}.forward takes neither past_key_values nor cache"
    )


def encoder_prefix_forward(model: Any) -> None:
    """Prefix tuning on a transformers 5 encoder with a head: peft passes its prefix as ``past_key_values`` and
    refuses an encoder without it; give it as ``cache``, which the head model forwards to its encoder."""
    base = model.base_model

    def forward(
        input_ids: Any = None, attention_mask: Any = None, inputs_embeds: Any = None, labels: Any = None, **kwargs: Any
    ) -> Any:
        batch = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        if attention_mask is not None:
            prefix = torch.ones(batch, _virtual_tokens(model), dtype=attention_mask.dtype, device=attention_mask.device)
            attention_mask = torch.cat((prefix, attention_mask), dim=1)
        kwargs.pop("task_ids", None)
        return base(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            labels=labels,
            cache=model.get_prompt(batch),
            **kwargs,
        )

    model.forward = forward


#: Optimizer hooks of AdaLoRA models, with a weak reference to their model (dead ones are removed at registration:
#: a hook cannot remove itself while the optimizer iterates over the hooks).
_ALLOCATION_HOOKS: list[tuple[Any, weakref.ref]] = []


def allocate_ranks_after_each_step(model: Any) -> None:
    """AdaLoRA prunes ranks by importance after each optimizer step (``update_and_allocate``, before the gradients
    are cleared). The harness's loop knows nothing of it, so an optimizer step hook calls it for the optimizer that
    trains this model (identified by one of its AdaLoRA parameters), with the number of steps done (as transformers'
    ``Trainer`` counts ``global_step``): the last of ``total_step`` steps fixes the final ranks."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    for handle, ref in list(_ALLOCATION_HOOKS):
        if ref() is None:
            handle.remove()
            _ALLOCATION_HOOKS.remove((handle, ref))
    marker = next(p for name, p in model.named_parameters() if "lora_E" in name)
    model_ref, marker_ref = weakref.ref(model), weakref.ref(marker)
    done = [0]

    def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
        current, param = model_ref(), marker_ref()
        if current is None or param is None:
            return
        if any(p is param for group in optimizer.param_groups for p in group["params"]):
            done[0] += 1
            current.base_model.update_and_allocate(done[0])

    _ALLOCATION_HOOKS.append((register_optimizer_step_post_hook(hook), model_ref))


def stored_bytes(model: Any) -> int:
    """Bytes of the tensors ``save_pretrained`` writes: peft's adapter state dict (the prompts P-tuning's encoder
    yields rather than the encoder, LoRA factors, IA3 vectors, the trained head). For AdaLoRA before training these
    are the factors at ``init_r``; once ranks are allocated, ``save_pretrained`` cuts them to the ranks kept."""
    from peft import get_peft_model_state_dict

    with torch.no_grad():
        state = get_peft_model_state_dict(model)
    return sum(t.numel() * t.element_size() for t in state.values())
