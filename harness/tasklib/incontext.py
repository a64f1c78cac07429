"""In-context demonstrations: which training examples precede an evaluated example's prompt (light: no torch).

Zero- and few-shot strategies evaluate without training; a few-shot prompt is *k* demonstrations — training examples
rendered with the task's template and followed by their answer — then the evaluated example's prompt. The rules:

* **Drawn per evaluated example**, from the train split, by a generator seeded with the cell's seed and the example's
  id (``random.Random(f"{seed}:{id}")``): the same seed gives the same demonstrations for an example whatever the
  order, batch size or split size of the evaluation; another seed gives another draw.
* **Never the evaluated example**: a training example with the same id or the same input text is never drawn.
* **Order**: demonstrations keep the order they were drawn in (a random order); the evaluated example comes last.
* **Rendering**: ``template(demonstration)`` + answer, the answer after one space (none when the rendered prompt ends
  with whitespace), demonstrations and the prompt joined by ``separator`` (a blank line by default).
* **Budget**: when the prompt with *k* demonstrations is longer than ``budget.max_length``, demonstrations are
  dropped, the one farthest from the evaluated example first, until it fits; only with none left is the example's own
  text cut. Each prediction records how many were used (``shots``) and their ids (``demonstrations``), so every
  prompt can be rebuilt.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError

if TYPE_CHECKING:  # pragma: no cover
    from harness.tasklib.prompts import Prompt

#: What joins demonstrations and the prompt.
SEPARATOR = "\n\n"
#: Extra candidates drawn beyond ``k`` so that skipping the evaluated example rarely needs a second pass.
SPARE = 8


def join_answer(prompt: str, answer: str) -> str:
    """``prompt`` followed by ``answer``: after one space, or directly when the prompt ends with whitespace."""
    return prompt + answer if not prompt or prompt[-1].isspace() else f"{prompt} {answer}"


class Demonstrations:
    """Draws ``k`` demonstrations from ``pool`` for each evaluated example (see the module rules).

    :param pool: the training examples (each with an ``id``).
    :param key: the text that identifies an example's input (two examples with the same text are the same example).
    """

    def __init__(self, pool: Sequence[Any], k: int, seed: int, key: Callable[[Any], str]) -> None:
        if k < 0:
            raise ValueError("k must be at least 0")
        if k and len(pool) < k + 1:
            raise HarnessError(
                f"{k} demonstrations need at least {k + 1} training examples (one is never drawn for itself); "
                f"the train split has {len(pool)}"
            )
        self.pool = pool
        self.k = k
        self.seed = seed
        self.key = key

    def draw(self, example: Any) -> tuple[Any, ...]:
        """The ``k`` demonstrations of ``example``, in prompt order (never ``example`` itself or a copy of it)."""
        if not self.k:
            return ()
        rng = random.Random(f"{self.seed}:{example.id}")
        text = self.key(example)
        n = len(self.pool)
        chosen: list[Any] = []
        for index in rng.sample(range(n), min(n, self.k + SPARE)):
            candidate = self.pool[index]
            if candidate.id != example.id and self.key(candidate) != text:
                chosen.append(candidate)
                if len(chosen) == self.k:
                    return tuple(chosen)
        rest = [e for e in self.pool if e.id != example.id and self.key(e) != text and e not in chosen]
        if len(rest) < self.k - len(chosen):
            raise HarnessError(
                f"example {example.id!r}: only {len(rest) + len(chosen)} training examples differ from it; "
                f"{self.k} demonstrations were asked for"
            )
        return tuple(chosen + rng.sample(rest, self.k - len(chosen)))

    def describe(self) -> str:
        return (
            f"k={self.k} per example, drawn from train by random.Random(f'{{seed}}:{{id}}') with seed {self.seed}, "
            f"never the evaluated example; joined by {SEPARATOR!r}; dropped farthest-first when over max_length"
        )


class Demonstrated:
    """In-context demonstrations for a text-to-text run (mixed into :class:`harness.tasklib.text2text.TextToTextRun`, whose
    ``splits``, ``render``, ``target_text``, ``input_text``, ``metadata`` and prompt caches it uses)."""

    _demos: Demonstrations | None = None
    splits: Any
    metadata: Any
    _prompts: dict[str, Any]
    _encoded: dict[str, Any]

    def use_demonstrations(self, k: int, seed: int) -> None:
        """Start every prompt with ``k`` demonstrations from train (:mod:`harness.tasklib.incontext`); 0 for zero-shot."""
        self._demos = Demonstrations(self.splits["train"], k, seed, self.identity) if k else None
        self._prompts, self._encoded = {}, {}
        if self._demos is not None:
            self.metadata["demonstrations"] = self._demos.describe()
        else:
            self.metadata.pop("demonstrations", None)

    def identity(self, example: Any) -> str:
        """The text that makes two examples the same example (a demonstration never has the evaluated one's)."""
        return self.input_text(example)

    def demonstrations(self, example: Any) -> tuple[Any, ...]:
        """The demonstrations drawn for ``example`` (none without :meth:`use_demonstrations`)."""
        return self._demos.draw(example) if self._demos is not None else ()

    def compose(self, example: Any, text: str | None = None, shots: int | None = None) -> str:
        """The whole prompt of ``example``: its last ``shots`` demonstrations (all by default), each rendered and
        followed by its answer, then the example rendered (with ``text`` as its input text when given)."""
        demos = self.demonstrations(example)
        demos = demos[len(demos) - shots :] if shots is not None and shots < len(demos) else demos
        parts = [join_answer(self.render(d), self.target_text(d)) for d in demos if shots != 0]
        return SEPARATOR.join([*parts, self.render(example, text)])

    def prompt_fields(self, prompt: Prompt) -> dict[str, Any]:
        """What a prediction row says about its prompt: the text as given, whether it was cut and, with
        demonstrations, how many were used (``shots``) and their ids."""
        fields: dict[str, Any] = {"prompt": prompt.text, "prompt_truncated": prompt.truncated}
        if self._demos is not None:
            fields.update(shots=len(prompt.demonstrations), demonstrations=list(prompt.demonstrations))
        return fields

    def mean_shots(self, prompts: Sequence[Prompt]) -> float | None:
        """The mean number of demonstrations per prompt (``None`` without demonstrations)."""
        if self._demos is None or not prompts:
            return None
        return sum(len(p.demonstrations) for p in prompts) / len(prompts)
