"""The peft strategies: ``lora``, ``adalora``, ``ia3``, ``prompt_tuning``, ``prefix_tuning``, ``p_tuning``, and ``peft``
(any method of the installed peft: ``method = "vera"``, see :class:`AnyPeftMethod`).

Light at import (no torch, no peft): options are declared here, checked against the fields of the installed peft's
config dataclasses read from its source with :mod:`ast`, and the model is wrapped inside the worker by
:mod:`harness_plugins.peft_support` (the config from :mod:`harness_plugins.peft_config`).

Options. The commonly used fields of each peft config are typed options with documented defaults; any other field
of the config passes through the ``peft`` table (``peft = {use_dora = true}``), whose keys and value types are
checked at ``harness validate`` time. The harness sets ``task_type`` (from the task and model family),
``inference_mode`` and ``modules_to_save`` (the task head; a ``peft.modules_to_save`` list adds modules).

Support. Encoder models run the tasks with a head (``classification`` -> ``SEQ_CLS``, ``ner`` -> ``TOKEN_CLS``; a
third-party task may declare ``peft_task_type`` on its Task, for planning, and on its TaskRun, for the worker); the head trains beside the adapter and counts in ``params.head``.
Decoders (``CAUSAL_LM``) and encoder-decoders (``SEQ_2_SEQ_LM``) run every task text-to-text. Every strategy runs
every such cell; what peft alone gets wrong there is fixed in :mod:`harness_plugins.peft_support`.

Budgets. Each strategy's ``budget_defaults`` sets the learning rate its method is trained with in the sources cited
on the class (full fine-tuning's 2e-5 leaves prompt tuning near chance), with the 6 % warm-up of peft's
sequence-classification examples and the weight decay 0.01 of their ``torch.optim.AdamW``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from harness.api.components import CellContext, CheckContext, Strategy, Task, TaskRun
from harness.api.hookspecs import hookimpl
from harness.api.options import REQUIRED, Option, did_you_mean
from harness.errors import Problem

from .peft_config import ENCODER_TASKS
from .peft_fields import peft_fields
from .peft_methods import (
    LORA_RATE,
    REFUSED,
    available,
    fixed_conflicts,
    installed_methods,
    learning_rate,
    method_key,
    resolve,
    worker_config,
)

#: Config fields the harness sets itself, and why.
CONTROLLED = {
    "task_type": "the harness sets it from the task and the model family",
    "peft_type": "the strategy fixes it",
    "inference_mode": "the harness trains the adapter",
    "base_model_name_or_path": "the model source sets it",
    "revision": "the model source sets it",
    "auto_mapping": "peft fills it in",
    "peft_version": "peft fills it in",
}
#: Where peft defines the base configs (files inside the peft package).
PEFT_BASE = ("config.py", "PeftConfig")
PROMPT_BASE = ("config.py", "PromptLearningConfig")

TARGETS_HELP = (
    "module-name suffixes to adapt (default: peft's per-architecture mapping, e.g. BERT query,value, GPT-2 c_attn, "
    "T5 q,v, Llama q_proj,v_proj; an unknown type takes those of one whose names it shares, as Marian BART's); "
    "['all-linear'] adapts every linear layer but the output"
)


def peft_table(config: str) -> Option:
    return Option("peft", "table", None, f"further fields of peft's {config}, passed as they are (checked by name)")


class PeftStrategy(Strategy):
    """A strategy that wraps the model in a peft config (see the module docs)."""

    #: peft's config class, and where its fields are declared: (file inside peft, class), base classes first.
    peft_config: ClassVar[str] = ""
    config_chain: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: Budget shared by every peft strategy; each sets its own learning rate.
    COMMON_BUDGET: ClassVar[Mapping[str, Any]] = {"warmup_ratio": 0.06, "weight_decay": 0.01}

    def supports(self, task: Task, family: str) -> str | None:
        reason = super().supports(task, family)
        if reason is None and family == "encoder" and encoder_task_type(task) is None:
            known = ", ".join(ENCODER_TASKS)
            return f"peft strategies run encoder models on tasks with a head ({known}); {task.name!r} has none"
        return reason

    def check(self, options: Mapping[str, Any], where: str, ctx: CheckContext) -> list[Problem]:
        problems = self.check_fields(options.get("peft") or {}, where)
        if options.get("target_modules") == []:
            problems.append(Problem(f"{where}.target_modules", "empty list; leave it out for peft's default modules"))
        return problems + self.check_values(options, where)

    def check_fields(self, extra: Mapping[str, Any], where: str) -> list[Problem]:
        """Keys and value kinds of the ``peft`` table against the installed peft's config fields."""
        declared = {o.name for o in self.options}
        return check_table(extra, where, self.config_chain, self.peft_config, declared)

    def check_values(self, options: Mapping[str, Any], where: str) -> list[Problem]:
        """Cross-option checks of one strategy."""
        return []

    def apply(self, model: Any, run: TaskRun, options: Mapping[str, Any], ctx: CellContext) -> Any:
        from .peft_support import apply_peft

        return apply_peft(model, run, self.peft_config, options, ctx)

    def stored_bytes(self, model: Any) -> int | None:
        from .peft_support import stored_bytes

        return stored_bytes(model)

    def describe(self) -> dict[str, Any]:
        fields = peft_fields(self.config_chain) or {}
        return {
            **super().describe(),
            "peft_config": self.peft_config,
            "peft_fields": sorted(set(fields) - set(CONTROLLED)),
        }


