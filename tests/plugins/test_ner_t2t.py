"""The text-to-text path of the NER task: the answer format (rendering, parsing, tags), the prompt option, and cells
on a tiny T5 and a tiny GPT-2 whose recorded seqeval F1 is recomputed from the saved predictions."""

from __future__ import annotations

import json
from pathlib import Path

import helpers
import pytest
from harness_plugins.ner import NerTask
from harness_plugins.ner.entities import Parsed, Span, parse_entities, render_entities, spans_to_tags

from harness.api.budget import Budget
from harness.api.components import CheckContext
from harness.api.options import check_options

TASK = NerTask()
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ner"
TOKENS = "Yasser Arafat met Arafat in New York and New York".split()
TYPES = ("LOC", "PER")


def options(base_dir: Path | None = None, **given):
    resolved, problems = check_options(TASK.options, given, "tasks.t", base_dir)
    assert not problems, problems
    return resolved


def parse(answer: str, tokens=TOKENS) -> Parsed:
    return parse_entities(answer, tokens, TYPES)


# -- the answer format ---------------------------------------------------------------------------------------------
def test_gold_entities_render_in_order_with_the_data_types():
    tags = ["B-PER", "I-PER", "O", "B-PER", "O", "B-LOC", "I-LOC", "O", "B-LOC", "I-LOC"]
    assert render_entities(TOKENS, tags) == "PER: Yasser Arafat; PER: Arafat; LOC: New York; LOC: New York"
    assert render_entities(["a", "b"], ["O", "O"]) == "none"
    assert render_entities(["a", "b"], ["O", "O"], "keine") == "keine"
    # adjacent entities of one type stay apart; an I- after O starts an entity (seqeval's default rule)
    assert render_entities(["A", "B", "c", "D"], ["B-PER", "B-PER", "O", "I-LOC"]) == "PER: A; PER: B; LOC: D"


def test_repeated_surfaces_map_left_to_right_and_multi_token_surfaces_match_whole():
    parsed = parse("LOC: New York; LOC: New York")
    assert parsed == Parsed((Span("LOC", 5, 7), Span("LOC", 8, 10)), 0)
    # a surface also inside an earlier mention maps to the first mention at or after the previous match
    parsed = parse("PER: Yasser Arafat; PER: Arafat")
    assert parsed == Parsed((Span("PER", 0, 2), Span("PER", 3, 4)), 0)
    # matching never goes back before the previous match: a third "New York" has no mention left
    assert parse("LOC: New York; PER: Arafat").spans == (Span("LOC", 5, 7),)
    assert parse("LOC: New York; PER: Arafat").unparsed == 1


def test_types_are_casefolded_and_written_as_the_data_writes_them():
    assert parse("per: Arafat; Loc : York").spans == (Span("PER", 1, 2), Span("LOC", 6, 7))


def test_unknown_types_malformed_and_unmatched_parts_are_dropped_and_counted():
    parsed = parse("ORG: Arafat; Arafat; : Arafat; PER: ; PER: Mandela; PER: Arafat;;  ")
    assert parsed == Parsed((Span("PER", 1, 2),), 5)
    assert parse("garbage without structure") == Parsed((), 1)


def test_the_empty_answer_and_blank_answers_have_no_entities():
    for answer in ("none", " None ", "", "   "):
        assert parse(answer) == Parsed((), 0)
    assert parse_entities("keine", TOKENS, TYPES, "keine") == Parsed((), 0)
    assert parse("none; PER: Arafat") == Parsed((Span("PER", 1, 2),), 1)


def test_surfaces_match_casefolded_without_whitespace_when_no_exact_match():
    tokens = ["He", "visited", "the", "U.S.", "and", "NEW", "YORK"]
    # an uncased tokenizer's "u. s." and a spacing change both find the token U.S.
    assert parse("LOC: u. s.; LOC: new york", tokens).spans == (Span("LOC", 3, 4), Span("LOC", 5, 7))
    # an exact match later in the sentence wins over a loose one earlier
    assert parse("PER: york", ["york", "x", "york"]).spans == (Span("PER", 0, 1),)
    assert parse("PER: York", ["york", "x", "York"]).spans == (Span("PER", 2, 3),)


