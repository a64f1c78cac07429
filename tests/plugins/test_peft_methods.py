"""The ``peft`` strategy (any method of the installed peft): its method catalogue read without importing peft,
validation, per-method learning rates, trainable parameters against the methods' published formulas, missing target
modules, and real tiny cells end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import helpers
import pytest
import torch
from harness_plugins import peft_methods, peft_strategies
from harness_plugins.peft_methods import LEARNING_RATES, installed_methods, worker_config

from harness.api.budget import Budget
from harness.api.components import CellContext, CheckContext
from harness.api.host import LOAD_ENV, PluginHost
from harness.api.options import check_options
from harness.errors import HarnessError
from harness.testing import run_cell, tiny_model, tiny_task
from harness.worker.cell import count_params

NAMED = ["lora", "adalora", "ia3", "prompt_tuning", "prefix_tuning", "p_tuning"]


@pytest.fixture(scope="module")
def host() -> PluginHost:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(LOAD_ENV, "sources,peft,classification")
        return PluginHost.load()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return tiny_task(tmp_path_factory.mktemp("peft-methods-data"))


def resolved(component, given) -> dict:
    options, problems = check_options(component.options, given, "x")
    assert not problems, problems
    return options


def problems(host, **given) -> list[str]:
    strategy = host.strategy("peft")
    options, found = check_options(strategy.options, given, "strategies.m")
    if not found:
        found = strategy.check(options, "strategies.m", CheckContext(Path("."), offline=True))
    return [str(p) for p in found]


# -- the catalogue, without torch or peft --------------------------------------------------------------------------
def test_methods_are_read_from_peft_source_without_importing_it():
    code = (
        "import sys; from harness_plugins import peft_strategies as s, peft_methods as m; "
        "ms = m.installed_methods(); strategy = s.AnyPeftMethod(); "
        "assert not strategy.check({'method': 'VERA', 'peft': {'r': 4}}, 'x', None); "
        "assert ms['vera'].config_class == 'VeraConfig' and 'dora' in m.available(); "
        "print(sorted(n for n in ('torch', 'peft', 'transformers') if n in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_catalogue_names_config_classes_and_their_bases():
    methods = installed_methods()
    expected = {"vera": "VeraConfig", "loha": "LoHaConfig", "lokr": "LoKrConfig", "oft": "OFTConfig",
                "boft": "BOFTConfig", "fourierft": "FourierFTConfig", "ln_tuning": "LNTuningConfig",
                "lora": "LoraConfig", "prompt_tuning": "PromptTuningConfig"}  # fmt: skip
    assert {name: methods[name].config_class for name in expected} == expected
    assert methods["loha"].chain[-2:] == (
        ("tuners/lycoris_utils.py", "LycorisConfig"),
        ("tuners/loha/config.py", "LoHaConfig"),
    )
    assert ("tuners/lora/config.py", "LoraConfig") in methods["adalora"].chain
    assert methods["prefix_tuning"].prompt_learning and not methods["vera"].prompt_learning
    # what the worker resolves by importing peft agrees with what validation read from its source
    for name, method in methods.items():
        if name not in peft_methods.REFUSED:
            assert worker_config(name, {}, "x")[0] == method.config_class, name


def test_method_names_are_case_insensitive_and_dora_is_lora_with_use_dora():
    assert worker_config("VERA", {}, "x") == ("VeraConfig", {})
    assert worker_config("Ln-Tuning", {"target_modules": ["LayerNorm"]}, "x") == (
        "LNTuningConfig", {"target_modules": ["LayerNorm"]})  # fmt: skip
    assert worker_config("dora", {"r": 4}, "x") == ("LoraConfig", {"r": 4, "use_dora": True})
    assert worker_config("prompt_tuning", {}, "x") == ("PromptTuningConfig", {"num_virtual_tokens": 20})
    with pytest.raises(HarnessError, match=r"^x.method: unknown peft method 'nope'; peft offers .*vera"):
        worker_config("nope", {}, "x")
    with pytest.raises(HarnessError, match=r"^x.method: the harness cannot train peft's xlora: X-LoRA mixes"):
        worker_config("xlora", {}, "x")


# -- validation ----------------------------------------------------------------------------------------------------
def test_the_peft_table_is_checked_against_the_methods_config(host):
    assert problems(host, method="vera", peft={"r": 64, "d_initial": 0.1, "target_modules": ["query"]}) == []
    assert problems(host, method="LOKR", peft={"decompose_factor": 4}) == []
    assert problems(host, method="vera", peft={"d_inital": 0.1, "task_type": "SEQ_CLS", "r": "big"}) == [
        "strategies.m.peft.d_inital: not a field of peft's VeraConfig (did you mean 'd_initial'?)",
        "strategies.m.peft.task_type: the harness sets it from the task and the model family",
        "strategies.m.peft.r: peft's VeraConfig.r takes int, got 'big'",
    ]
    assert problems(host, method="dora", peft={"use_dora": False}) == [
        "strategies.m.peft.use_dora: method 'dora' sets it to True"
    ]
    assert problems(host, method="loha", peft={"target_modules": []}) == [
        "strategies.m.peft.target_modules: empty list; leave it out for peft's defaults"
    ]
    assert problems(host)[0].startswith("strategies.m.method: missing required key")


def test_unknown_and_refused_methods_are_one_clear_problem(host):
    (unknown,) = problems(host, method="verra")
    assert unknown.startswith("strategies.m.method: unknown peft method 'verra' (did you mean 'vera'?); ")
    assert "the installed peft offers " in unknown and all(m in unknown for m in ("boft", "dora", "ln_tuning"))
    assert "xlora" not in unknown  # refused methods are not offered
    assert problems(host, method="poly") == [
        "strategies.m.method: the harness cannot train peft's poly: " + peft_methods.REFUSED["poly"]
    ]


def test_without_a_readable_peft_the_worker_resolves_the_method(host, monkeypatch):
    monkeypatch.setattr(peft_methods, "installed_methods", lambda: None)
    monkeypatch.setattr(peft_strategies, "installed_methods", lambda: None)
    assert problems(host, method="anything", peft={"x": 1}) == []


# -- learning rates ------------------------------------------------------------------------------------------------
def test_each_method_has_its_own_sourced_learning_rate(host):
    strategy = host.strategy("peft")
    assert strategy.budget_defaults == {"learning_rate": 5e-4, "warmup_ratio": 0.06, "weight_decay": 0.01}
    rates = {m: strategy.budget_defaults_for({"method": m})["learning_rate"] for m in
             ("vera", "VERA", "fourierft", "ln_tuning", "loha", "lokr", "oft", "boft", "dora", "hra")}  # fmt: skip
    assert rates == {"vera": 5e-3, "VERA": 5e-3, "fourierft": 6e-2, "ln_tuning": 1e-3, "loha": 5e-4, "lokr": 5e-4,
                     "oft": 5e-4, "boft": 5e-4, "dora": 5e-4, "hra": 5e-4}  # fmt: skip
    for name in NAMED:  # the named strategies' rates, so that lora and peft method=lora compare at one rate
        assert LEARNING_RATES[name][0] == host.strategy(name).budget_defaults["learning_rate"], name
    assert all(source for _, source in LEARNING_RATES.values())
    described = strategy.describe()
    assert "vera" in described["peft_methods"] and described["method_learning_rates"]["fourierft"] == 6e-2


def test_planned_cells_train_at_their_methods_rate(host, tmp_path):
    """Planning resolves each suite entry's defaults with ``Strategy.budget_defaults_for``; a suite's own rate for
    one strategy still wins."""
    from harness.planning.plan import plan
    from harness.planning.suite import load_suite

    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"t {i},{'ab'[i % 2]}\n" for i in range(20)))
    suite = tmp_path / "s.toml"
    suite.write_text("""
