"""In-context learning without training: ``zero_shot`` and ``few_shot``.

Both evaluate a decoder or encoder-decoder model as it is, through the task's text-to-text prompt templates
(:mod:`harness.tasklib.prompts`): label scoring (or generation, per the task's ``decision``) for classification, generation
for NER, translation and summarization. ``few_shot`` puts ``k`` demonstrations drawn from train by the cell's seed
before each prompt (:mod:`harness.tasklib.incontext`: drawn per evaluated example, never the example itself); ``k`` may be a
list, giving one cell per value — a k-shot learning curve — named ``few_shot@k=N``. Nothing trains, so their whole
cost is inference: records carry the prompt tokens (``evaluation.tokens``, ``tokens_per_sample``), the demonstrations
used per prompt (``evaluation.shots``; fewer than ``k`` only where the prompt would exceed ``budget.max_length``),
evaluation time and throughput. Trainable parameters and stored bytes are 0.

Encoder models have no prompt (a task head would be untrained), so their cells are skipped with that reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from harness.api.components import CellContext, CheckContext, Strategy, Task, TaskRun
from harness.api.hookspecs import hookimpl
from harness.api.options import Option
from harness.errors import Problem

GENERATIVE = frozenset({"decoder", "encoder-decoder"})


class InContext(Strategy):
    """Shared by zero- and few-shot: nothing trains, every weight stays frozen, demonstrations set on the run."""

    trains: ClassVar[bool] = False
    families: ClassVar[frozenset[str]] = GENERATIVE

    def supports(self, task: Task, family: str) -> str | None:
        if family not in self.families:
            return (
                f"strategy {self.name!r} needs a decoder or encoder-decoder model: an encoder has no prompt, "
                "and its task head would be untrained"
            )
        return None

    def shots(self, options: Mapping[str, Any]) -> int:
        return 0

    def apply(self, model: Any, run: TaskRun, options: Mapping[str, Any], ctx: CellContext) -> Any:
        for param in model.parameters():
            param.requires_grad_(False)
        run.use_demonstrations(self.shots(options), ctx.seed)
        return model

    def stored_bytes(self, model: Any) -> int:
        return 0


class ZeroShot(InContext):
    """The task's prompt alone, no demonstrations."""

    name = "zero_shot"
    description = "in-context learning, zero-shot: the task's prompt template alone; nothing trains"


class FewShot(InContext):
    """``k`` demonstrations from train before each prompt."""

    name = "few_shot"
    description = "in-context learning: k demonstrations drawn from train by the seed; k may be a list (a curve)"
    options = (
        Option(
            "k",
            "int|list[int]",
            5,
            "demonstrations per prompt; a list gives one cell per value (few_shot@k=N), a k-shot learning curve",
            minimum=0,
        ),
    )

    def check(self, options: Mapping[str, Any], where: str, ctx: CheckContext) -> list[Problem]:
        if options.get("k") == []:
            return [Problem(f"{where}.k", "expected at least one number of demonstrations, got an empty list")]
        return []

    def variants(self, options: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        k = options.get("k", 5)
        if isinstance(k, list):
            return [(f"k={n}", {**options, "k": n}) for n in dict.fromkeys(k)]
        return [("", dict(options))]

    def shots(self, options: Mapping[str, Any]) -> int:
        return int(options.get("k", 5))


@hookimpl
def harness_register_strategies(register):
    register(ZeroShot())
    register(FewShot())
