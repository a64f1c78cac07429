"""The NER task on decoder and encoder-decoder models: generate the entities as text, parse them, score with seqeval.

Prompts (:data:`harness.tasklib.prompts.NER`, replaced by the ``prompt`` option) get ``{text}`` (the sentence's words joined
by spaces), ``{types}`` (the entity types joined by ``", "``) and ``{empty_answer}``. The model learns to answer with
the rendering of the gold entities and its answers are parsed back to spans (:mod:`harness_plugins.ner.entities`),
turned into IOB2 tags over the words and scored by :func:`harness_plugins.ner.run.score` — the encoder path's
function, so the metrics compare directly (primary ``f1``). Parts of answers that could not be used are counted in
``unparsed_parts``. Each prediction row has ``tokens``, the IOB2 tag lists ``prediction`` and ``reference`` (so
``seqeval.metrics.f1_score(references, predictions)`` on the file reproduces ``f1``), the raw ``generation``, its
``unparsed_parts`` and the ``prompt``. Truncation and generation follow :mod:`harness.tasklib.text2text`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import version
from typing import Any

from harness.api.components import EvalResult
from harness.errors import HarnessError
from harness.tasklib.batching import inference
from harness.tasklib.prompts import NER
from harness.tasklib.text2text import GenerationSettings, TextToTextRun

from .data import Sentence, Splits
from .entities import parse_entities, render_entities, spans_to_tags
from .run import _scheme_note, score
from .tags import entity_type


def entity_types(splits: Splits) -> tuple[str, ...]:
    """The entity types of the label set, sorted (``O`` left out)."""
    return tuple(dict.fromkeys(entity_type(label) for label in splits.labels if label != "O"))


class NerTextRun(TextToTextRun):
    """NER for one cell as text-to-text: entity answers in, IOB2 tags and seqeval scores out.

    :meth:`score` takes IOB2 tag sequences (predicted and gold), not texts: answers become tags in :meth:`evaluate`,
    which needs each sentence's words to parse them.
    """

    def __init__(
        self,
        splits: Splits,
        options: Mapping[str, Any],
        *,
        family: str,
        max_length: int,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.types = entity_types(splits)
        clashing = [t for t in self.types if ":" in t or ";" in t]
        if clashing:
            raise HarnessError(
                f"entity types {clashing!r} contain ':' or ';', which the text-to-text answer format uses; "
                "rename them or use an encoder model"
            )
        self.empty_answer = options["empty_answer"].strip()
        super().__init__(
            splits,  # type: ignore[arg-type]  # Sentence examples; input_text / target_text / references adapt them
            family=family,
            template=NER.choose(family, options.get("prompt")),
            input_field=NER.input_field,
            values={"types": ", ".join(self.types), "empty_answer": self.empty_answer},
            max_length=max_length,
            max_target_length=options["max_target_length"],
            generation=GenerationSettings.from_options(options),
            primary_metric="f1",
            metadata={
                "metric_library": f"seqeval {version('seqeval')}",
                "scheme": _scheme_note(splits),
                "mode": "default (non-strict)",
                "average": "micro",
                "answer_format": f"type: surface; type: surface (or {self.empty_answer!r})",
            },
            progress=progress,
        )

    def input_text(self, example: Sentence) -> str:  # type: ignore[override]
        return " ".join(example.tokens)

    def target_text(self, example: Sentence) -> str:  # type: ignore[override]
        return render_entities(example.tokens, example.tags, self.empty_answer)

    def references(self, example: Sentence) -> tuple[str, ...]:  # type: ignore[override]
        return (self.target_text(example),)

    def score(  # type: ignore[override]
        self, predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]
    ) -> dict[str, float]:
        """seqeval metrics of predicted IOB2 tag sequences against the gold ones (the encoder path's scoring)."""
        return score(references, predictions)

    def evaluate(self, model: Any, split: str, batch_size: int, device: str) -> EvalResult:
        """Generate answers for ``split`` (eval mode, no gradients), parse them to tags and score them."""
        sentences, prompts = self.splits[split], self.prompts(split)
        with inference(model):
            answers = self.generate(model, prompts, self.generation.batch_size or batch_size, device)
        rows, predicted, unparsed = [], [], 0
        for sentence, prompt, answer in zip(sentences, prompts, answers, strict=True):
            parsed = parse_entities(answer, sentence.tokens, self.types, self.empty_answer)
            tags = spans_to_tags(len(sentence.tokens), parsed.spans)
            predicted.append(tags)
            unparsed += parsed.unparsed
            rows.append(
                {
                    "id": sentence.id,
                    "input": self.input_text(sentence),
                    "prediction": tags,
                    "reference": list(sentence.tags),
                    "tokens": list(sentence.tokens),
                    "generation": answer,
                    "unparsed_parts": parsed.unparsed,
                    **self.prompt_fields(prompt),
                }
            )
        metrics = {
            **self.score(predicted, [list(s.tags) for s in sentences]),
            "unparsed_parts": float(unparsed),
            "n": float(len(sentences)),
        }
        return EvalResult(
            metrics=metrics,
            predictions=rows,
            samples=len(sentences),
            tokens=sum(len(p.ids) for p in prompts),
            shots=self.mean_shots(prompts),
        )
