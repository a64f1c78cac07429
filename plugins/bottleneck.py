"""The ``bottleneck`` strategy: Houlsby / Pfeiffer bottleneck adapters through AdapterHub's ``adapters`` library.

A bottleneck adapter is a small residual feed-forward block (down-projection to ``b = hidden // reduction_factor``,
a non-linearity, up-projection) inserted into every transformer layer of a frozen model:

* ``houlsby`` (adapters' ``double_seq_bn``, Houlsby et al. 2019): two adapters per layer, after the attention block
  and after the feed-forward block, swish; ``2 L (2 H b + b + H)`` trainable parameters.
* ``pfeiffer`` (adapters' ``seq_bn``, Pfeiffer et al. 2021): one adapter per layer, after the feed-forward block,
  relu; ``L (2 H b + b + H)`` trainable parameters.

Exactly the adapter and the task's head (``run.head_prefixes``: the classification or token-classification head of an
encoder) train; everything else, a decoder's untied ``lm_head`` included, stays frozen. Every family works wherever
``adapters`` supports the architecture (BERT, RoBERTa, DistilBERT, DeBERTa, GPT-2, Llama, Mistral, Qwen2/3, T5, BART,
... — ``adapters.init`` names the unsupported ones): encoders with their task heads (classification, NER), decoders
and encoder-decoders through the text-to-text tasks, where the adapted model is used by ``model(**batch)`` and
``model.generate`` like any other (generation with the adapter active gives the same tokens with and without the
KV cache).

``adapters==1.3.0`` pins ``transformers~=4.57.6``, so it cannot live beside transformers 5: it is an optional extra
(``pip install 'tuning-harness[adapters]'``, ``scripts/setup-compat.sh`` makes such an environment). Without it this
module still imports and registers the strategy, and :meth:`BottleneckAdapters.supports` gives the reason its cells
are planned as skipped; ``adapters`` (and torch) are imported only inside :meth:`BottleneckAdapters.apply` and
:meth:`BottleneckAdapters.save`, in the cell's worker.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import inspect
import logging
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from harness.api.components import CellContext, CheckContext, Strategy, Task, TaskRun
from harness.api.hookspecs import hookimpl
from harness.api.options import Option
from harness.errors import HarnessError, Problem

#: The name of the adapter inside the model (and in the saved ``adapter_config.json``).
ADAPTER_NAME = "harness"
#: Suite names of the architectures -> adapters' config names (``ADAPTER_CONFIG_MAP``) and config classes.
ARCHITECTURES: Mapping[str, tuple[str, str]] = {
    "houlsby": ("double_seq_bn", "DoubleSeqBnConfig"),
    "pfeiffer": ("seq_bn", "SeqBnConfig"),
    "double_seq_bn": ("double_seq_bn", "DoubleSeqBnConfig"),
    "seq_bn": ("seq_bn", "SeqBnConfig"),
}
#: Activations adapters accepts (transformers' ``ACT2FN`` names, plus adapters' own ``leakyrelu``).
NON_LINEARITIES = ("relu", "swish", "silu", "gelu", "gelu_new", "tanh", "sigmoid", "leakyrelu", "linear")
#: The further ``BnConfig`` fields of adapters 1.3.0 a suite may set through ``extra`` (``reduction_factor`` and
#: ``non_linearity`` have their own options). See https://docs.adapterhub.ml/classes/adapter_config.html.
EXTRA_KEYS = frozenset(
    {
        "mh_adapter",
        "output_adapter",
        "original_ln_before",
        "original_ln_after",
        "ln_before",
        "ln_after",
        "init_weights",
        "init_weights_seed",
        "is_parallel",
        "scaling",
        "use_gating",
        "residual_before_ln",
        "adapter_residual_before_ln",
        "inv_adapter",
        "inv_adapter_reduction_factor",
        "cross_adapter",
        "leave_out",
        "dropout",
        "phm_layer",
        "phm_dim",
        "factorized_phm_W",
        "shared_W_phm",
        "shared_phm_rule",
        "factorized_phm_rule",
        "phm_c_init",
        "phm_init_range",
        "learn_phm",
        "hypercomplex_nonlinearity",
        "phm_rank",
        "phm_bias",
        "stochastic_depth",
    }
)
MISSING = (
    "needs the optional `adapters` package (AdapterHub), which pins transformers 4.57.x: install with "
    "pip install 'tuning-harness[adapters]' in a transformers 4.57 environment (scripts/setup-compat.sh makes one)"
)


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (an imported lazy module may have no spec)."""
    if sys.modules.get(module) is not None:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=1)
def adapters_unavailable() -> str | None:
    """Why ``adapters`` cannot run here (absent, or installed beside a transformers it does not accept), else ``None``.

    Cheap: reads package metadata, imports neither ``adapters`` nor torch."""
    if not _installed("adapters"):
        return MISSING
    try:
        from packaging.requirements import Requirement

        have = importlib.metadata.version("transformers")
        for line in importlib.metadata.requires("adapters") or ():
            requirement = Requirement(line)
            if requirement.name == "transformers" and not requirement.marker:
                if not requirement.specifier.contains(have, prereleases=True):
                    version = importlib.metadata.version("adapters")
                    return (
                        f"`adapters` {version} needs transformers{requirement.specifier} but this environment has "
                        f"transformers {have}: use a transformers 4.57 environment (scripts/setup-compat.sh makes one)"
                    )
    except (importlib.metadata.PackageNotFoundError, ImportError, ValueError):
        pass  # unreadable metadata: let the import in the worker decide
    return None


@contextlib.contextmanager
def _quiet_adapters() -> Iterator[None]:
    """Silence adapters' "adapters available but none activated" warning, which ``train_adapter`` triggers itself
    while it resets the adapter setup (before activating the adapter it trains)."""
    log = logging.getLogger("adapters.model_mixin")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


