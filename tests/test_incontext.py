"""In-context demonstrations: seeded and reproducible draws that never include the evaluated example, prompts that
start with them, dropped farthest-first when over the budget, and predictions that name them."""

from __future__ import annotations

import pytest
from test_text2text import ExactMatchRun, tokenizer  # noqa: F401  (the tokenizer fixture)

from harness.errors import HarnessError
from harness.tasklib.incontext import SEPARATOR, Demonstrations, join_answer
from harness.tasklib.text2text import GenerationSettings
from harness.tasklib.textpairs import PairSplits, TextPair

TRAIN = tuple(TextPair(f"train-{i}", f"sentence number {i}", (f"Satz Nummer {i}",)) for i in range(30))
TEXT = "{source} =>"


def draws(k: int, seed: int, examples=TRAIN) -> dict[str, tuple[str, ...]]:
    demos = Demonstrations(TRAIN, k, seed, key=lambda e: e.source)
    return {e.id: tuple(d.id for d in demos.draw(e)) for e in examples}


def test_draws_are_reproducible_for_a_seed_whatever_the_order_and_differ_across_seeds():
    first = draws(4, seed=0)
    assert first == draws(4, seed=0, examples=tuple(reversed(TRAIN)))
    assert first != draws(4, seed=1)
    assert all(len(ids) == 4 and len(set(ids)) == 4 for ids in first.values())


def test_the_evaluated_example_is_never_drawn_by_id_or_by_text():
    copy_of_3 = TextPair("test-0", TRAIN[3].source, ("x",))  # a test example whose text is also in train
    for seed in range(40):
        for example, ids in draws(29, seed, examples=TRAIN + (copy_of_3,)).items():
            assert example not in ids
        assert "train-3" not in draws(28, seed, examples=(copy_of_3,))["test-0"]


def test_too_few_training_examples_is_a_clear_error():
    with pytest.raises(HarnessError, match="5 demonstrations need at least 6 training examples.*has 3"):
        Demonstrations(TRAIN[:3], 5, 0, key=lambda e: e.source)
    assert Demonstrations(TRAIN[:3], 0, 0, key=lambda e: e.source).draw(TRAIN[0]) == ()


def test_join_answer_adds_one_space_unless_the_prompt_ends_with_whitespace():
    assert join_answer("a =>", "b") == "a => b"
    assert join_answer("a:\n", "b") == "a:\nb"


def make_run(family, tokenizer, k, seed=0, max_length=128):  # noqa: F811
    test = (TextPair("test-0", "a small cat", ("eine kleine Katze",)),) + TRAIN[:2]
    run = ExactMatchRun(
        PairSplits(train=TRAIN, validation=TRAIN[:2], test=test), family=family, template=TEXT, input_field="source",
        primary_metric="exact", max_length=max_length, generation=GenerationSettings(max_new_tokens=3),
    )  # fmt: skip
    run.bind_tokenizer(tokenizer)
    run.use_demonstrations(k, seed)
    return run


@pytest.mark.parametrize("family", ["decoder", "encoder-decoder"])
def test_prompts_start_with_the_demonstrations_and_their_answers(tokenizer, family):  # noqa: F811
    run = make_run(family, tokenizer, k=3)
    prompt = run.prompts("test")[0]
    demos = run.demonstrations(run.splits.test[0])
    expected = [f"{d.source} => {d.target}" for d in demos] + ["a small cat =>"]
    assert prompt.text == SEPARATOR.join(expected)
    assert prompt.demonstrations == tuple(d.id for d in demos) and not prompt.truncated
    assert "demonstrations" in run.metadata and "k=3" in run.metadata["demonstrations"]
    assert run.prompts("test")[1].demonstrations and "train-0" not in run.prompts("test")[1].demonstrations
    zero = make_run(family, tokenizer, k=0).prompts("test")[0]
    assert zero.text == "a small cat =>" and zero.demonstrations == ()
    assert len(zero.ids) < len(prompt.ids)


def test_over_the_budget_demonstrations_are_dropped_farthest_first_before_the_text_is_cut(tokenizer):  # noqa: F811
    full = make_run("decoder", tokenizer, k=4).prompts("test")[0]
    fitted = make_run("decoder", tokenizer, k=4, max_length=len(full.ids) - 1).prompts("test")[0]
    assert fitted.demonstrations == full.demonstrations[1:] and not fitted.truncated
    assert fitted.text == full.text.split(SEPARATOR, 1)[1]
    cut = make_run("decoder", tokenizer, k=4, max_length=4).prompts("test")[0]
    assert cut.demonstrations == () and cut.truncated and len(cut.ids) <= 4 and cut.text.endswith("=>")


def test_evaluation_rows_name_the_demonstrations_and_the_result_counts_shots(tokenizer):  # noqa: F811
    from test_text2text import tiny

    run = make_run("decoder", tokenizer, k=2)
    model = run.build_model(tiny("gpt2"))
    result = run.evaluate(model, "test", batch_size=2, device="cpu")
    rows = result.predictions
    assert [r["shots"] for r in rows] == [2, 2, 2] and result.shots == 2.0
    assert rows[0]["demonstrations"] == list(run.prompts("test")[0].demonstrations)
    assert result.tokens == sum(len(p.ids) for p in run.prompts("test"))
    plain = make_run("decoder", tokenizer, k=0).evaluate(model, "test", batch_size=2, device="cpu")
    assert plain.shots is None and "shots" not in plain.predictions[0] and plain.tokens < result.tokens