def check_table(
    extra: Mapping[str, Any], where: str, chain: tuple[tuple[str, str], ...], config: str, declared: set[str]
) -> list[Problem]:
    """Keys and value kinds of a ``peft`` table against the fields of peft's config class ``config`` (declared in
    ``chain``); keys the strategy declares as options of its own (``declared``) belong outside the table."""
    fields = peft_fields(chain)
    problems = []
    for key, value in extra.items():
        at = f"{where}.peft.{key}"
        if key in declared:
            problems.append(Problem(at, f"set it as {where}.{key}, not in the peft table"))
        elif key in CONTROLLED:
            problems.append(Problem(at, CONTROLLED[key]))
        elif fields is not None and key not in fields:
            known = sorted(set(fields) - set(CONTROLLED))
            problems.append(Problem(at, f"not a field of peft's {config}{did_you_mean(key, known)}"))
        elif fields is not None and not fields[key].accepts(value):
            problems.append(Problem(at, f"peft's {config}.{key} takes {fields[key].annotation}, got {value!r}"))
    return problems


def installed_peft() -> tuple[tuple[int, ...], str] | None:
    """The installed peft's version, as numbers and as text, read from its metadata (peft is not imported)."""
    try:
        text = importlib.metadata.version("peft")
    except importlib.metadata.PackageNotFoundError:
        return None
    numbers = re.match(r"\d+(?:\.\d+)*", text)
    return (tuple(int(n) for n in numbers.group().split(".")) if numbers else (), text)


def encoder_task_type(task: Task) -> str | None:
    """peft's task type of an encoder cell of ``task``: its own ``peft_task_type`` or the built-in mapping."""
    return getattr(task, "peft_task_type", None) or ENCODER_TASKS.get(task.name)


class Lora(PeftStrategy):
    """LoRA (Hu et al. 2021): trainable low-rank updates B·A of chosen weight matrices, scaled by alpha / r.

    Defaults: r 8, alpha 16, dropout 0.1 on the attention query and value (peft's per-architecture default), as in
    peft's examples/sequence_classification/LoRA.ipynb; learning rate 5e-4, the LoRA paper's RoBERTa-base GLUE rate
    (4e-4..5e-4, Table 9; peft's example uses 3e-4 for RoBERTa-large)."""

    name = "lora"
    description = "LoRA (peft): low-rank updates of the attention weights; the task head trains too"
    peft_config = "LoraConfig"
    config_chain = (PEFT_BASE, ("tuners/lora/config.py", "LoraConfig"))
    options = (
        Option("r", "int", 8, "rank of the update matrices", minimum=1),
        Option("lora_alpha", "int", 16, "scaling numerator: updates are scaled by lora_alpha / r", minimum=1),
        Option("lora_dropout", "float", 0.1, "dropout on the adapter input", minimum=0),
        Option("target_modules", "list[str]", None, TARGETS_HELP),
        Option("bias", "str", "none", "which biases train", choices=("none", "all", "lora_only")),
        Option("use_rslora", "bool", False, "rank-stabilised scaling lora_alpha / sqrt(r)"),
        Option("use_dora", "bool", False, "DoRA: weight-decomposed LoRA"),
        peft_table("LoraConfig"),
    )
    budget_defaults = {"learning_rate": 5e-4, **PeftStrategy.COMMON_BUDGET}