def test_spans_become_iob2_tags():
    spans = [Span("PER", 0, 2), Span("PER", 2, 3), Span("LOC", 4, 5)]
    assert spans_to_tags(6, spans) == ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "O"]
    assert spans_to_tags(2, []) == ["O", "O"]


def test_rendering_then_parsing_gives_back_the_gold_tags():
    tags = ["B-PER", "I-PER", "O", "B-PER", "O", "B-LOC", "I-LOC", "O", "B-LOC", "I-LOC"]
    parsed = parse(render_entities(TOKENS, tags))
    assert parsed.unparsed == 0 and spans_to_tags(len(TOKENS), parsed.spans) == tags


def test_scoring_is_seqeval_on_the_parsed_tags():
    from harness_plugins.ner.data import Sentence, Splits
    from harness_plugins.ner.tags import label_set
    from harness_plugins.ner.text2text import NerTextRun
    from seqeval.metrics import f1_score, precision_score, recall_score

    sentence = Sentence("test-0", tuple(TOKENS), ("B-PER", "I-PER", "O", "B-PER", "O", "B-LOC", "I-LOC") + ("O",) * 3)
    splits = Splits((sentence,), (sentence,), (sentence,), label_set(TYPES), "IOB2")
    run = NerTextRun(splits, options(), family="decoder", max_length=64)
    predicted = spans_to_tags(len(TOKENS), parse("PER: Arafat; LOC: New York; LOC: New York").spans)
    metrics = run.score([predicted], [list(sentence.tags)])
    assert metrics["precision"] == precision_score([list(sentence.tags)], [predicted]) == pytest.approx(1 / 3)
    assert metrics["recall"] == recall_score([list(sentence.tags)], [predicted]) == pytest.approx(1 / 3)
    assert metrics["f1"] == f1_score([list(sentence.tags)], [predicted])
    assert run.input_text(sentence) == " ".join(TOKENS)
    assert run.target_text(sentence) == "PER: Yasser Arafat; PER: Arafat; LOC: New York"
    assert run.render(sentence).startswith("Find the named entities (LOC, PER) in the text.")
    assert run.render(sentence).endswith(
        'or "none".\nText: Yasser Arafat met Arafat in New York and New York\nEntities:'
    )


# -- options and check ---------------------------------------------------------------------------------------------
def test_every_family_is_supported_and_the_prompt_is_checked(tmp_path):
    assert TASK.families == {"encoder", "decoder", "encoder-decoder"}
    ctx = CheckContext(tmp_path, offline=True)
    base = {"train": str(FIXTURES / "conll2003_iob1.txt")}
    assert TASK.check(options(**base, prompt="Entities of {text} ({types}):"), "tasks.t", ctx) == []
    problems = [str(p) for p in TASK.check(options(**base, prompt="{txt} {types}"), "tasks.t", ctx)]
    assert any("tasks.t.prompt" in p and "unknown field {txt}" in p for p in problems), problems
    assert any("must contain {text}" in p for p in problems), problems
    problems = [str(p) for p in TASK.check(options(**base, empty_answer="a;b"), "tasks.t", ctx)]
    assert problems and "tasks.t.empty_answer" in problems[0]


