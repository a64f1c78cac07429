"""The classification task on decoder and encoder-decoder models: verbalised labels, log-likelihood or generation.

Every label is rendered as a string by the verbaliser (:func:`harness_plugins.classification.verbalizer.verbalise`); training
targets are the verbalised labels. The answer of a cell's model is read by the ``decision`` option:

* ``loglik`` (default; multiple choice as lm-eval scores it): every verbalised label is scored as a continuation of
  the prompt, by the sum of its tokens' log-probabilities under the model, and the highest score wins (ties: the
  first label in label order). Decoders score prompt + label in one forward pass per candidate, the label tokenized
  in context after the prompt, without an end token (as lm-eval); the prompt is cut (in its text only) so prompt +
  longest label fits ``max_length``. Encoder-decoders take the prompt as encoder input and the label, encoded as
  a target (end token included, as lm-eval does for seq2seq models), as decoder labels. With
  ``length_normalise`` each sum is divided by the number of scored tokens.
* ``generate``: greedy generation (``max_new_tokens``, default the longest verbalised label in tokens + 2; stops at
  ``stop``), parsed by :func:`parse_answer`; an answer that names no label is *unparsed*: its prediction is ``null``,
  it counts as wrong, and the metric ``unparsed`` counts them.

Metrics (:func:`~harness_plugins.classification.scores.classification_metrics`, re-exported here): accuracy and
macro-F1 (scikit-learn, ``zero_division=0``), macro-F1 over the labels occurring in the references or the parsed
predictions (as the encoder path), so both recompute from the saved predictions.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sklearn
import torch

from harness.api.components import EvalResult
from harness.tasklib.batching import inference, pad_batch
from harness.tasklib.prompts import Prompt
from harness.tasklib.text2text import IGNORE_INDEX, GenerationSettings, TextToTextRun

from .data import Example, Splits
from .scores import classification_metrics
from .verbalizer import task_prompts, verbalise


def parse_answer(generation: str, verbalised: Mapping[str, str]) -> str | None:
    """The label a generated answer names, comparing stripped, casefolded texts: the label whose text the answer
    starts with (the longest such text, so ``positive`` is not read as ``pos``), else the label whose text occurs
    first in the answer (ties: the longest text), else ``None`` (unparsed). Ties left go to label order."""
    answer = generation.strip().casefold()
    texts = {label: text.strip().casefold() for label, text in verbalised.items()}
    prefixed = [label for label, text in texts.items() if answer.startswith(text)]
    if prefixed:
        return max(prefixed, key=lambda label: len(texts[label]))
    found = [(answer.find(text), -len(text), label) for label, text in texts.items() if text in answer]
    return min(found, key=lambda hit: hit[:2])[2] if found else None


class TextClassificationRun(TextToTextRun):
    """Classification for one cell on a decoder or encoder-decoder model (see the module rules).

    Throughput counts the examples and their prompts' tokens once per example; with ``loglik`` each prompt is run
    once per label, so the compute grows with the number of labels."""

    def __init__(
        self,
        splits: Splits,
        options: Mapping[str, Any],
        *,
        family: str,
        max_length: int,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.labels = tuple(splits.labels)
        self.verbalised = verbalise(self.labels, options.get("verbalizer"))
        self.decision = options["decision"]
        self.length_normalise = bool(options["length_normalise"])
        self._fixed_max_new_tokens = options.get("max_new_tokens")
        prompts = task_prompts(options)
        settings = dict(options, max_new_tokens=self._fixed_max_new_tokens or 1)
        super().__init__(
            splits,  # type: ignore[arg-type]  # Example stands in for TextPair through the overridden accessors
            family=family,
            template=prompts.choose(family, options.get("prompt")),
            input_field=prompts.input_field,
            values={"labels": ", ".join(self.verbalised.values())},
            max_length=max_length,
            max_target_length=options["max_target_length"],
            generation=GenerationSettings.from_options(settings),
            primary_metric=options["primary_metric"],
            metadata={
                "metric_library": f"scikit-learn {sklearn.__version__}",
                "decision": self.decision,
                "length_normalise": str(self.length_normalise).lower(),
                "verbalizer": json.dumps(self.verbalised, ensure_ascii=False),
            },
            progress=progress,
        )
        if self.decision == "loglik":
            self.metadata.pop("generation")
        self._scoring: dict[str, tuple[list[Prompt], list[list[list[int]]]]] = {}

    # -- the example's parts ----------------------------------------------------------------------------------------
    def input_text(self, example: Example) -> str:  # type: ignore[override]
        return example.text

    def identity(self, example: Example) -> str:  # type: ignore[override]
        return example.text if example.text_pair is None else f"{example.text}\n{example.text_pair}"

    def target_text(self, example: Example) -> str:  # type: ignore[override]
        return self.verbalised[example.label]

    def references(self, example: Example) -> tuple[str, ...]:  # type: ignore[override]
        return (example.label,)

    def render(self, example: Example, text: str | None = None) -> str:  # type: ignore[override]
        values = {**self.values, "text": example.text if text is None else text, "text_pair": example.text_pair or ""}
        return self.template.format_map(values)

    def use_demonstrations(self, k: int, seed: int) -> None:
        super().use_demonstrations(k, seed)
        self._scoring = {}

    def bind_tokenizer(self, tokenizer: Any) -> None:
        """As :meth:`TextToTextRun.bind_tokenizer`; also sets the default ``max_new_tokens`` from the labels."""
        if tokenizer is self._tokenizer:
            return
        super().bind_tokenizer(tokenizer)
        self._scoring = {}
        if self._fixed_max_new_tokens is None:
            lead = " " if self.family == "decoder" else ""
            ids = tokenizer([lead + t for t in self.verbalised.values()], add_special_tokens=False).input_ids
            self.generation = dataclasses.replace(self.generation, max_new_tokens=max(len(i) for i in ids) + 2)
            if self.decision == "generate":
                self.metadata["generation"] = self.generation.describe()

    # -- scoring --------------------------------------------------------------------------------------------------
    def score(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
        """Metrics of generated answers (parsed with :func:`parse_answer`) against each example's label."""
        parsed = [parse_answer(p, self.verbalised) for p in predictions]
        return classification_metrics(parsed, [r[0] for r in references], self.labels)

    def scoring_inputs(self, split: str) -> tuple[list[Prompt], list[list[list[int]]]]:
        """Per example of ``split``: the prompt as scored and each label's token ids (in label order)."""
        if split in self._scoring:
            return self._scoring[split]
        tokenizer = self._require_tokenizer()
        texts = list(self.verbalised.values())
        if self.family == "encoder-decoder":
            candidates = [list(ids) for ids in tokenizer(text_target=texts).input_ids]
            prompts = self.prompts(split)
            result = (prompts, [candidates] * len(prompts))
        else:
            examples = self.splits[split]
            rendered = [self.compose(e) for e in examples]
            ids = self._encode(rendered)
            per_label = [self._decoder_targets(rendered, ids, [t] * len(examples)) for t in texts]
            longest = max(len(c) for label in per_label for c in label)
            prompts, candidates = [], []
            for k, (example, text, prompt_ids) in enumerate(zip(examples, rendered, ids, strict=True)):
                prompt = self._fit(example, text, prompt_ids, self.max_length - longest)
                if len(prompt.ids) > self.max_length - longest:
                    raise self._template_too_long(prompt, "the labels")
                if prompt.text != text:  # demonstrations dropped or the text cut: the labels follow another text
                    cut = self._decoder_targets([prompt.text] * len(texts), [prompt.ids] * len(texts), texts)
                else:
                    cut = [label[k] for label in per_label]
                prompts.append(prompt)
                candidates.append(cut)
            result = (prompts, candidates)
        self._scoring[split] = result
        return result

    def input_tokens(self, split: str) -> int:
        """Tokens the model is given to score ``split`` by log-likelihood: every (prompt, label) sequence, so the
        prompt (with its demonstrations) counts once per label."""
        prompts, candidates = self.scoring_inputs(split)
        return sum(len(p.ids) * len(labels) + sum(map(len, labels)) for p, labels in zip(prompts, candidates, strict=True))

    def loglik(self, model: Any, split: str, batch_size: int, device: str) -> list[list[tuple[float, int]]]:
        """Per example of ``split`` and per label: (summed log-probability of the label's tokens, their count).

        ``batch_size`` counts (example, label) sequences; call it in eval mode under ``torch.no_grad()``."""
        prompts, candidates = self.scoring_inputs(split)
        rows = []
        for i, (prompt, labels) in enumerate(zip(prompts, candidates, strict=True)):
            for j, cand in enumerate(labels):
                if self.family == "decoder":
                    rows.append((i, j, list(prompt.ids) + cand, [IGNORE_INDEX] * len(prompt.ids) + cand))
                else:
                    rows.append((i, j, list(prompt.ids), cand))
        rows.sort(key=lambda r: -(len(r[2]) + len(r[3])))
        scores: list[list[tuple[float, int]]] = [[(0.0, 0)] * len(self.labels) for _ in prompts]
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            batch = pad_batch([{"input_ids": r[2]} for r in chunk], {"input_ids": self.pad_id})
            labels = pad_batch([{"labels": r[3]} for r in chunk], {"labels": IGNORE_INDEX})["labels"].to(device)
            inputs = {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}
            if self.family == "decoder":
                logits = model(**inputs).logits[:, :-1]
                labels = labels[:, 1:]
            else:
                logits = model(**inputs, labels=labels).logits
            mask = labels != IGNORE_INDEX
            picked = torch.log_softmax(logits[mask].float(), dim=-1)
            token = picked.gather(-1, labels[mask].unsqueeze(-1)).squeeze(-1)
            sums = torch.zeros(len(chunk), device=token.device).index_add_(0, mask.nonzero()[:, 0], token)
            for (i, j, _, _), total, count in zip(chunk, sums.tolist(), mask.sum(-1).tolist(), strict=True):
                scores[i][j] = (total, count)
            self._progress("eval", min(start + batch_size, len(rows)), len(rows))
        return scores

    def evaluate(self, model: Any, split: str, batch_size: int, device: str) -> EvalResult:
        """Decide every example of ``split`` by ``decision`` in eval mode without gradients, then score.

        Predictions carry ``id``, ``input`` (the text, or ``[text, text_pair]``), ``prediction`` (a label name,
        ``null`` when a generation is unparsed), ``reference`` (a label name), ``prompt`` and ``prompt_truncated``;
        with ``loglik`` also ``scores`` (label -> the decision's score: the sum, or the mean with
        ``length_normalise``) and ``label_tokens`` (label -> tokens scored); with ``generate`` the ``generation``."""
        examples = self.splits[split]
        with inference(model):
            if self.decision == "loglik":
                prompts = self.scoring_inputs(split)[0]
                raw = self.loglik(model, split, batch_size, device)
            else:
                prompts = self.prompts(split)
                answers = self.generate(model, prompts, self.generation.batch_size or batch_size, device)
        rows, predicted = [], []
        for k, (example, prompt) in enumerate(zip(examples, prompts, strict=True)):
            row: dict[str, Any] = {
                "id": example.id,
                "input": example.text if example.text_pair is None else [example.text, example.text_pair],
            }
            extra: dict[str, Any]
            if self.decision == "loglik":
                values = [s / n if self.length_normalise and n else s for s, n in raw[k]]
                best = max(range(len(values)), key=lambda j: values[j])
                label: str | None = self.labels[best]
                extra = {
                    "scores": dict(zip(self.labels, values, strict=True)),
                    "label_tokens": {lab: n for lab, (_, n) in zip(self.labels, raw[k], strict=True)},
                }
            else:
                label = parse_answer(answers[k], self.verbalised)
                extra = {"generation": answers[k]}
            predicted.append(label)
            row.update(prediction=label, reference=example.label, **self.prompt_fields(prompt))
            row.update(extra)
            rows.append(row)
        metrics = classification_metrics(predicted, [e.label for e in examples], self.labels)
        metrics["n"] = float(len(examples))
        return EvalResult(
            metrics=metrics,
            predictions=rows,
            samples=len(examples),
            tokens=self.input_tokens(split) if self.decision == "loglik" else sum(len(p.ids) for p in prompts),
            shots=self.mean_shots(prompts),
        )
