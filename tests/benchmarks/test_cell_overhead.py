"""Per-cell fixed overhead: wall time from a worker process's start to its first training step.

Each measurement starts a real cell as the local executor does (``python -m harness.worker spec.json``, a fresh
process, the spec written by :meth:`SuiteRun.write_spec`'s layout) on the default suite's real data and weights
(``suites/nlp.toml``: MiniLM sentiment classification and NER, SmolLM2 GGUF summarization and translation; a task
whose package is not installed is skipped). The cell is ``full`` fine-tuning, seed 0, with the suite's budget
(training examples, lengths and batch as a real run) and ``max_steps = 3``.

What is measured, exactly: the parent takes ``time.time()`` just before starting the process and polls the cell's
``progress.json`` (written atomically by the worker with ``time.time()`` as ``updated``). The worker writes
``("load", 0)`` when loading begins, ``("load", 1)`` when the model is built and on its device, and ``("train", 0)``
just before the first optimizer step (after the training split is encoded and the optimizer built). So:

- ``startup_s`` = load start − process start: the interpreter, imports, plugin host, environment record, seeding;
- ``load_s`` = load end − load start: ``Task.setup`` (reading the data files), the model source, the task's head,
  ``Strategy.apply``, the move to the device;
- ``pretrain_s`` = first step − load end: encoding the training split, the optimizer;
- ``overhead_s`` = first step − process start, the sum: the per-cell fixed overhead.

The process is killed once the first step has begun (training and evaluation are not this benchmark's business).

Variants, interleaved in every round in a rotated order (2 shared cores drift): ``nocache`` (the encoded-dataset
cache off, ``HARNESS_NO_ENCODE_CACHE=1``: what every cell paid before the cache), ``cold`` (an empty cache folder:
the first cell of a run, which writes the cache) and ``warm`` (the cache the cold run left: every later cell of a run).
One discarded run per task first builds the GGUF plain copy and fills the page cache. Medians over
``HARNESS_BENCH_ROUNDS`` rounds (default 3); ``HARNESS_BENCH_TASKS`` (comma-separated: sentiment, ner, aclsum, en-de)
picks tasks. Measured and printed (and stored in ``extra_info``, and in ``$HARNESS_BENCH_OUT`` when set), never
asserted. Run with
``pytest tests/benchmarks/test_cell_overhead.py -o addopts=--import-mode=importlib -s``.

``test_overhead_breakdown`` splits the same overhead finer in one profiling process per task (interpreter, imports,
plugins, reading data, tokenizer, weights, encoding), replaying the worker's load steps with a clock between them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "suites" / "nlp.toml"
TASK_MODELS = {"sentiment": "minilm", "ner": "minilm", "aclsum": "smollm2", "en-de": "smollm2"}
STRATEGY = "full"
MAX_STEPS = 3
VARIANTS = ("nocache", "cold", "warm")
POLL_S = 0.005
TIMEOUT_S = 600


def _tasks() -> list[str]:
    chosen = os.environ.get("HARNESS_BENCH_TASKS")
    return [t.strip() for t in chosen.split(",") if t.strip()] if chosen else list(TASK_MODELS)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def _table(name: str, values: dict[str, Any]) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items() if not isinstance(v, dict))


def _one_cell_suite(task: str, folder: Path) -> Path:
    """suites/nlp.toml cut to one task, its model, ``full`` and seed 0 (the same options and budget layers)."""
    import tomllib

    suite = tomllib.loads(SUITE.read_text(encoding="utf-8"))
    model = TASK_MODELS[task]
    model_table = dict(suite["models"][model])
    task_table = dict(suite["tasks"][task])
    text = _table("suite", {"name": f"overhead-{task}", "seeds": [0]})
    text += _table("budget", suite["budget"])
    text += _table(f"models.{model}", model_table)
    if "budget" in model_table:
        text += _table(f"models.{model}.budget", model_table["budget"])
    text += _table(f"tasks.{task}", task_table)
    if "budget" in task_table:
        text += _table(f"tasks.{task}.budget", task_table["budget"])
    text += f"[strategies.{STRATEGY}]\n"
    path = folder / f"{task}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _cell(task: str, folder: Path) -> Any:
    """The planned cell of ``task``, with ``max_steps`` set; skips when the suite does not validate here."""
    from harness.api.host import PluginHost
    from harness.errors import HarnessError
    from harness.planning.plan import plan
    from harness.planning.suite import load_suite

    host = PluginHost.load()
    try:
        cells = [c for c in plan(load_suite(_one_cell_suite(task, folder), host), host) if c.skip_reason is None]
    except HarnessError as exc:
        pytest.skip(f"{task} of suites/nlp.toml does not validate here: {str(exc)[:300]}")
    (cell,) = cells
    return replace(cell, budget=replace(cell.budget, max_steps=MAX_STEPS))


def _write_spec(cell: Any, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = out_dir / "spec.json"
    spec.write_text(json.dumps({"cell": cell.to_json(), "attempt": uuid.uuid4().hex, "device": "cpu",
                                "out_dir": str(out_dir), "save_artifacts": False}), encoding="utf-8")  # fmt: skip
    return spec


def _env(variant: str, cache: Path) -> dict[str, str]:
    env = {**os.environ, "HARNESS_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("HARNESS_NO_ENCODE_CACHE", None)
    if variant == "nocache":
        env["HARNESS_NO_ENCODE_CACHE"] = "1"
    return env


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=60)


def time_to_first_step(cell: Any, out_dir: Path, env: dict[str, str]) -> dict[str, float]:
    """Start the cell's worker, watch its progress file until the first training step begins, kill it; return the
    phase times (seconds, see the module docstring)."""
    spec = _write_spec(cell, out_dir)
    progress = out_dir / "progress.json"
    seen: dict[tuple[str, int], float] = {}
    log = open(out_dir / "cell.log", "ab")
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "harness.worker", str(spec)], stdout=log, stderr=log, env=env)
    try:
        while ("train", 0) not in seen:
            if time.time() - started > TIMEOUT_S:
                raise AssertionError(f"no training step within {TIMEOUT_S} s")
            try:
                state = json.loads(progress.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                state = None
            if state is not None:
                seen.setdefault((state["phase"], int(state["done"] > 0)), float(state["updated"]))
            if ("train", 0) not in seen and proc.poll() is not None:
                tail = (out_dir / "cell.log").read_text(errors="replace")[-2000:]
                raise AssertionError(f"the worker ended (status {proc.returncode}) before training:\n{tail}")
            time.sleep(POLL_S)
    finally:
        _stop(proc)
        log.close()
    first = seen[("train", 0)]
    load_start, load_end = seen.get(("load", 0)), seen.get(("load", 1))
    return {
        "overhead_s": first - started,
        "startup_s": load_start - started if load_start else float("nan"),
        "load_s": load_end - load_start if load_start and load_end else float("nan"),
        "pretrain_s": first - load_end if load_end else float("nan"),
    }


def _report(title: str, table: dict[str, dict[str, list[dict[str, float]]]]) -> tuple[dict, list[str]]:
    medians: dict[str, dict[str, dict[str, float]]] = {}
    lines = [title, f"{'task':<10} {'variant':<8} {'overhead':>9} {'startup':>8} {'load':>8} {'pretrain':>9}  rounds"]
    for task, variants in table.items():
        for variant, runs in variants.items():
            m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            medians.setdefault(task, {})[variant] = m
            rounds = " ".join(f"{r['overhead_s']:.2f}" for r in runs)
            lines.append(f"{task:<10} {variant:<8} {m['overhead_s']:9.2f} {m['startup_s']:8.2f} {m['load_s']:8.2f} "
                         f"{m['pretrain_s']:9.2f}  {rounds}")  # fmt: skip
    return medians, lines


def test_cell_overhead(benchmark, tmp_path):
    rounds = int(os.environ.get("HARNESS_BENCH_ROUNDS", 3))
    cells = {}
    for task in _tasks():
        try:
            cells[task] = _cell(task, tmp_path)
        except pytest.skip.Exception as exc:
            print(f"\nskipped {task}: {exc}")
    if not cells:
        pytest.skip("no task of suites/nlp.toml can run here")
    warm_caches = {task: Path(tempfile.mkdtemp(prefix="harness-bench-warm-", dir=tmp_path)) for task in cells}
    for task, cell in cells.items():  # page cache, GGUF plain copy, and the warm variant's cache
        time_to_first_step(cell, tmp_path / f"prime-{task}", _env("warm", warm_caches[task]))
    table: dict[str, dict[str, list[dict[str, float]]]] = {t: {v: [] for v in VARIANTS} for t in cells}
    runs = [(t, v) for t in cells for v in VARIANTS]
    done = [0]

    def one_round() -> None:
        shift = done[0] % len(runs)
        for task, variant in runs[shift:] + runs[:shift]:
            cache = warm_caches[task] if variant == "warm" else Path(tempfile.mkdtemp(prefix="bench-", dir=tmp_path))
            out = tmp_path / f"{task}-{variant}-{done[0]}"
            table[task][variant].append(time_to_first_step(cells[task], out, _env(variant, cache)))
        done[0] += 1

    benchmark.group = "cell overhead (process start to first training step, cpu)"
    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    medians, lines = _report(f"per-cell fixed overhead, seconds, median of {rounds} rounds", table)
    benchmark.extra_info.update(runs=table, medians=medians)
    print("\n" + "\n".join(lines))
    if os.environ.get("HARNESS_BENCH_OUT"):
        Path(os.environ["HARNESS_BENCH_OUT"]).write_text(json.dumps({"runs": table, "medians": medians}, indent=2))
    assert all(m["overhead_s"] > 0 for v in medians.values() for m in v.values())


#: Replays run_cell's load steps (harness/worker/cell.py) with a clock between them; prints one JSON line.
PROFILE = r"""
import json, sys, time
t = {"interpreter": time.time()}
import torch, transformers  # noqa: E401
t["torch+transformers"] = time.time()
from harness.api.cells import Cell
from harness.api.components import CellContext
from harness.api.host import PluginHost
from harness.worker import envinfo
from harness.worker.cell import seed_everything
from harness.worker.training import build_optimizer
spec = json.loads(open(sys.argv[1]).read())
cell = Cell.from_json(spec["cell"])
t["harness imports"] = time.time()
host = PluginHost.load()
t["plugins"] = time.time()
envinfo.collect(host, seed=cell.seed, device="cpu"); seed_everything(cell.seed, "cpu")
t["env+seed"] = time.time()
ctx = CellContext(cell=cell, device="cpu", out_dir=__import__("pathlib").Path(spec["out_dir"]))
__import__(f"harness_plugins.{cell.task_type}.run")  # the task's worker-side module (scoring libraries)
t["task module imports"] = time.time()
run = host.task(cell.task_type).setup(cell.task_options, ctx)
t["task setup (read data)"] = time.time()
loaded = host.model_source(cell.model_source).open(cell.model_options, ctx)
loaded.tokenizer()
t["tokenizer"] = time.time()
model = run.build_model(loaded)
t["weights+head"] = time.time()
model = host.strategy(cell.strategy_type).apply(model, run, cell.strategy_options, ctx)
t["strategy"] = time.time()
examples = run.examples("train")
t["encode train"] = time.time()
build_optimizer(model, cell.budget, "cpu")
t["optimizer"] = time.time()
print("PROFILE " + json.dumps(t))
"""


def profile(cell: Any, out_dir: Path, env: dict[str, str]) -> dict[str, float]:
    spec = _write_spec(cell, out_dir)
    started = time.time()
    result = subprocess.run([sys.executable, "-c", PROFILE, str(spec)], capture_output=True, text=True, env=env,
                            timeout=TIMEOUT_S)  # fmt: skip
    line = next((x for x in result.stdout.splitlines() if x.startswith("PROFILE ")), None)
    assert line is not None, result.stderr[-2000:]
    stamps = json.loads(line[len("PROFILE ") :])
    phases, previous = {}, started
    for name, stamp in stamps.items():
        phases[name] = stamp - previous
        previous = stamp
    phases["total"] = previous - started
    return phases


def test_overhead_breakdown(benchmark, tmp_path):
    """One profiling process per task and cache variant (after one priming run), phases in seconds."""
    cells = {}
    for task in _tasks():
        try:
            cells[task] = _cell(task, tmp_path)
        except pytest.skip.Exception as exc:
            print(f"\nskipped {task}: {exc}")
    if not cells:
        pytest.skip("no task of suites/nlp.toml can run here")
    found: dict[str, dict[str, dict[str, float]]] = {}

    def measure() -> None:
        for task, cell in cells.items():
            cache = Path(tempfile.mkdtemp(prefix="bench-", dir=tmp_path))
            profile(cell, tmp_path / f"prime-{task}", _env("warm", cache))  # fills the cache and the page cache
            for variant in ("nocache", "warm"):
                found.setdefault(task, {})[variant] = profile(cell, tmp_path / f"{task}-{variant}", _env(variant, cache))

    benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(phases=found)
    for task, variants in found.items():
        names = list(next(iter(variants.values())))
        print(f"\n{task}: " + "  ".join(f"{v}" for v in variants))
        for name in names:
            print(f"  {name:<24} " + "  ".join(f"{variants[v][name]:7.2f}" for v in variants))