# -- whole cells ---------------------------------------------------------------------------------------------------
def run_ner_cell(tmp_path: Path, monkeypatch, architecture: str, family: str):
    from harness.api.host import LOAD_ENV, PluginHost
    from harness.worker.cell import run_cell

    monkeypatch.setenv(LOAD_ENV, "ner,sources,full")
    host = PluginHost.load()
    fixture = str(FIXTURES / "conll2003_iob1.txt")
    task_options = options(tmp_path, train=fixture, validation=fixture, test=fixture, max_new_tokens=8)
    model_options, problems = check_options(
        host.model_source("tiny").options,
        {"architecture": architecture, "layers": 1, "hidden": 32, "heads": 2},
        "models.m",
    )
    assert not problems
    cell = helpers.make_cell(
        task_type="ner", task_options=task_options, model_options=model_options, model_family=family,
        strategy_options={"freeze_embeddings": False, "freeze_layers": 0},
        budget=Budget(epochs=2, batch_size=2, learning_rate=1e-3, max_length=72, eval_batch_size=2,
                      warmup_steps_excluded=0),
    )  # fmt: skip
    out = tmp_path / "cell"
    record = run_cell(cell, host, out, "cpu", "attempt-1")
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    return record, rows


@pytest.mark.slow
@pytest.mark.parametrize("architecture, family", [("t5", "encoder-decoder"), ("gpt2", "decoder")])
def test_cell_on_a_tiny_model_records_f1_recomputable_from_predictions(tmp_path, monkeypatch, architecture, family):
    from seqeval.metrics import f1_score, precision_score, recall_score

    record, rows = run_ner_cell(tmp_path, monkeypatch, architecture, family)
    assert record.status == "ok", record.error
    assert record.primary_metric == "f1" and record.metric_info["metric_library"].startswith("seqeval")
    assert [r["id"] for r in rows] == ["test-0", "test-1", "test-2"] and not any(r["prompt_truncated"] for r in rows)
    assert rows[0]["tokens"] == "EU rejects German call to boycott British lamb .".split()
    assert rows[0]["reference"] == ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]
    assert rows[0]["prompt"] == (
        "ner: EU rejects German call to boycott British lamb ."
        if family == "encoder-decoder"
        else 'Find the named entities (LOC, MISC, ORG, PER) in the text. Answer as "type: entity; type: entity" '
        'in order of appearance, or "none".\nText: EU rejects German call to boycott British lamb .\nEntities:'
    )
    for row in rows:
        parsed = parse_entities(row["generation"], row["tokens"], ("LOC", "MISC", "ORG", "PER"))
        assert row["prediction"] == spans_to_tags(len(row["tokens"]), parsed.spans)
        assert row["unparsed_parts"] == parsed.unparsed
    references, predictions = [r["reference"] for r in rows], [r["prediction"] for r in rows]
    assert record.metrics["f1"] == f1_score(references, predictions, zero_division=0)
    assert record.metrics["precision"] == precision_score(references, predictions, zero_division=0)
    assert record.metrics["recall"] == recall_score(references, predictions, zero_division=0)
    assert record.metrics["unparsed_parts"] == sum(r["unparsed_parts"] for r in rows)


@pytest.mark.slow
def test_cell_scores_the_parsed_answers(tmp_path, monkeypatch):
    from harness_plugins.ner.text2text import NerTextRun

    answers = {
        "EU rejects German call to boycott British lamb .": "ORG: EU; MISC: British; FOO: lamb",
        "Peter Blackburn": "none",
        "In Lebanon , Yasser Arafat Hafez Assad met .": "PER: Yasser Arafat Hafez Assad; LOC: Lebanon",
    }

    def generate(self, model, prompts, batch_size, device):
        return [answers[p.text.removeprefix("ner: ")] for p in prompts]

    monkeypatch.setattr(NerTextRun, "generate", generate)
    record, rows = run_ner_cell(tmp_path, monkeypatch, "t5", "encoder-decoder")
    assert [r["unparsed_parts"] for r in rows] == [1, 0, 1]
    assert rows[2]["prediction"] == ["O", "O", "O", "B-PER", "I-PER", "I-PER", "I-PER", "O", "O"]
    # 7 gold entities, 3 predicted, 2 right
    assert record.metrics["precision"] == pytest.approx(2 / 3) and record.metrics["recall"] == pytest.approx(2 / 7)
    assert record.metrics["f1"] == pytest.approx(0.4) and record.metrics["unparsed_parts"] == 2
    assert record.metrics["f1.ORG"] == 1.0 and record.metrics["f1.PER"] == 0.0
