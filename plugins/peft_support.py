"""Worker-side machinery of the peft strategies (heavy: imports torch and peft; only ``apply`` imports it).

:func:`apply_peft` builds the peft config from a cell's options (:mod:`harness_plugins.peft_config`) and wraps the
model; on top of peft (0.17 to 0.21, with transformers 4.57 and 5.x) it

* maps the cell to peft's task type (encoder heads: ``SEQ_CLS`` / ``TOKEN_CLS``; decoders ``CAUSAL_LM``;
  encoder-decoders ``SEQ_2_SEQ_LM``) and trains the task head (``modules_to_save`` from ``run.head_prefixes``), in
  :mod:`harness_plugins.peft_config`;
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

import inspect
import math
import weakref
from collections.abc import Mapping
from typing import Any

import peft
import torch
from peft import get_peft_model

from harness.api.components import CellContext, TaskRun
from harness.errors import HarnessError

from .peft_config import HEAD_CLASS_TASK_TYPES, VIRTUAL_TOKEN_CONFIGS, build_config, config_kwargs, peft_task_type

IGNORE_INDEX = -100


def task_tokenizer(run: TaskRun) -> Any:
    """The tokenizer the task bound in ``build_model`` (every built-in task keeps one), or ``None``."""
    for attribute in ("tokenizer", "_tokenizer"):
        value = getattr(run, attribute, None)
        if value is not None and hasattr(value, "convert_tokens_to_ids"):
            return value
    return None


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
