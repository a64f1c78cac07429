"""Text-to-text tasks inside a cell's worker: prompts, encoding, generation, scoring (heavy: imports torch).

:class:`TextToTextRun` runs a task on decoder (causal LM) and encoder-decoder models; a task subclasses it and
implements :meth:`TextToTextRun.score` (and may change the prompt values, the targets or the references, as a
text-to-text NER or classification does). ``max_length`` is ``budget.max_length``; ``max_target_length`` and the
generation settings are task options (:func:`harness.tasklib.prompts.text2text_options`).

Rules:

* **Prompts** are the task's template rendered with the example (:mod:`harness.tasklib.prompts`). Encoder-decoders encode
  them with the tokenizer's special tokens (``… </s>``, ``[CLS] … [SEP]``); decoders with only those a tokenizer puts
  *before* a text (a BOS such as ``<s>``; none for GPT-2), because the answer follows.
* **Truncation never cuts the template.** When a prompt is over its limit, the example's text (the template's input
  field) is cut to its first *k* tokens — at a token boundary of the text tokenized alone, *k* as large as fits —
  and the prompt rendered again. A template that does not fit with an empty text is an error.
* **Targets** keep at most ``max_target_length`` tokens, end-of-sequence token included (the text is cut, the end
  token kept). Encoder-decoders: ``labels`` are the tokenizer's encoding of the target (``text_target``), inputs the
  prompt cut to ``max_length``. Decoders: ``input_ids`` = prompt + target + end token, ``labels`` = -100 over the
  prompt (the loss covers the target and its end token); the prompt takes at most ``max_length`` minus the target's
  length, and when the template alone leaves less room the target is cut instead. The prompt is encoded alone, so
  its tokens in training are exactly those the model is given when it generates. The target follows it after one
  space (none when the rendered prompt ends with whitespace) and is tokenized in context: its tokens are those of
  prompt + target past the prompt's (as lm-eval does), or the target's own when the prompt's tokens are not a prefix.
* **Generation prompts** take at most ``max_length`` tokens (both families); decoders then generate up to
  ``max_new_tokens`` more. Decoders without a pad token pad with their end token.
* **Batches**: training batches are padded on the right (``labels`` with -100); generation batches of decoders on the
  left, so each prompt ends where generation starts; generation runs longest prompts first.
* **Decoding** is deterministic: greedy, or beam search with ``num_beams``; never sampled. A sequence stops at the end
  token, after ``max_new_tokens`` or at a ``stop`` string once the answer has begun (leading whitespace is not an
  answer); decoders return only the new tokens. Predictions are decoded without special tokens, stripped of leading
  whitespace, cut before the first stop string and stripped of surrounding whitespace.
* **Cached**: prompts and training encodings are remembered on disk (:mod:`harness.tasklib.encodecache`) by the
  split's examples, their rendered prompts, input and target texts, the demonstrations (``k``, seed, train split),
  the template and its values, the family, ``max_length``, ``max_target_length``, the tokenizer and the code of the
  run's class.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from harness.api.components import EvalResult, LoadedModel, TaskRun
from harness.errors import HarnessError
from harness.tasklib import encodecache
from harness.tasklib.batching import inference, pad_batch
from harness.tasklib.generation import (
    GenerationSettings,
    answer_stop,
    clean_answer,
    generation_config,
    producible_stops,
)
from harness.tasklib.incontext import Demonstrated
from harness.tasklib.prompts import Prompt, render
from harness.tasklib.textpairs import PairSplits, TextPair

#: Label value the loss ignores (transformers' convention).
IGNORE_INDEX = -100
GENERATIVE_FAMILIES = ("decoder", "encoder-decoder")


class TextToTextRun(Demonstrated, TaskRun):
    """Encoded splits, generation and scoring of a text-to-text task for one cell (see the module rules).

    The tokenizer comes from the model source, so :meth:`build_model` (or :meth:`bind_tokenizer`) runs before
    :meth:`examples` and :meth:`prompts`.

    :param template: the ``str.format`` prompt template; ``values`` fills its fields other than ``input_field``.
    :param metadata: the scoring facts of the subclass (metric library, signatures), merged into :attr:`metadata`.
    """

    greater_is_better = True

    def __init__(
        self,
        splits: PairSplits,
        *,
        family: str,
        template: str,
        input_field: str,
        values: Mapping[str, str] | None = None,
        max_length: int = 128,
        max_target_length: int = 128,
        generation: GenerationSettings | None = None,
        primary_metric: str,
        metadata: Mapping[str, str] | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        if family not in GENERATIVE_FAMILIES:
            raise ValueError(f"text-to-text runs need a decoder or encoder-decoder model, not {family!r}")
        self.splits = splits
        self.family = family
        self.template = template
        self.input_field = input_field
        self.values = dict(values or {})
        self.max_length = max_length
        self.max_target_length = max_target_length
        self.generation = generation or GenerationSettings()
        self.primary_metric = primary_metric
        self.metadata = {
            "prompt_template": template,
            "generation": self.generation.describe(),
            **dict(metadata or {}),
        }
        self._progress = progress or (lambda phase, done, total: None)
        self._tokenizer: Any = None
        self._encoded: dict[str, list[dict[str, Any]]] = {}
        self._prompts: dict[str, list[Prompt]] = {}
        self.eos_id: int | None = None
        self.pad_id: int = 0
        self._prefix: list[int] = []
        self._stops: list[str] | None = None
        self._demos = None
        self._tokenizer_identity: str | None = None

    # -- what a subclass may change -----------------------------------------------------------------------------
    @abc.abstractmethod
    def score(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
        """Corpus metrics of ``predictions`` against each example's ``references`` (one or more)."""

    def input_text(self, example: TextPair) -> str:
        """The text the template's input field holds (the part truncation cuts)."""
        return example.source

    def target_text(self, example: TextPair) -> str:
        """The text the model learns to generate."""
        return example.target

    def references(self, example: TextPair) -> tuple[str, ...]:
        """The texts a prediction is scored against."""
        return example.references

    def render(self, example: TextPair, text: str | None = None) -> str:
        """The prompt of ``example``, with ``text`` in place of its input text when given."""
        return render(
            self.template, {**self.values, self.input_field: self.input_text(example) if text is None else text}
        )

    # -- tokenizer and model ------------------------------------------------------------------------------------
    def bind_tokenizer(self, tokenizer: Any) -> None:
        """Use ``tokenizer`` for encoding, padding and decoding (drops encodings made with another one)."""
        if tokenizer is self._tokenizer:
            return
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        if self.family == "decoder" and eos is None:
            raise HarnessError("the tokenizer has no end-of-sequence token; a decoder needs one to end its answers")
        if pad is None:
            raise HarnessError("the tokenizer has neither a pad token nor an end-of-sequence token to pad with")
        self._tokenizer, self._encoded, self._prompts, self._stops = tokenizer, {}, {}, None
        self._tokenizer_identity = None
        self.eos_id, self.pad_id = eos, pad
        self._prefix = self._leading_specials() if self.family == "decoder" else []

    def _leading_specials(self) -> list[int]:
        """The special tokens the tokenizer puts before a text (kept for decoder prompts; trailing ones are not)."""
        probe = "Hello world"
        full = list(self._tokenizer(probe).input_ids)
        plain = list(self._tokenizer(probe, add_special_tokens=False).input_ids)
        for start in range(len(full) - len(plain) + 1):
            if full[start : start + len(plain)] == plain:
                return full[:start]
        return []

    def build_model(self, loaded: LoadedModel) -> Any:
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        self.bind_tokenizer(loaded.tokenizer())
        model = loaded.model(AutoModelForCausalLM if self.family == "decoder" else AutoModelForSeq2SeqLM)
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = self.pad_id
        return model

    def _require_tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise RuntimeError(
                f"{type(self).__name__}.build_model(loaded) must run first: the tokenizer comes from the model source"
            )
        return self._tokenizer

    # -- encoding -----------------------------------------------------------------------------------------------
    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Prompt token ids: the tokenizer's specials (encoder-decoders) or the leading ones only (decoders)."""
        if not texts:
            return []
        tokenizer = self._require_tokenizer()
        if self.family == "encoder-decoder":
            return [list(ids) for ids in tokenizer(list(texts)).input_ids]
        return [self._prefix + list(ids) for ids in tokenizer(list(texts), add_special_tokens=False).input_ids]

    def _cut(self, text: str, keep: int) -> str:
        """``text`` cut to its first ``keep`` tokens (tokenized alone), at a token boundary."""
        tokenizer = self._require_tokenizer()
        if keep <= 0:
            return ""
        if getattr(tokenizer, "is_fast", False):
            offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True).offset_mapping
            return text if keep >= len(offsets) else text[: offsets[keep - 1][1]]
        ids = tokenizer(text, add_special_tokens=False).input_ids
        return text if keep >= len(ids) else tokenizer.decode(ids[:keep])

    def _fit(self, example: TextPair, text: str, ids: Sequence[int], limit: int) -> Prompt:
        """The prompt (``text``, encoded as ``ids``) within ``limit`` tokens: demonstrations dropped first, farthest
        from the example first; then the input text cut; with an empty input text when even that is over (the caller
        decides what then)."""
        demos = tuple(str(d.id) for d in self.demonstrations(example))
        if len(ids) <= limit:
            return Prompt(text, tuple(ids), False, demos)
        for shots in range(len(demos) - 1, -1, -1):
            text = self.compose(example, shots=shots)
            ids = self._encode([text])[0]
            if len(ids) <= limit:
                return Prompt(text, tuple(ids), False, demos[len(demos) - shots :] if shots else ())
        source = self.input_text(example)
        keep = len(self._require_tokenizer()(source, add_special_tokens=False).input_ids) - (len(ids) - limit)
        while keep > 0:
            text = self.compose(example, self._cut(source, keep), shots=0)
            ids = self._encode([text])[0]
            if len(ids) <= limit:
                return Prompt(text, tuple(ids), True)
            keep -= len(ids) - limit
        text = self.compose(example, "", shots=0)
        return Prompt(text, tuple(self._encode([text])[0]), True)

    def _template_too_long(self, prompt: Prompt, room_for: str) -> HarnessError:
        return HarnessError(
            f"the prompt template alone takes {len(prompt.ids)} tokens, leaving no room for {room_for} within "
            f"budget.max_length ({self.max_length}); raise max_length or shorten the template"
        )

    def prompts(self, split: str) -> list[Prompt]:
        """The generation prompts of ``split`` (each at most ``max_length`` tokens)."""
        if split not in self._prompts:
            examples = self.splits[split]
            texts = [self.compose(e) for e in examples]
            self._prompts[split] = encodecache.cached(
                "text2text-prompts", self._cache_parts(examples, texts), lambda: self._fit_prompts(examples, texts),
                encodecache.dump_prompts, encodecache.load_prompts,
            )  # fmt: skip
        return self._prompts[split]

    def _fit_prompts(self, examples: Sequence[TextPair], texts: Sequence[str]) -> list[Prompt]:
        fitted = []
        for example, text, ids in zip(examples, texts, self._encode(texts), strict=True):
            prompt = self._fit(example, text, ids, self.max_length)
            if len(prompt.ids) > self.max_length:
                raise self._template_too_long(prompt, "the text")
            fitted.append(prompt)
        return fitted

    def _cache_parts(self, examples: Sequence[TextPair], texts: Sequence[str]) -> dict[str, Any] | None:
        """What the prompts and encodings of ``examples`` (rendered as ``texts``) depend on; ``None``: not cached."""
        if not encodecache.enabled():
            return None
        if self._tokenizer_identity is None:
            self._tokenizer_identity = encodecache.tokenizer_identity(self._require_tokenizer())
        if self._tokenizer_identity is None:
            return None
        demos = self._demos
        rendered = [texts, [self.input_text(e) for e in examples], [self.target_text(e) for e in examples]]
        return {
            "code": encodecache.code_identity(type(self), render.__module__),
            "tokenizer": self._tokenizer_identity,
            "family": self.family,
            "template": self.template,
            "values": self.values,
            "input_field": self.input_field,
            "max_length": self.max_length,
            "max_target_length": self.max_target_length,
            "demonstrations": None if demos is None else [demos.k, demos.seed, encodecache.content_digest(demos.pool)],
            "examples": encodecache.content_digest(examples),
            "rendered": encodecache.content_digest(rendered),
        }

    def _decoder_targets(
        self, texts: Sequence[str], prompt_ids: Sequence[Sequence[int]], targets: Sequence[str]
    ) -> list[list[int]]:
        """Target token ids after each rendered prompt, without the end token: the tokens of prompt + target past the
        prompt's own when those are a prefix of them (the target tokenized in context, as lm-eval does), else the
        target encoded alone."""
        tokenizer = self._require_tokenizer()
        joined = [t if not text or text[-1].isspace() else " " + t for text, t in zip(texts, targets, strict=True)]
        if not joined:
            return []
        prompts = [list(ids[len(self._prefix) :]) for ids in prompt_ids]
        whole = tokenizer([text + t for text, t in zip(texts, joined, strict=True)], add_special_tokens=False)
        alone = tokenizer(joined, add_special_tokens=False).input_ids
        return [
            list(w[len(p) :]) if list(w[: len(p)]) == p and len(w) > len(p) else list(a)
            for p, w, a in zip(prompts, whole.input_ids, alone, strict=True)
        ]

    def loss_units(self, batch: Mapping[str, Any]) -> int:
        """Target tokens the loss averages over; a causal LM predicts token t+1 from t, so its first label is
        never scored."""
        labels = batch["labels"]
        if self.family == "decoder":
            labels = labels[:, 1:]
        return int((labels != -100).sum())

    def prepare(self, split: str) -> None:
        """Evaluation generates from prompts: encode those (not the training examples) before the clock starts."""
        self.prompts(split)

    def examples(self, split: str) -> Sequence[Mapping[str, Any]]:
        """Training encodings of ``split``: ``input_ids`` and ``labels`` (see the module rules)."""
        if split not in self._encoded:
            self._require_tokenizer()
            examples = self.splits[split]
            texts = [self.compose(e) for e in examples]
            self._encoded[split] = encodecache.cached(
                "text2text-examples", self._cache_parts(examples, texts),
                lambda: self._encode_examples(split, examples, texts), encodecache.dump_rows, encodecache.load_rows,
            )  # fmt: skip
        return self._encoded[split]

    def _encode_examples(self, split: str, examples: Sequence[TextPair], texts: Sequence[str]) -> list[dict[str, Any]]:
        tokenizer = self._require_tokenizer()
        targets = [self.target_text(e) for e in examples]
        encoded = []
        if self.family == "encoder-decoder":
            labels = tokenizer(text_target=targets, max_length=self.max_target_length, truncation=True).input_ids
            for prompt, target in zip(self.prompts(split), labels, strict=True):
                encoded.append({"input_ids": list(prompt.ids), "labels": list(target)})
            return encoded
        prompt_ids = self._encode(texts)
        target_ids = self._decoder_targets(texts, prompt_ids, targets)
        for example, text, ids, target in zip(examples, texts, prompt_ids, target_ids, strict=True):
            target = target[: self.max_target_length - 1] + [self.eos_id]
            prompt = self._fit(example, text, ids, self.max_length - len(target))
            room = self.max_length - len(prompt.ids)
            if room < 1:
                raise self._template_too_long(prompt, "the target")
            if len(target) > room:
                target = target[: room - 1] + [self.eos_id]
            encoded.append(
                {"input_ids": list(prompt.ids) + target, "labels": [IGNORE_INDEX] * len(prompt.ids) + target}
            )
        return encoded

    def collate(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Right-padded ``input_ids`` / ``attention_mask`` and ``labels`` padded with -100, each to its longest."""
        self._require_tokenizer()
        batch = pad_batch([{"input_ids": e["input_ids"]} for e in examples], {"input_ids": self.pad_id})
        batch["labels"] = pad_batch([{"labels": e["labels"]} for e in examples], {"labels": IGNORE_INDEX})["labels"]
        return batch

    # -- generation and scoring ---------------------------------------------------------------------------------
    def _generation_config(self, model: Any) -> Any:
        return generation_config(model, self.generation, self.eos_id, self.pad_id)

    def _stop_strings(self) -> list[str]:
        """The stop strings the tokenizer can produce (those it cannot never occur; transformers refuses them)."""
        if self._stops is None:
            self._stops = producible_stops(self._require_tokenizer(), self.generation.stop)
        return self._stops

    def _clean(self, text: str) -> str:
        return clean_answer(text, self.generation.stop)

    def generate(self, model: Any, prompts: Sequence[Prompt], batch_size: int, device: str) -> list[str]:
        """Answers to ``prompts`` (in their order), generated in batches of ``batch_size``, longest prompts first.

        Call it in eval mode under ``torch.no_grad()`` (as :meth:`evaluate` does)."""
        from transformers import StoppingCriteriaList

        tokenizer = self._require_tokenizer()
        config = self._generation_config(model)
        stops = self._stop_strings()
        side = "left" if self.family == "decoder" else "right"
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i].ids))
        answers = [""] * len(prompts)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch = pad_batch([{"input_ids": prompts[i].ids} for i in index], {"input_ids": self.pad_id}, side)
            output = model.generate(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                generation_config=config,
                **({"stopping_criteria": StoppingCriteriaList([answer_stop(tokenizer, stops)])} if stops else {}),
            )
            if self.family == "decoder":
                output = output[:, batch["input_ids"].shape[1] :]
            for i, text in zip(index, tokenizer.batch_decode(output, skip_special_tokens=True), strict=True):
                answers[i] = self._clean(text)
            self._progress("eval", min(start + batch_size, len(order)), len(order))
        return answers

    def evaluate(self, model: Any, split: str, batch_size: int, device: str) -> EvalResult:
        """Generate answers for ``split`` in eval mode without gradients, then :meth:`score` them.

        Predictions carry ``id``, ``input`` (the example's text), ``prediction``, ``reference`` (the first),
        ``references`` (all of them, when there are several), ``prompt`` (as the model was given it) and
        ``prompt_truncated``. Throughput counts the prompts' tokens."""
        examples, prompts = self.splits[split], self.prompts(split)
        with inference(model):
            answers = self.generate(model, prompts, self.generation.batch_size or batch_size, device)
        references = [self.references(e) for e in examples]
        metrics = {k: float(v) for k, v in self.score(answers, references).items()}
        metrics["n"] = float(len(examples))
        rows = []
        for example, prompt, answer, refs in zip(examples, prompts, answers, references, strict=True):
            row: dict[str, Any] = {
                "id": example.id,
                "input": self.input_text(example),
                "prediction": answer,
                "reference": refs[0],
            }
            if len(refs) > 1:
                row["references"] = list(refs)
            row.update(self.prompt_fields(prompt))
            rows.append(row)
        return EvalResult(
            metrics=metrics,
            predictions=rows,
            samples=len(examples),
            tokens=sum(len(p.ids) for p in prompts),
            shots=self.mean_shots(prompts),
        )