[models.tiny]
source = "tiny"
[tasks.c]
type = "classification"
train = "train.csv"
[strategies.vera]
type = "peft"
method = "vera"
[strategies.loha]
type = "peft"
method = "loha"
[strategies.fourier]
type = "peft"
method = "fourierft"
[strategies.fourier.budget]
learning_rate = 1e-2
""")
    rates = {c.strategy: c.budget.learning_rate for c in plan(load_suite(suite, host), host)}
    assert rates == {"vera": 5e-3, "loha": 5e-4, "fourier": 1e-2}


# -- parameter counts (MEASUREMENT.md: BERT L=2, H=128, I=512; the head H*k+k counted apart) ------------------------
L, H, FFN, K = 2, 128, 512, 2
HEAD = H * K + K
QV = {"target_modules": ["query", "value"]}
ADAPTED = 2 * L  # query and value of each layer, H x H each
FORMULAS = [
    # VeRA (Kopiczko et al. 2024): dW = diag(b) B diag(d) A with A (r x in), B (out x r) frozen, random and shared by
    # every layer; only d (r) and b (out) train: r + out per matrix, peft's default r = 256 on query, value
    ("vera", {}, ADAPTED * (256 + H)),  # 1,536
    # LoHa (Hyeon-Woo et al. 2022): dW = (B1 A1) * (B2 A2), a Hadamard product of two rank-r factorisations:
    # 2 r (in + out) per matrix
    ("loha", {**QV, "r": 8}, ADAPTED * 2 * 8 * (H + H)),  # 16,384
    # LoKr (LyCORIS): dW = W1 (x) W2, a Kronecker product with out = a b, in = c d, peft's factorization(128) = (8, 16):
    # W1 is a x c; W2 (b x d) is full when r >= max(b, d) / 2 (peft's rule), else B A of rank r
    ("lokr", {**QV, "r": 8}, ADAPTED * (8 * 8 + 16 * 16)),  # 1,280
    ("lokr", {**QV, "r": 4}, ADAPTED * (8 * 8 + 4 * (16 + 16))),  # 768
    # OFT (Qiu et al. 2023): W' = R W with R block-diagonal, in / b blocks of b = 32 (oft_block_size), each the Cayley
    # transform of a skew-symmetric matrix, of which peft stores the b (b - 1) / 2 entries above the diagonal
    ("oft", QV, ADAPTED * (H // 32) * (32 * 31 // 2)),  # 7,936
    # BOFT (Liu et al. 2024): m = 1 butterfly factor (boft_n_butterfly_factor) of in / b blocks of b x b, b = 4 (peft
    # keeps whole blocks and takes their skew-symmetric part), plus a scale per output: m (in / b) b^2 + out per matrix
    ("boft", QV, ADAPTED * (1 * (H // 4) * 4 * 4 + H)),  # 2,560
    # FourierFT (Gao et al. 2024): n spectral coefficients per matrix at fixed random frequencies, on query, value
    ("fourierft", {"n_frequency": 1000}, ADAPTED * 1000),  # 4,000
    # LN tuning (Qi et al. 2022): weight and bias of every LayerNorm, the embeddings' and two per layer
    ("ln_tuning", {"target_modules": ["LayerNorm"]}, (2 * L + 1) * 2 * H),  # 1,280
    # DoRA (Liu et al. 2024): LoRA (4 L r H) plus one magnitude per output feature of each adapted matrix (2 L H)
    ("dora", {"r": 8}, 4 * L * 8 * H + 2 * L * H),  # 8,704
    # prompt tuning through this strategy: n H, with the harness's 20 virtual tokens
    ("prompt_tuning", {}, 20 * H),  # 2,560
]
#: What save_pretrained writes besides the trainable tensors: VeRA's shared projections A (r x in) and B (out x r).
STORED_EXTRA = {"vera": 256 * H + H * 256}


def prepared(host, data, tmp_path, options, model=None, strategy="peft"):
    """The task run and the model the strategy returns for a tiny BERT classification cell (what run_cell trains)."""
    model_options = {"architecture": "bert", "layers": L, "hidden": H, "heads": 2, "intermediate": FFN, **(model or {})}
    task = {k: v for k, v in data.items() if k != "type"}
    cell = helpers.make_cell(
        task_options=resolved(host.task("classification"), task), strategy=strategy, strategy_type=strategy,
        strategy_options=resolved(host.strategy(strategy), options),
        model_options=resolved(host.model_source("tiny"), model_options), budget=Budget(max_length=48),
    )  # fmt: skip
    ctx = CellContext(cell=cell, device="cpu", out_dir=tmp_path)
    run = host.task("classification").setup(cell.task_options, ctx)
    loaded = host.model_source("tiny").open(cell.model_options, ctx)
    return run, host.strategy(strategy).apply(run.build_model(loaded), run, cell.strategy_options, ctx)


@pytest.mark.parametrize(
    "method, table, expected", FORMULAS, ids=[f"{m}-r{t.get('r', '')}" if m == "lokr" else m for m, t, _ in FORMULAS]
)
def test_trainable_parameters_match_the_published_formulas(host, data, tmp_path, method, table, expected):
    run, model = prepared(host, data, tmp_path, {"method": method, "peft": table})
    params = count_params(model, run.head_prefixes)
    assert params.head == HEAD
    assert params.trainable == expected + HEAD
    stored = host.strategy("peft").stored_bytes(model)
    assert stored == 4 * (params.trainable + STORED_EXTRA.get(method, 0))


# -- what peft has no default for ----------------------------------------------------------------------------------
def test_a_method_without_default_targets_for_the_architecture_says_what_to_set(host, data, tmp_path):
    with pytest.raises(HarnessError) as caught:
        prepared(host, data, tmp_path, {"method": "ln_tuning"}, model={"hidden": 32, "intermediate": 64})
    assert str(caught.value) == (
        "strategies.peft: peft's LNTuningConfig has no default target modules for model type 'bert'; set "
        "strategies.peft.peft.target_modules to module names: the model's normalisation layers are LayerNorm"
    )


def test_an_architecture_unknown_to_peft_names_its_linear_layers():
    from harness_plugins.peft_config import missing_targets

    model = torch.nn.Module()
    model.config = SimpleNamespace(model_type="mystery")
    model.block = torch.nn.ModuleDict({"mix_in": torch.nn.Linear(4, 4), "norm": torch.nn.LayerNorm(4)})
    model.classifier = torch.nn.Linear(4, 2)  # the head: never a target
    assert missing_targets(model, "LoraConfig", ("classifier",), "strategies.lora.target_modules") == (
        "peft's LoraConfig has no default target modules for model type 'mystery'; set strategies.lora.target_modules "
        "to module names: the model's linear layers are mix_in"
    )
    assert missing_targets(model, "PromptTuningConfig", (), "x") is None  # no target modules at all
    model.config.model_type = "bert"
    assert missing_targets(model, "VeraConfig", (), "x") is None  # peft's default: query, value


def test_peft_defaults_fill_in_target_modules_where_it_has_them(host, data, tmp_path):
    _, model = prepared(host, data, tmp_path, {"method": "vera"}, model={"hidden": 32, "intermediate": 64})
    assert set(model.peft_config["default"].target_modules) == {"query", "value"}


# -- end to end: real tiny cells through the harness's test helper -------------------------------------------------
@pytest.mark.parametrize(
    "method, table, expected",
    [
        ("vera", {"r": 16}, 4 * (16 + 32)),  # tiny_model: L = 2, H = 32; r + out per adapted matrix
        ("loha", {"r": 4}, 4 * 2 * 4 * (32 + 32)),  # peft's BERT default targets: query, value
    ],
)
def test_a_real_cell_trains_evaluates_and_counts(tmp_path, data, method, table, expected):
    record = run_cell(tmp_path, task=data, strategy={"type": "peft", "method": method, "peft": table},
                      model=tiny_model())  # fmt: skip
    assert record.status == "ok", record.error
    assert record.training.steps == 8 and record.training.loss_last is not None
    assert {"accuracy", "macro_f1"} <= set(record.metrics)
    head = 32 * 2 + 2
    assert record.params.head == head and record.params.trainable == expected + head
    extra = 2 * 16 * 32 if method == "vera" else 0  # VeRA saves its shared projections
    assert record.params.stored_bytes == 4 * (expected + head + extra)


def test_the_method_catalogue_is_cached_and_a_broken_cache_is_read_again(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    installed_methods.cache_clear()
    try:
        fresh = installed_methods()
        (cached,) = (tmp_path / "peft-methods").glob("*.json")
        installed_methods.cache_clear()
        monkeypatch.setattr(peft_methods, "_read_methods", lambda root: pytest.fail("read peft again"))
        assert installed_methods() == fresh and "vera" in fresh
        cached.write_text("{not json", encoding="utf-8")
        installed_methods.cache_clear()
        monkeypatch.undo()
        monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
        assert installed_methods() == fresh
    finally:
        installed_methods.cache_clear()