class BottleneckAdapters(Strategy):
    """Train a bottleneck adapter in every layer (and the task head) of a frozen model.

    Budget defaults: learning rate 1e-4, the default AdapterHub documents for adapter training ("adapter weights are
    usually initialized randomly. That is why we require a higher learning rate ... 1e-4 works well for most
    settings", docs.adapterhub.ml/training.html; Houlsby et al. 2019 searched 3e-5..3e-3 on GLUE). A suite's
    ``[budget]`` or ``[strategies.S.budget]`` overrides it.
    """

    name: ClassVar[str] = "bottleneck"
    description: ClassVar[str] = (
        "bottleneck adapters (Houlsby / Pfeiffer) through AdapterHub's adapters library; needs the `adapters` extra"
    )
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "config",
            "str",
            "houlsby",
            "houlsby (double_seq_bn: after attention and feed-forward) or pfeiffer (seq_bn: after feed-forward)",
            choices=tuple(ARCHITECTURES),
        ),
        Option("reduction_factor", "float", 16.0, "hidden size / bottleneck size", minimum=1),
        Option(
            "non_linearity",
            "str",
            None,
            "bottleneck activation (default: the architecture's, swish for houlsby, relu for pfeiffer)",
            choices=NON_LINEARITIES,
        ),
        Option(
            "extra",
            "table",
            {},
            "further adapters BnConfig keys, e.g. {dropout = 0.1, ln_after = true, leave_out = [0]}",
        ),
    )
    # warm-up and weight decay as full fine-tuning and the peft strategies bring them: only what trains differs
    budget_defaults: ClassVar[Mapping[str, Any]] = {"learning_rate": 1e-4, "warmup_ratio": 0.06, "weight_decay": 0.01}

    def check(self, options: Mapping[str, Any], where: str, ctx: CheckContext) -> list[Problem]:
        problems = []
        for key in options.get("extra") or {}:
            if key in ("reduction_factor", "non_linearity"):
                problems.append(Problem(f"{where}.extra.{key}", f"set it with the option `{key}`, not in `extra`"))
            elif key not in EXTRA_KEYS:
                known = ", ".join(sorted(EXTRA_KEYS))
                problems.append(Problem(f"{where}.extra.{key}", f"not a bottleneck adapter setting; known: {known}"))
        return problems

    def supports(self, task: Task, family: str) -> str | None:
        return super().supports(task, family) or adapters_unavailable()

    def adapter_config(self, options: Mapping[str, Any], where: str) -> Any:
        """The adapters ``BnConfig`` the options describe (imports ``adapters``)."""
        import dataclasses

        import adapters

        _, class_name = ARCHITECTURES[options.get("config", "houlsby")]
        config_class = getattr(adapters, class_name)
        values: dict[str, Any] = {"reduction_factor": float(options.get("reduction_factor", 16.0))}
        if options.get("non_linearity"):
            values["non_linearity"] = options["non_linearity"]
        extra = dict(options.get("extra") or {})
        fields = {f.name for f in dataclasses.fields(config_class)}
        unknown = sorted(set(extra) - fields)
        if unknown:
            raise HarnessError(
                f"{where}.extra: adapters {adapters.__version__} has no bottleneck setting {unknown[0]!r}"
            )
        return config_class(**values, **extra)

    def apply(self, model: Any, run: TaskRun, options: Mapping[str, Any], ctx: CellContext) -> Any:
        reason = adapters_unavailable()
        if reason:
            raise HarnessError(f"strategy {self.name!r} {reason}")
        import adapters

        where = f"strategies.{ctx.cell.strategy}"
        config = self.adapter_config(options, where)
        model_type = getattr(model.config, "model_type", type(model).__name__)
        try:
            adapters.init(model)
        except ValueError as exc:  # "Model X not pre-supported by adapters. ..."
            raise HarnessError(
                f"{where}: adapters {adapters.__version__} cannot adapt {model_type!r} models ({exc})"
            ) from None
        with _quiet_adapters():
            model.add_adapter(ADAPTER_NAME, config=config)
            model.train_adapter(ADAPTER_NAME)  # freezes the backbone, unfreezes the adapter, activates it
        adapter_ids = {id(p) for p in model.base_model.parameters() if p.requires_grad}
        if not adapter_ids:
            raise HarnessError(f"{where}: adapters added no trainable adapter weights to this {model_type!r} model")
        heads = tuple(run.head_prefixes)
        for name, param in model.named_parameters():
            # the adapter and the task head; not the weights train_adapter leaves alone outside the backbone
            # (a decoder's untied lm_head, a seq2seq model's output projection)
            param.requires_grad_(id(param) in adapter_ids or bool(heads) and name.startswith(heads))
        return model

    def save(self, model: Any, directory: Path) -> None:
        """The adapter as adapters saves it (``adapter_config.json``, ``adapter.safetensors``), with the trained task
        head (``head_config.json`` with the labels, ``model_head.safetensors``) when one trained; reload with
        ``adapters.init(model)`` then ``model.load_adapter(directory, use_safetensors=True)``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        backbone = {id(p) for p in model.base_model.parameters()}
        head_trained = any(p.requires_grad and id(p) not in backbone for p in model.parameters())
        kwargs: dict[str, Any] = {"use_safetensors": True}
        if "with_head" in inspect.signature(model.save_adapter).parameters:
            kwargs["with_head"] = head_trained  # never the frozen lm_head of a decoder (vocabulary x hidden)
        model.save_adapter(str(directory), ADAPTER_NAME, **kwargs)


@hookimpl
def harness_register_strategies(register: Any) -> None:
    register(BottleneckAdapters())