class AdaLora(PeftStrategy):
    """AdaLoRA (Zhang et al. 2023): SVD-shaped LoRA whose ranks are pruned by importance from init_r toward an
    average of target_r during training (after each optimizer step).

    Defaults: init_r 12, target_r 8, alpha 32, dropout 0.1 and learning rate 1e-3 from peft's
    examples/conditional_generation/peft_adalora_seq2seq.py (AdaLoRA's GLUE rates were 5e-4..1.2e-3); the schedule
    tinit 0, tfinal 0, deltaT 1 is peft's default, and total_step is the cell's planned optimizer steps."""

    name = "adalora"
    description = "AdaLoRA (peft): LoRA whose ranks are reallocated by importance while training"
    peft_config = "AdaLoraConfig"
    config_chain = (PEFT_BASE, ("tuners/lora/config.py", "LoraConfig"), ("tuners/adalora/config.py", "AdaLoraConfig"))
    options = (
        Option("init_r", "int", 12, "initial rank of every adapted matrix", minimum=1),
        Option("target_r", "int", 8, "average rank the budget shrinks to", minimum=1),
        Option("lora_alpha", "int", 32, "scaling numerator (updates scaled by lora_alpha / rank)", minimum=1),
        Option("lora_dropout", "float", 0.1, "dropout on the adapter input", minimum=0),
        Option("target_modules", "list[str]", None, TARGETS_HELP),
        Option("tinit", "int", 0, "steps of initial warm-up before ranks are pruned", minimum=0),
        Option("tfinal", "int", 0, "final steps with the ranks fixed", minimum=0),
        Option("deltaT", "int", 1, "steps between rank reallocations", minimum=1),
        Option("total_step", "int", None, "steps of the rank schedule (default: the cell's planned steps)", minimum=1),
        peft_table("AdaLoraConfig"),
    )
    budget_defaults = {"learning_rate": 1e-3, **PeftStrategy.COMMON_BUDGET}

    def check_values(self, options: Mapping[str, Any], where: str) -> list[Problem]:
        problems = []
        if options["target_r"] > options["init_r"]:
            problems.append(Problem(f"{where}.target_r", f"exceeds init_r ({options['init_r']}); ranks only shrink"))
        total = options.get("total_step")
        if total is not None and options["tinit"] >= total - options["tfinal"]:
            problems.append(Problem(f"{where}.tinit", "tinit + tfinal leave no steps of total_step to prune ranks in"))
        return problems


class Ia3(PeftStrategy):
    """(IA)³ (Liu et al. 2022, T-Few): learned vectors that rescale keys, values and the feed-forward activations.

    Defaults: peft's per-architecture target and feed-forward modules (BERT key, value, output.dense); learning rate
    3e-3, the T-Few paper's rate (with Adafactor)."""

    name = "ia3"
    description = "(IA)3 (peft): learned rescaling of keys, values and feed-forward activations"
    peft_config = "IA3Config"
    config_chain = (PEFT_BASE, ("tuners/ia3/config.py", "IA3Config"))
    options = (
        Option("target_modules", "list[str]", None, TARGETS_HELP.replace("BERT query,value", "BERT key,value,dense")),
        Option("feedforward_modules", "list[str]", None, "targets whose input is rescaled (default: peft's mapping)"),
        peft_table("IA3Config"),
    )
    budget_defaults = {"learning_rate": 3e-3, **PeftStrategy.COMMON_BUDGET}


VIRTUAL_TOKENS = Option("num_virtual_tokens", "int", 20, "number of virtual tokens", minimum=1)


