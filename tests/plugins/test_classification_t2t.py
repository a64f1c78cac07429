"""The classification task on decoder and encoder-decoder models: verbaliser and prompt checks, answer parsing,
metrics by hand, log-likelihood scores against an unbatched computation, and whole cells on a tiny GPT-2 and T5 whose
recorded accuracy is recomputed from the saved predictions."""

from __future__ import annotations

import json
from pathlib import Path

import helpers
import pytest
from harness_plugins.classification import ClassificationTask
from harness_plugins.classification.text2text import TextClassificationRun, classification_metrics, parse_answer

from harness.api.budget import Budget
from harness.api.components import CheckContext
from harness.api.options import check_options
from harness.errors import HarnessError

TASK = ClassificationTask()
VERBALIZER = {"neg": "bad", "pos": "very good"}


def options(base_dir: Path | None = None, **given):
    resolved, problems = check_options(TASK.options, given, "tasks.t", base_dir)
    assert not problems, problems
    return resolved


def check(base_dir: Path, **given) -> list[str]:
    return [str(p) for p in TASK.check(options(base_dir, **given), "tasks.t", CheckContext(base_dir, offline=True))]


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    rows = ["text,label"] + [
        f"{w} {'good' if i % 2 else 'bad'} text number {i},{'pos' if i % 2 else 'neg'}"
        for i, w in enumerate(["short", "a much longer sentence here"] * 8)
    ]
    path = tmp_path / "train.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def tiny_model_options(architecture: str) -> dict:
    from harness_plugins.sources import TinySource

    resolved, problems = check_options(
        TinySource.options, {"architecture": architecture, "layers": 1, "hidden": 32, "heads": 2}, "models.m"
    )
    assert not problems
    return resolved


def tiny_run(tmp_path: Path, csv: Path, architecture: str, family: str, **given):
    from harness_plugins.sources import TinySource

    ctx = helpers.cell_context(tmp_path, model_family=family, budget=Budget(max_length=32))
    run = TASK.setup(options(tmp_path, train=csv.name, test=csv.name, **given), ctx)
    return run, run.build_model(TinySource().open(tiny_model_options(architecture), ctx))


# -- parsing and metrics ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "generation, expected",
    [
        ("Positive!", "pos"),  # prefix, casefolded
        ("  positive review", "pos"),  # stripped; the longest prefix wins over 'pos'
        ("pos", "short"),  # 'pos' alone is the label whose text is exactly 'pos'
        ("I think it is negative, not positive", "neg"),  # contained: the earliest occurrence
        ("the answer: neutral", None),  # names no label: unparsed
        ("", None),
    ],
)
def test_parse_answer_prefix_then_contained_then_unparsed(generation, expected):
    verbalised = {"neg": "negative", "short": "POS", "pos": "positive"}
    assert parse_answer(generation, verbalised) == expected


def test_metrics_by_hand_with_an_unparsed_answer():
    metrics = classification_metrics(["a", None, "b", "a"], ["a", "a", "b", "b"], ["a", "b", "c"])
    # a: tp 1, fp 1, fn 1 -> F1 0.5; b: tp 1, fn 1 -> P 1, R 0.5, F1 2/3; c occurs nowhere and is left out.
    assert metrics == pytest.approx({"accuracy": 0.5, "macro_f1": (0.5 + 2 / 3) / 2, "unparsed": 1.0})


# -- check and setup ---------------------------------------------------------------------------------------------
def test_check_validates_verbalizer_and_prompt(tmp_path, tiny_csv):
    assert check(tmp_path, train=tiny_csv.name, labels=["neg", "pos"], verbalizer=VERBALIZER) == []
    problems = check(tmp_path, train=tiny_csv.name, labels=["neg", "pos"], verbalizer={"negg": "bad", "pos": " "})
    assert problems == [
        "tasks.t.verbalizer.negg: unknown label 'negg' (did you mean 'neg'?); labels: neg, pos",
        "tasks.t.verbalizer.pos: expected a non-empty string (the label's text)",
    ]
    assert check(tmp_path, train=tiny_csv.name, labels=["neg", "pos"], verbalizer={"pos": "NEG"}) == [
        "tasks.t.verbalizer.pos: same text as label 'neg'; texts must differ"
    ]
    assert check(tmp_path, train=tiny_csv.name, prompt="{txt} {labels}", verbalizer={"x": "y", "z": "Y "}) == [
        "tasks.t.prompt: unknown field {txt} (did you mean 'text'?); known fields: {text}, {text_pair}, {labels}",
        "tasks.t.prompt: the template must contain {text} (the example's text)",
        "tasks.t.verbalizer.z: same text as label 'x'; texts must differ",  # labels unknown until the data loads
    ]
    assert check(tmp_path, train=tiny_csv.name, prompt="{text} / {text_pair}") == [
        "tasks.t.prompt: uses {text_pair} but text_pair_column is not set"
    ]


