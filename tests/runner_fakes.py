"""Fakes for the runner and local-executor tests: a plugin with trivial components, a fake worker, a CLI launcher.

The fake worker follows the worker protocol (reads ``spec.json``, writes ``record.json`` atomically with the spec's
attempt id) and behaves as the cell's ``fake-strategy`` option ``behaviour`` says: ``ok``, ``raise`` (failed record,
exit 1), ``segfault``, ``exit`` (code 3, no record), ``hang``, ``stubborn`` (hangs ignoring SIGTERM), or ``wrong-key`` (a record under
another key, as a worker running different harness code would write).
``FAKE_BEHAVIOUR`` in the environment overrides it for every cell; ``FAKE_FIX=1`` turns ``raise`` into ``ok``. Each run appends ``start`` and ``end`` events to ``<results>/runs.jsonl``.

Run as a script: ``runner_fakes.py worker SPEC`` is the fake worker; ``runner_fakes.py harness ARGS...`` is the real
``harness`` CLI with this plugin loaded and fake workers (set ``HARNESS_LOAD_PLUGINS=local``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from harness.api.components import ModelSource, Strategy, Task
from harness.api.hookspecs import hookimpl
from harness.api.options import Option

FAKES = Path(__file__).resolve()
BEHAVIOURS = ("ok", "raise", "segfault", "exit", "hang", "stubborn", "wrong-key")


class FakeTask(Task):
    name = "fake-task"
    description = "a task whose cells only fake workers run"
    options = (Option("size", "int", 1, "a knob that changes the cell key"),)

    def setup(self, options, ctx):  # pragma: no cover - fake workers never call it
        raise AssertionError("fake task set up")


class FakeStrategy(Strategy):
    name = "fake-strategy"
    description = "tells the fake worker how to behave"
    options = (
        Option("behaviour", "str", "ok", "what the fake worker does", choices=BEHAVIOURS),
        Option("sleep_s", "float", 0.0, "seconds the fake worker works before it ends"),
    )

    def apply(self, model, run, options, ctx):  # pragma: no cover
        raise AssertionError("fake strategy applied")


class DecoderOnly(Strategy):
    name = "decoder-only"
    description = "supports decoders only, so encoder cells are skipped"
    families = frozenset({"decoder"})

    def apply(self, model, run, options, ctx):  # pragma: no cover
        raise AssertionError("fake strategy applied")


class FakeSource(ModelSource):
    name = "fake-source"
    description = "an encoder that is never loaded"

    def family(self, options, ctx):
        return "encoder"

    def open(self, options, ctx):  # pragma: no cover
        raise AssertionError("fake model opened")


@hookimpl
def harness_register_tasks(register):
    register(FakeTask())


@hookimpl
def harness_register_strategies(register):
    register(FakeStrategy())
    register(DecoderOnly())


@hookimpl
def harness_register_model_sources(register):
    register(FakeSource())


def fake_host():
    """A plugin host with the entry points allowed by the environment plus this module."""
    from harness.api.host import PluginHost

    return PluginHost.load(extra=[("fakes", sys.modules[__name__])])


def fake_argv(spec_path: Path) -> list[str]:
    return [sys.executable, str(FAKES), "worker", str(spec_path)]


def harness_argv(*args: str) -> list[str]:
    """Command line of the real CLI with the fakes (run it with ``HARNESS_LOAD_PLUGINS=local``)."""
    return [sys.executable, str(FAKES), "harness", *args]


def suite_text(
    strategies: dict[str, dict], seeds: tuple[int, ...] = (0,), size: int = 1, name: str = "t", tasks: int = 1
) -> str:
    """A suite with ``tasks`` fake tasks, one model, and the given ``{name: fake-strategy options}``; a
    ``decoder-only`` strategy is added, so every task has a skipped cell per seed."""
    lines = [f'[suite]\nname = "{name}"\nseeds = {list(seeds)}\n', '[models.m]\nsource = "fake-source"\n']
    for index in range(tasks):
        lines.append(f'[tasks.t{index}]\ntype = "fake-task"\nsize = {size if index == 0 else 1}\n')
    for strategy, options in strategies.items():
        body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in options.items())
        lines.append(f'[strategies.{strategy}]\ntype = "fake-strategy"\n{body}')
    lines.append('[strategies.dec]\ntype = "decoder-only"\n')
    return "\n".join(lines)


def runs(root: Path) -> list[dict]:
    """The fake workers' events under a results directory."""
    path = root / "runs.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _event(root: Path, **data) -> None:
    with open(root / "runs.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(data) + "\n")


def worker_main(spec_path: str) -> None:
    from harness.api.cells import Cell
    from harness.results.records import Record, write_json_atomic

    spec = json.loads(Path(spec_path).read_text())
    cell = Cell.from_json(spec["cell"])
    out = Path(spec["out_dir"])
    root = out.parents[1]
    options = cell.strategy_options
    behaviour = os.environ.get("FAKE_BEHAVIOUR") or options.get("behaviour", "ok")
    if behaviour == "raise" and os.environ.get("FAKE_FIX") == "1":
        behaviour = "ok"
    env = {
        "attempt": spec["attempt"],
        "pid": os.getpid(),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
        "device": spec["device"],
    }
    started = time.time()
    _event(root, event="start", cell_id=cell.cell_id, t=started, **env)
    print(f"fake worker for {cell.cell_id}: {behaviour}", flush=True)
    steps = 4
    for step in range(steps):
        write_json_atomic(out / "progress.json", {"phase": "train", "done": step, "total": steps, "updated": time.time()})
        time.sleep(options.get("sleep_s", 0.0) / steps)
    if behaviour == "segfault":
        print("about to dereference a bad pointer", flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
    if behaviour == "exit":
        print("giving up quietly", flush=True)
        sys.exit(3)
    if behaviour in ("hang", "stubborn"):
        if behaviour == "stubborn":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("hanging", flush=True)
        time.sleep(600)
    status, error, metrics = "ok", None, {"accuracy": 0.5 + cell.seed / 100}
    if behaviour == "raise":
        print("Traceback (most recent call last):\nRuntimeError: boom", flush=True)
        status, error, metrics = "failed", "RuntimeError: boom", {}
    record = Record(
        key="0" * 16 if behaviour == "wrong-key" else cell.key, suite=cell.suite, cell_id=cell.cell_id, task=cell.task, strategy=cell.strategy,
        model=cell.model, seed=cell.seed, status=status, error=error, metrics=metrics,
        primary_metric="accuracy", config=cell.config(), env=env,
    )
    write_json_atomic(out / "record.json", record.to_json())
    _event(root, event="end", cell_id=cell.cell_id, t=time.time(), start=started, **env)
    sys.exit(0 if status == "ok" else 1)


def harness_main(args: list[str]) -> None:
    import functools

    import harness.run.runner
    from harness.cli import main

    harness.run.runner.run_suite = functools.partial(harness.run.runner.run_suite, host=fake_host(), worker_argv=fake_argv)
    sys.argv = ["harness", *args]
    main()


if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    sys.modules.setdefault("runner_fakes", sys.modules[__name__])
    if mode == "worker":
        worker_main(rest[0])
    else:
        harness_main(rest)