class PromptTuning(PeftStrategy):
    """Prompt tuning (Lester et al. 2021): trainable embeddings of virtual tokens prepended to the input.

    Defaults: 20 virtual tokens, randomly initialised (peft's default); learning rate 3e-2 from peft's
    examples/causal_language_modeling/peft_prompt_tuning_clm.ipynb (AdamW; Lester et al. used 0.3 with Adafactor).
    ``prompt_tuning_init = "TEXT"`` starts from the embeddings of ``prompt_tuning_init_text`` (the task's tokenizer)."""

    name = "prompt_tuning"
    description = "prompt tuning (peft): trainable virtual-token embeddings prepended to the input"
    peft_config = "PromptTuningConfig"
    config_chain = (PEFT_BASE, PROMPT_BASE, ("tuners/prompt_tuning/config.py", "PromptTuningConfig"))
    options = (
        VIRTUAL_TOKENS,
        Option("prompt_tuning_init", "str", "RANDOM", "initialisation", choices=("RANDOM", "TEXT", "SAMPLE_VOCAB")),
        Option("prompt_tuning_init_text", "str", None, "text whose token embeddings start the prompt (with TEXT)"),
        peft_table("PromptTuningConfig"),
    )
    budget_defaults = {"learning_rate": 3e-2, **PeftStrategy.COMMON_BUDGET}

    def check_values(self, options: Mapping[str, Any], where: str) -> list[Problem]:
        text = options.get("prompt_tuning_init_text")
        if options["prompt_tuning_init"] == "TEXT" and not text:
            return [Problem(f"{where}.prompt_tuning_init_text", 'required with prompt_tuning_init = "TEXT"')]
        if options["prompt_tuning_init"] != "TEXT" and text:
            return [Problem(f"{where}.prompt_tuning_init_text", 'used only with prompt_tuning_init = "TEXT"')]
        return []


class PrefixTuning(PeftStrategy):
    """Prefix tuning (Li & Liang 2021): trainable keys and values prepended in every attention layer.

    Defaults: 20 virtual tokens without the MLP reparameterisation (peft's default); learning rate 1e-2 from peft's
    examples/conditional_generation/peft_prefix_tuning_seq2seq.ipynb (AdamW; Li & Liang's 5e-5..8e-5 were for the
    reparameterised prefix of much larger models)."""

    name = "prefix_tuning"
    description = "prefix tuning (peft): trainable keys and values prepended in every attention layer"
    peft_config = "PrefixTuningConfig"
    config_chain = (PEFT_BASE, PROMPT_BASE, ("tuners/prefix_tuning/config.py", "PrefixTuningConfig"))
    options = (
        VIRTUAL_TOKENS,
        Option("prefix_projection", "bool", False, "reparameterise the prefix through a two-layer MLP"),
        Option(
            "encoder_hidden_size", "int", None, "MLP width with prefix_projection (default: hidden size)", minimum=1
        ),
        peft_table("PrefixTuningConfig"),
    )
    budget_defaults = {"learning_rate": 1e-2, **PeftStrategy.COMMON_BUDGET}

    def supports(self, task: Task, family: str) -> str | None:
        reason = super().supports(task, family)
        peft = installed_peft()
        if reason is None and family == "encoder-decoder" and peft is not None and peft[0] < (0, 18):
            return (
                "prefix tuning on encoder-decoder models needs peft >= 0.18: older peft builds their cross-attention "
                f"cache through DynamicCache.key_cache, which transformers 4.56 removed (installed peft {peft[1]})"
            )
        return reason

    def check_values(self, options: Mapping[str, Any], where: str) -> list[Problem]:
        if options.get("encoder_hidden_size") is not None and not options["prefix_projection"]:
            return [Problem(f"{where}.encoder_hidden_size", "used only with prefix_projection = true")]
        return []


class PTuning(PeftStrategy):
    """P-tuning (Liu et al. 2021): virtual-token embeddings produced by a trained prompt encoder (MLP or LSTM).
    Only the prompts it yields are stored (``stored_bytes``), not the encoder.

    Defaults: 20 virtual tokens, MLP encoder as wide as the model; learning rate 1e-3 from peft's
    examples/sequence_classification/P_Tuning.ipynb (which uses encoder_hidden_size 128 on RoBERTa-large)."""

    name = "p_tuning"
    description = "P-tuning (peft): virtual-token embeddings produced by a trained prompt encoder"
    peft_config = "PromptEncoderConfig"
    config_chain = (PEFT_BASE, PROMPT_BASE, ("tuners/p_tuning/config.py", "PromptEncoderConfig"))
    options = (
        VIRTUAL_TOKENS,
        Option("encoder_reparameterization_type", "str", "MLP", "prompt encoder", choices=("MLP", "LSTM")),
        Option(
            "encoder_hidden_size", "int", None, "prompt encoder width (default: the model's hidden size)", minimum=1
        ),
        Option("encoder_num_layers", "int", 2, "LSTM layers (peft's MLP always has two)", minimum=1),
        Option("encoder_dropout", "float", 0.0, "prompt encoder dropout", minimum=0),
        peft_table("PromptEncoderConfig"),
    )
    budget_defaults = {"learning_rate": 1e-3, **PeftStrategy.COMMON_BUDGET}