def test_setup_picks_the_run_by_family_and_checks_verbalizer_labels_from_data(tmp_path, tiny_csv):
    from harness_plugins.classification.run import ClassificationRun

    for family, kind in [("encoder", ClassificationRun), ("decoder", TextClassificationRun),
                         ("encoder-decoder", TextClassificationRun)]:  # fmt: skip
        ctx = helpers.cell_context(tmp_path, model_family=family)
        assert type(TASK.setup(options(tmp_path, train=tiny_csv.name), ctx)) is kind
    ctx = helpers.cell_context(tmp_path, model_family="decoder")
    with pytest.raises(HarnessError, match=r"verbalizer.positive: unknown label 'positive'.*labels: neg, pos"):
        TASK.setup(options(tmp_path, train=tiny_csv.name, verbalizer={"positive": "good"}), ctx)


def test_prompts_targets_and_default_max_new_tokens(tmp_path, tiny_csv):
    run, _ = tiny_run(tmp_path, tiny_csv, "gpt2", "decoder", verbalizer=VERBALIZER, decision="generate")
    first = run.splits.test[0]
    assert run.render(first) == f"Text: {first.text}\nChoose one of: bad, very good.\nAnswer:"
    encoded = run.examples("train")[0]
    target = [t for t in encoded["labels"] if t != -100]
    verbalised = VERBALIZER[run.splits.train[0].label]
    assert run._tokenizer.decode(target, skip_special_tokens=True) == verbalised
    assert run.generation.max_new_tokens == 2 + 2  # "very good" is the longest label: 2 tokens
    assert run.metadata["decision"] == "generate" and "max_new_tokens 4" in run.metadata["generation"]
    t5, _ = tiny_run(tmp_path, tiny_csv, "t5", "encoder-decoder")
    assert t5.render(first) == f"classify: {first.text} options: neg, pos"
    assert "generation" not in t5.metadata and t5.metadata["verbalizer"] == '{"neg": "neg", "pos": "pos"}'


def test_sentence_pairs_use_the_pair_templates(tmp_path):
    lines = [{"premise": f"a cat sits {i}", "hypothesis": "an animal sits", "label": ["yes", "no"][i % 2]}
             for i in range(8)]  # fmt: skip
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    given = dict(train="pairs.jsonl", test="pairs.jsonl", text_column="premise", text_pair_column="hypothesis")
    assert check(tmp_path, **given, prompt="{text} {labels}") == [
        "tasks.t.prompt: text_pair_column is set: the template must contain {text_pair}"
    ]
    for family, expected in [
        ("decoder", "Text 1: a cat sits 0\nText 2: an animal sits\nChoose one of: no, yes.\nAnswer:"),
        ("encoder-decoder", "classify: a cat sits 0 pair: an animal sits options: no, yes"),
    ]:
        run = TASK.setup(options(tmp_path, **given), helpers.cell_context(tmp_path, model_family=family))
        assert run.render(run.splits.test[0]) == expected


# -- log-likelihood scores ----------------------------------------------------------------------------------------
def by_hand(run: TextClassificationRun, model, prompt_ids: list[int], label: str) -> tuple[float, int]:
    """Summed log-probability of ``label``'s tokens after the prompt, from one unbatched forward pass."""
    import torch

    tok = run._tokenizer
    with torch.no_grad():
        if run.family == "decoder":
            text = tok.decode(prompt_ids[1:])  # drop the leading [CLS] the tokenizer adds to decoder prompts
            cand = tok(" " + label, add_special_tokens=False).input_ids
            ids = torch.tensor([prompt_ids + cand])
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            positions = range(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(cand))
            assert text  # the prompt is not empty
        else:
            cand = tok(text_target=label).input_ids  # ends with the end token
            logprobs = torch.log_softmax(
                model(input_ids=torch.tensor([prompt_ids]), labels=torch.tensor([cand])).logits[0].float(), -1
            )
            positions = range(len(cand))
        return sum(logprobs[p, c].item() for p, c in zip(positions, cand, strict=True)), len(cand)


