r"""Prompt templates of text-to-text tasks (light: no torch), and the generation options those tasks share.

Decoder (causal LM) and encoder-decoder models run a task as text-to-text: each example is rendered into a prompt
with a ``str.format`` template, and the model generates the answer. Every task documents a default template per
model family (below); a suite replaces it with the task's ``prompt`` option, which applies to every family and is
checked before anything runs: a field the task does not define, a positional ``{}`` or an unbalanced brace is a
problem, and the field holding the example's text (``input_field``) must occur. Literal braces are written ``{{``
and ``}}``.

Built-in defaults (``source_lang`` / ``target_lang`` are language *names*, e.g. ``English``; ``\n`` a newline):

* translation, decoder: ``Translate {source_lang} to {target_lang}:\n{source}\n{target_lang}:``
* translation, encoder-decoder (T5 style): ``translate {source_lang} to {target_lang}: {source}``
* summarization, decoder: ``Summarize the following text.\n{document}\nSummary:``
* summarization, encoder-decoder (T5 style): ``summarize: {document}``
* classification, decoder: ``Text: {text}\nChoose one of: {labels}.\nAnswer:``; with sentence pairs
  ``Text 1: {text}\nText 2: {text_pair}\nChoose one of: {labels}.\nAnswer:`` (``{labels}``: the verbalised labels
  joined with ``", "``)
* classification, encoder-decoder (T5 style): ``classify: {text} options: {labels}``; with sentence pairs
  ``classify: {text} pair: {text_pair} options: {labels}``

How prompts meet the budget (see :mod:`harness.tasklib.text2text`): when a prompt is longer than it may be, only the example's
text (the ``input_field``) is cut, at a token boundary, so the instruction and the answer cue (``German:``) survive.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass

from harness.api.options import Option, did_you_mean
from harness.errors import Problem


def template_fields(text: str) -> tuple[str, ...]:
    """The field names a ``str.format`` template uses, in order (duplicates kept); raises ``ValueError`` when it is
    malformed (an unbalanced brace)."""
    return tuple(name for _, name, _, _ in string.Formatter().parse(text) if name is not None)


@dataclass(frozen=True)
class TaskPrompts:
    """A task's default templates per model family, the fields they may use and the field carrying the input.

    :param decoder: default template for decoder (causal LM) models; the answer follows the prompt.
    :param encoder_decoder: default template for encoder-decoder models; the answer is the decoder's output.
    :param fields: every field a template of this task may use.
    :param input_field: the field holding the example's text; it must occur, and it is what truncation cuts.
    """

    decoder: str
    encoder_decoder: str
    fields: tuple[str, ...]
    input_field: str

    def __post_init__(self) -> None:
        for template in (self.decoder, self.encoder_decoder):
            if self.problems(template, "default"):
                raise ValueError(f"invalid default template {template!r}")

    def default(self, family: str) -> str:
        """The default template for a model ``family`` (``decoder`` or ``encoder-decoder``)."""
        if family == "decoder":
            return self.decoder
        if family == "encoder-decoder":
            return self.encoder_decoder
        raise ValueError(f"text-to-text prompts need a decoder or encoder-decoder model, not {family!r}")

    def choose(self, family: str, override: str | None) -> str:
        """The template a cell uses: the suite's ``prompt`` option when set, else the family's default."""
        return override if override is not None else self.default(family)

    def problems(self, template: str, where: str) -> list[Problem]:
        """What is wrong with ``template`` for this task (empty when it is usable)."""
        try:
            used = template_fields(template)
        except ValueError as exc:
            return [Problem(where, f"malformed template ({exc}); write literal braces as {{{{ and }}}}")]
        problems = []
        known = ", ".join(f"{{{f}}}" for f in self.fields)
        for name in dict.fromkeys(used):
            if name == "" or name.isdigit():
                problems.append(Problem(where, f"positional field {{{name}}}; use named fields ({known})"))
            elif name not in self.fields:
                hint = did_you_mean(name, list(self.fields))
                problems.append(Problem(where, f"unknown field {{{name}}}{hint}; known fields: {known}"))
        if self.input_field not in used:
            problems.append(Problem(where, f"the template must contain {{{self.input_field}}} (the example's text)"))
        return problems


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill ``template``'s fields from ``values``."""
    return template.format_map(values)


TRANSLATION = TaskPrompts(
    decoder="Translate {source_lang} to {target_lang}:\n{source}\n{target_lang}:",
    encoder_decoder="translate {source_lang} to {target_lang}: {source}",
    fields=("source", "source_lang", "target_lang"),
    input_field="source",
)

SUMMARIZATION = TaskPrompts(
    decoder="Summarize the following text.\n{document}\nSummary:",
    encoder_decoder="summarize: {document}",
    fields=("document",),
    input_field="document",
)

CLASSIFICATION = TaskPrompts(
    decoder="Text: {text}\nChoose one of: {labels}.\nAnswer:",
    encoder_decoder="classify: {text} options: {labels}",
    fields=("text", "text_pair", "labels"),
    input_field="text",
)

#: Classification defaults for sentence pairs (``text_pair_column`` set); same fields as :data:`CLASSIFICATION`.
CLASSIFICATION_PAIRS = TaskPrompts(
    decoder="Text 1: {text}\nText 2: {text_pair}\nChoose one of: {labels}.\nAnswer:",
    encoder_decoder="classify: {text} pair: {text_pair} options: {labels}",
    fields=("text", "text_pair", "labels"),
    input_field="text",
)


def text2text_options(
    prompts: TaskPrompts, *, max_target_length: int, max_new_tokens: int, stop: list[str]
) -> tuple[Option, ...]:
    """The prompt and generation options every text-to-text task declares (defaults per task)."""
    fields = ", ".join(f"{{{f}}}" for f in prompts.fields)
    return (
        Option(
            "prompt",
            "str",
            None,
            f"prompt template (str.format fields {fields}); default: the task's template for the model family",
        ),
        Option(
            "max_target_length",
            "int",
            max_target_length,
            "training targets keep at most this many tokens (end-of-sequence token included)",
            minimum=1,
        ),
        Option("max_new_tokens", "int", max_new_tokens, "tokens generated at most per example", minimum=1),
        Option("num_beams", "int", 1, "beam search width (1: greedy decoding); never sampled", minimum=1),
        Option(
            "generation_batch_size",
            "int",
            None,
            "prompts per generation batch (default: budget.eval_batch_size)",
            minimum=1,
        ),
        Option(
            "stop",
            "list[str]",
            stop,
            "strings that end an answer: generation stops at the first and the prediction is cut before it",
        ),
    )


#: NER (:mod:`harness_plugins.ner.entities`): ``{text}`` is the sentence's words joined by spaces, ``{types}`` the
#: entity types joined by ``", "``, ``{empty_answer}`` the answer meaning "no entities" (option, default ``none``).
NER = TaskPrompts(
    decoder=(
        'Find the named entities ({types}) in the text. Answer as "type: entity; type: entity" in order of '
        'appearance, or "{empty_answer}".\nText: {text}\nEntities:'
    ),
    encoder_decoder="ner: {text}",
    fields=("text", "types", "empty_answer"),
    input_field="text",
)


@dataclass(frozen=True)
class Prompt:
    """A prompt as the model is given it: its text (after truncation), its token ids, whether it was cut."""

    text: str
    ids: tuple[int, ...]
    truncated: bool
    #: Ids of the in-context demonstrations it starts with (see :mod:`harness.tasklib.incontext`).
    demonstrations: tuple[str, ...] = ()