class AnyPeftMethod(PeftStrategy):
    """Any method of the installed peft: ``method`` is peft's name or ``PeftType`` of it (``"vera"``, ``"LOHA"``,
    ``"ln_tuning"``; ``"dora"`` is LoRA with ``use_dora = true``), every other field of its config goes in the ``peft``
    table, checked against the installed peft's config class at validate time (:mod:`harness_plugins.peft_methods`
    reads the methods from peft's source). A method that adapts named modules takes peft's per-architecture default
    ``target_modules`` (or those of an architecture whose names the model shares); for an architecture peft has none
    for, the cell fails naming the modules to choose from. Prompt-learning methods get the fixes of the named
    strategies (prompt_tuning, p_tuning, prefix_tuning); methods needing what harness tasks do not give are refused.

    Learning rate: each method's own, with its source (:data:`harness_plugins.peft_methods.LEARNING_RATES`: VeRA
    5e-3, FourierFT 6e-2, LN tuning 1e-3, LoHa, LoKr, OFT, BOFT and DoRA at LoRA's 5e-4, ...), from
    :meth:`budget_defaults_for`; ``budget_defaults`` is LoRA's rate, what a method without a source trains at."""

    name = "peft"
    description = 'any peft method (method = "vera", "loha", "oft", ...), its config fields in the peft table'
    options = (
        Option(
            "method",
            "str",
            REQUIRED,
            "peft method, by name or PeftType (vera, loha, lokr, oft, boft, fourierft, "
            "ln_tuning, ..., dora = LoRA with use_dora; case-insensitive)",
        ),
        Option("peft", "table", None, "fields of the method's peft config class (checked by name and type)"),
    )
    budget_defaults = {"learning_rate": LORA_RATE, **PeftStrategy.COMMON_BUDGET}

    def budget_defaults_for(self, options: Mapping[str, Any]) -> Mapping[str, Any]:
        """Budget defaults of one suite entry: ``budget_defaults`` with the method's own learning rate."""
        return {**self.budget_defaults, "learning_rate": learning_rate(str(options.get("method") or ""))[0]}

    def check(self, options: Mapping[str, Any], where: str, ctx: CheckContext) -> list[Problem]:
        key = method_key(options["method"])
        method, fixed = resolve(key)
        if key in REFUSED:
            return [Problem(f"{where}.method", f"the harness cannot train peft's {key}: {REFUSED[key]}")]
        if method is None and installed_methods() is not None:
            names = available()
            return [Problem(f"{where}.method", f"unknown peft method {options['method']!r}{did_you_mean(key, names)}; "
                            f"the installed peft offers {', '.join(names)}")]  # fmt: skip
        table = dict(options.get("peft") or {})
        problems = [
            Problem(f"{where}.peft.{k}", f"method {key!r} sets it to {fixed[k]!r}")
            for k in fixed_conflicts(fixed, table)
        ]
        if method is not None:
            problems += check_table(table, where, method.chain, method.config_class, set())
        if table.get("target_modules") == []:
            problems.append(Problem(f"{where}.peft.target_modules", "empty list; leave it out for peft's defaults"))
        return problems

    def apply(self, model: Any, run: TaskRun, options: Mapping[str, Any], ctx: CellContext) -> Any:
        from .peft_support import apply_peft

        where = f"strategies.{ctx.cell.strategy}"
        config_class, table = worker_config(options["method"], options.get("peft") or {}, where)
        return apply_peft(model, run, config_class, {"peft": table}, ctx)

    def describe(self) -> dict[str, Any]:
        rates = {name: learning_rate(name)[0] for name in available()}
        return {**Strategy.describe(self), "peft_methods": available(), "method_learning_rates": rates}


STRATEGIES = (Lora, AdaLora, Ia3, PromptTuning, PrefixTuning, PTuning, AnyPeftMethod)


@hookimpl
def harness_register_strategies(register: Any) -> None:
    for strategy in STRATEGIES:
        register(strategy())