@pytest.mark.parametrize("architecture, family", [("gpt2", "decoder"), ("t5", "encoder-decoder")])
def test_loglik_scores_match_an_unbatched_computation_and_pick_the_argmax(tmp_path, tiny_csv, architecture, family):
    run, model = tiny_run(tmp_path, tiny_csv, architecture, family, verbalizer=VERBALIZER)
    model.train()
    result = run.evaluate(model, "test", batch_size=3, device="cpu")
    assert model.training  # the mode it found is restored
    prompts = run.scoring_inputs("test")[0]
    candidates = run.scoring_inputs("test")[1]
    every_sequence = sum(len(p.ids) + len(c) for p, labels in zip(prompts, candidates, strict=True) for c in labels)
    assert result.tokens == every_sequence and result.samples == len(run.splits.test)  # the prompt once per label
    model.eval()
    for row, prompt in list(zip(result.predictions, prompts, strict=True))[:4]:
        for label, text in VERBALIZER.items():
            total, count = by_hand(run, model, list(prompt.ids), text)
            assert row["scores"][label] == pytest.approx(total, abs=1e-4) and row["label_tokens"][label] == count
        assert row["prediction"] == max(row["scores"], key=row["scores"].get)
    normalised, _ = tiny_run(tmp_path, tiny_csv, architecture, family, verbalizer=VERBALIZER, length_normalise=True)
    again = normalised.evaluate(model, "test", batch_size=5, device="cpu")
    for row, plain in zip(again.predictions, result.predictions, strict=True):
        for label in VERBALIZER:
            expected = plain["scores"][label] / plain["label_tokens"][label]
            assert row["scores"][label] == pytest.approx(expected, abs=1e-5)
        assert row["prediction"] == max(row["scores"], key=row["scores"].get)
    assert normalised.metadata["length_normalise"] == "true"


def test_generate_parses_answers_and_counts_unparsed(tmp_path, tiny_csv, monkeypatch):
    run, model = tiny_run(tmp_path, tiny_csv, "gpt2", "decoder", verbalizer=VERBALIZER, decision="generate")
    real = run.evaluate(model, "test", batch_size=4, device="cpu")  # a real greedy generation runs through
    assert all(isinstance(r["generation"], str) for r in real.predictions)
    n = len(run.splits.test)
    answers = ["Very good indeed", "it is bad", "no idea"] + ["bad"] * (n - 3)
    monkeypatch.setattr(run, "generate", lambda model, prompts, batch_size, device: answers[: len(prompts)])
    result = run.evaluate(model, "test", batch_size=4, device="cpu")
    rows = result.predictions
    assert [r["prediction"] for r in rows[:3]] == ["pos", "neg", None]
    assert [r["generation"] for r in rows[:3]] == answers[:3]
    refs, preds = [r["reference"] for r in rows], [r["prediction"] for r in rows]
    assert result.metrics["unparsed"] == 1.0
    assert result.metrics["accuracy"] == sum(p == r for p, r in zip(preds, refs, strict=True)) / n


# -- whole cells --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "architecture, family, decision", [("gpt2", "decoder", "loglik"), ("t5", "encoder-decoder", "generate")]
)
def test_cell_on_a_tiny_model_records_accuracy_recomputable_from_predictions(
    tmp_path, monkeypatch, tiny_csv, architecture, family, decision
):
    from sklearn.metrics import f1_score

    from harness.api.host import PluginHost
    from harness.worker.cell import run_cell

    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "sources,full,classification")
    host = PluginHost.load()
    task_options = options(tmp_path, train=tiny_csv.name, decision=decision, verbalizer=VERBALIZER)
    cell = helpers.make_cell(
        task_options=task_options, model_options=tiny_model_options(architecture), model_family=family,
        strategy_options={"freeze_embeddings": False, "freeze_layers": 0},
        budget=Budget(epochs=1, batch_size=4, learning_rate=1e-3, max_length=32, eval_batch_size=4,
                      warmup_steps_excluded=0),
    )  # fmt: skip
    out = tmp_path / "cell"
    record = run_cell(cell, host, out, "cpu", "attempt-1")
    assert record.status == "ok", record.error
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    refs, preds = [r["reference"] for r in rows], [r["prediction"] for r in rows]
    assert record.primary_metric == "accuracy"
    assert record.metrics["accuracy"] == sum(p == r for p, r in zip(preds, refs, strict=True)) / len(rows)
    if None not in preds:
        assert record.metrics["macro_f1"] == pytest.approx(f1_score(refs, preds, average="macro", zero_division=0))
    assert record.metrics["unparsed"] == preds.count(None)
    assert record.metric_info["decision"] == decision and record.metric_info["metric_library"].startswith("scikit")
    assert ("scores" in rows[0]) == (decision == "loglik") and ("generation" in rows[0]) == (decision == "generate")
