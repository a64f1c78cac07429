"""The ``bitfit`` strategy: only the bias terms of the model (all, or the paper's subset) and the task head train.

BitFit (Ben Zaken, Goldberg and Ravfogel, "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked
Language-models", ACL 2022, arXiv:2106.10199) freezes every weight matrix and embedding of a pretrained model and
trains its bias vectors and the new task head (counted apart, in ``params.head``): about 0.08 % of BERT-base.

``biases = "all"`` (the default) trains every parameter named ``bias``: in a BERT layer the query, key and value
biases, the attention output's, the two LayerNorms', the intermediate and output feed-forward biases; plus the
embeddings' LayerNorm bias and the pooler's, 2H + L(7H + I) in all. ``biases = "query_intermediate"`` is the paper's
subset (its section 4: the query bias and the first feed-forward bias b_m2 change most and carry most of the gain),
with the pooler's bias as the authors' code (github.com/benzakenelad/BitFit) trains it. What is stored
(``params.stored_bytes``, and ``--save-artifacts``' ``bitfit.safetensors``) is those biases and the head.

The same strategy as the example third-party plugin (``examples/plugin-package``), built in. Light at import: the model
is only touched through its own methods inside :meth:`BitFit.apply` and :meth:`BitFit.save`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.api.components import CellContext, Strategy, TaskRun
from harness.api.hookspecs import hookimpl
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


def select_parameters(model: Any, head_prefixes: tuple[str, ...], biases: str = "all") -> dict[str, list[str]]:
    """The parameter names BitFit trains, by group: ``head``, and ``bias`` (``all``) or ``query``, ``intermediate``
    and ``pooler`` (``query_intermediate``). Backbone groups never include head parameters."""
    if biases not in SUBSETS:
        raise ValueError(f"biases must be one of {SUBSETS}, got {biases!r}")
    groups: dict[str, list[str]] = {"head": []}
    subsets = {"bias": is_bias} if biases == "all" else {
        "query": lambda n: n.endswith(QUERY_BIASES),
        "intermediate": lambda n: n.endswith(INTERMEDIATE_BIASES),
        "pooler": lambda n: n.endswith(POOLER_BIASES),
    }  # fmt: skip
    groups.update({group: [] for group in subsets})
    for name, _ in model.named_parameters():
        if head_prefixes and name.startswith(tuple(head_prefixes)):
            groups["head"].append(name)
            continue
        group = next((g for g, selects in subsets.items() if selects(name)), None)
        if group is not None:
            groups[group].append(name)
    return groups


class BitFit(Strategy):
    """Bias-terms fine-tuning: every bias (or the query and intermediate biases) and the task head train.

    Budget defaults: learning rate 1e-3 — the paper tuned BitFit's rate over {1e-4, 4e-4, 7e-4, 1e-3} per GLUE task
    (full fine-tuning's 1e-5..5e-5 barely move biases), and 1e-3, the top of that grid, is the default of the authors'
    code (``run_glue.py --learning-rate``); the 6 % warm-up and weight decay 0.01 (on the head's weight only: biases
    never decay) of every trained strategy. Every family is declared; a model without biases (T5) fails its cell in
    :meth:`apply` with the reason, since that is only known once it is built.
    """

    name = "bitfit"
    description = "BitFit: only the bias terms (all, or query + intermediate) and the task head train"
    options = (
        Option(
            "biases",
            "str",
            "all",
            "which biases train: all, or query_intermediate (the paper's subset b_q and b_m2, plus the pooler's bias)",
            choices=SUBSETS,
        ),
    )
    budget_defaults = {"learning_rate": 1e-3, "warmup_ratio": 0.06, "weight_decay": 0.01}

    def apply(self, model: Any, run: TaskRun, options: Mapping[str, Any], ctx: CellContext) -> Any:
        """Freeze everything, then let the selected biases and the task head train; a :class:`HarnessError` when the
        model has none of the selected biases."""
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
                names = QUERY_BIASES if group == "query" else INTERMEDIATE_BIASES
                raise HarnessError(
                    f'{where}.biases: "query_intermediate" needs separate {what} biases, and {model_name} has none '
                    f"named like {', '.join(names)} (GPT-2 fuses query, key and value in one c_attn bias; T5 has no "
                    'biases): use biases = "all"'
                )
        trained = {name for names in groups.values() for name in names}
        for name, param in model.named_parameters():
            param.requires_grad_(name in trained)
        return model

    def save(self, model: Any, directory: Path) -> None:
        """Save only what BitFit changed: the trainable tensors (biases and head), by parameter name, to
        ``directory/bitfit.safetensors``; load them into the pretrained model with ``load_state_dict(strict=False)``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(tensors, str(directory / "bitfit.safetensors"), metadata={"strategy": self.name})


@hookimpl
def harness_register_strategies(register: Any) -> None:
    register(BitFit())
