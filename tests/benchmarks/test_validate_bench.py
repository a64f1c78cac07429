"""Wall time of ``harness validate suites/nlp.toml`` as a user runs it (a new process each time).

Validation reads every local data file through the cells' own readers (harness.tasklib.datacheck) and remembers reads that
found nothing wrong by file identity. ``cold`` starts with an empty cache folder (``HARNESS_CACHE_DIR``), so every
file is read; ``warm`` validates again with the cache the first run left. The target is under 1.5 s for both on
2 CPU cores; it is measured and printed, never asserted.

Run with ``pytest tests/benchmarks/test_validate_bench.py -o addopts=--import-mode=importlib -s``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "suites" / "nlp.toml"


def validate(cache: str) -> float:
    env = {**os.environ, "HARNESS_CACHE_DIR": cache, "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "harness.cli", "validate", str(SUITE)], capture_output=True,
                            text=True, env=env, timeout=120)  # fmt: skip
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        pytest.skip(f"suites/nlp.toml does not validate here: {result.stderr.strip()[:300]}")
    return elapsed


@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_validate_nlp_suite(benchmark, cache):
    def fresh() -> tuple[tuple[str], dict]:
        folder = tempfile.mkdtemp(prefix="harness-bench-cache-")
        if cache == "warm":
            validate(folder)
        return (folder,), {}

    benchmark.pedantic(validate, setup=fresh, rounds=5, iterations=1)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(cache=cache, median_s=median)
    print(f"\nharness validate suites/nlp.toml, {cache} cache: median {median:.3f} s over 5 runs")
