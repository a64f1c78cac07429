"""The ``bias_tuning`` strategy: train only the bias terms of the model (all, or the paper's subset) plus the task head.

It implements BitFit (Ben Zaken, Goldberg and Ravfogel, "BitFit: Simple Parameter-efficient Fine-tuning for
Transformer-based Masked Language-models", ACL 2022, arXiv:2106.10199), which freezes every weight matrix and embedding
of a pretrained model and trains its bias vectors and the new task head: about 0.08 % of BERT-base's parameters (the
head aside).

``biases = "all"`` (the default) trains every parameter named ``bias``: in a BERT layer the query, key and value
biases, the attention output's, the two LayerNorms', the intermediate (first feed-forward) and output (second
feed-forward) biases; plus the embeddings' LayerNorm bias and the pooler's bias. ``biases = "query_intermediate"`` is
the paper's subset (its section 4: the query bias b_q and the intermediate bias b_m2 change the most and carry most of
the gain), with the pooler's bias as the authors' code (github.com/benzakenelad/BitFit) trains it too.

The strategy is named ``bias_tuning``, not ``bitfit``: the harness ships a built-in ``bitfit`` strategy, and a
component name registered by two plugins is refused.

Light at import: the model is only touched through its own methods inside :meth:`BiasTuning.apply` and
:meth:`BiasTuning.save`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from harness.api.components import CellContext, Strategy, TaskRun
from harness.api.options import Option
from harness.errors import HarnessError

#: Name endings of query biases: BERT, RoBERTa, ELECTRA (``attention.self.query``), DeBERTa (``query_proj``),
#: DistilBERT (``q_lin``), BART, OPT and Llama-style decoders (``q_proj``).
QUERY_BIASES = ("attention.self.query.bias", "query_proj.bias", "attention.q_lin.bias", "q_proj.bias")
#: Name endings of the first feed-forward (d -> 4d) biases, the paper's b_m2: BERT family (``intermediate.dense``),
#: DistilBERT (``ffn.lin1``), BART and OPT (``fc1``), GPT-2 (``mlp.c_fc``), GPT-NeoX (``dense_h_to_4h``), Llama-style.
INTERMEDIATE_BIASES = (
    "intermediate.dense.bias",
    "ffn.lin1.bias",
    "fc1.bias",
    "mlp.c_fc.bias",
    "mlp.dense_h_to_4h.bias",
    "mlp.up_proj.bias",
)
#: The pooler's bias, trained with the subset as in the authors' implementation.
POOLER_BIASES = ("pooler.dense.bias",)
SUBSETS = ("all", "query_intermediate")


def is_bias(name: str) -> bool:
    """Whether parameter ``name`` is a bias term (its own name is ``bias``; T5's ``relative_attention_bias.weight``
    is an embedding table, not one)."""
    return name.rsplit(".", 1)[-1] == "bias"


def is_head(name: str, head_prefixes: tuple[str, ...]) -> bool:
    """Whether parameter ``name`` belongs to the task head (``TaskRun.head_prefixes``)."""
    return bool(head_prefixes) and name.startswith(tuple(head_prefixes))


def select_parameters(model: Any, head_prefixes: tuple[str, ...], biases: str = "all") -> dict[str, list[str]]:
    """The parameter names BitFit trains, by group: ``head``, and ``bias`` (``all``) or ``query``, ``intermediate``
    and ``pooler`` (``query_intermediate``). Backbone groups never include head parameters."""
    if biases not in SUBSETS:
        raise ValueError(f"biases must be one of {SUBSETS}, got {biases!r}")
    groups: dict[str, list[str]] = {"head": []}
    if biases == "all":
        groups["bias"] = []
    else:
        groups.update(query=[], intermediate=[], pooler=[])
    for name, _ in model.named_parameters():
        if is_head(name, head_prefixes):
            groups["head"].append(name)
        elif biases == "all":
            if is_bias(name):
                groups["bias"].append(name)
        elif name.endswith(QUERY_BIASES):
            groups["query"].append(name)
        elif name.endswith(INTERMEDIATE_BIASES):
            groups["intermediate"].append(name)
        elif name.endswith(POOLER_BIASES):
            groups["pooler"].append(name)
    return groups


class BiasTuning(Strategy):
    """Bias-terms fine-tuning: every bias (or the query and intermediate biases) and the task head train.

    Budget default: learning rate 1e-3. The paper tuned BitFit's learning rate over {1e-4, 4e-4, 7e-4, 1e-3} for
    each GLUE task (full fine-tuning's rates, 1e-5..5e-5, barely move biases); 1e-3, the top of that grid, is also
    the default of the authors' code (``run_glue.py --learning-rate``). A suite's ``[budget]`` overrides it.

    Every family is declared (BERT-, GPT-2- and BART-style models have biases). Whether a model has biases is only
    known once it is built, so a model without any (T5) fails its cell in :meth:`apply` with a clear message rather
    than being skipped at planning time.
    """

    name: ClassVar[str] = "bias_tuning"
    description: ClassVar[str] = (
        "bias tuning (BitFit): only the bias terms (all, or query + intermediate) and the task head train"
    )
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "biases",
            "str",
            "all",
            "which biases train: all, or query_intermediate (the paper's subset b_q and b_m2, plus the pooler's bias)",
            choices=SUBSETS,
        ),
    )
    budget_defaults: ClassVar[Mapping[str, Any]] = {"learning_rate": 1e-3}

    def apply(self, model: Any, run: TaskRun, options: Mapping[str, Any], ctx: CellContext) -> Any:
        """Freeze everything, then let the selected biases and the task head train; raise :class:`HarnessError` when
        the model has none of the selected biases."""
        biases = options.get("biases", "all")
        groups = select_parameters(model, tuple(run.head_prefixes), biases)
        model_name = type(model).__name__
        where = f"strategies.{ctx.cell.strategy}"
        if biases == "all" and not groups["bias"]:
            raise HarnessError(
                f"{where}: BitFit trains bias terms, and {model_name} has none outside its task head "
                "(T5 and other models built without biases cannot use it)"
            )
        for group, what in (("query", "query"), ("intermediate", "intermediate (first feed-forward)")):
            if biases == "query_intermediate" and not groups[group]:
                raise HarnessError(
                    f'{where}.biases: "query_intermediate" needs separate {what} biases, and {model_name} has none '
                    f"named like {', '.join(QUERY_BIASES if group == 'query' else INTERMEDIATE_BIASES)} "
                    '(GPT-2 fuses query, key and value in one c_attn bias; T5 has no biases): use biases = "all"'
                )
        trained = {name for names in groups.values() for name in names}
        for name, param in model.named_parameters():
            param.requires_grad_(name in trained)
        return model

    def save(self, model: Any, directory: Path) -> None:
        """Save only what BitFit changed: the trainable tensors (biases and head), by parameter name, to
        ``directory/bias_tuning.safetensors``; load them into the pretrained model with
        ``load_state_dict(strict=False)``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(tensors, str(directory / "bias_tuning.safetensors"), metadata={"strategy": self.name})
