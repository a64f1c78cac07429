"""harness.report.stats: known answers worked out by hand (arithmetic in the comments)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sps

from harness.api.itemstats import pool
from harness.report.stats import (
    CI_METHOD,
    Describe,
    ItemStats,
    TestResult,
    describe,
    holm,
    paired_randomization,
    welch,
)


def accuracy(correct: list[int], prefix: str = "test") -> ItemStats:
    """Accuracy as additive statistics: each item's row is [correct, 1]; metric = Σcorrect / Σ1."""
    values = np.array([[c, 1] for c in correct], dtype=float)
    return ItemStats(tuple(f"{prefix}-{i}" for i in range(len(correct))), values, lambda s: s[0] / s[1])


def f1_metric(s: np.ndarray) -> float:
    return 2 * s[0] / (s[1] + s[2])


def f1_vectorized(s: np.ndarray) -> np.ndarray:
    return 2 * s[:, 0] / (s[:, 1] + s[:, 2])


# ---------------------------------------------------------------------------------------------------- describe


def test_describe_three_seeds() -> None:
    d = describe([0.70, 0.72, 0.74])
    assert isinstance(d, Describe)
    # mean = (0.70 + 0.72 + 0.74) / 3 = 2.16 / 3 = 0.72
    assert d.mean == pytest.approx(0.72, abs=1e-12)
    # s² = (0.02² + 0² + 0.02²) / (3 − 1) = 0.0008 / 2 = 0.0004  ->  s = 0.02
    assert d.std == pytest.approx(0.02, abs=1e-12)
    assert d.n == 3
    # t(0.975, 2) has a closed form for 2 degrees of freedom: (2p − 1)·√(2 / (4p(1 − p))) with p = 0.975,
    # = 0.95·√(2 / 0.0975) = 0.95·√20.5128… = 4.3026527297…  (tables print 4.302652729911275; agrees to 1e-9)
    t = 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025))
    assert t == pytest.approx(4.302652729911275, rel=1e-9)
    half = t * 0.02 / math.sqrt(3)  # 4.3027 · 0.02 / 1.7321 = 0.049683
    assert d.ci_low == pytest.approx(0.72 - half, rel=1e-12)
    assert d.ci_high == pytest.approx(0.72 + half, rel=1e-12)
    assert d.to_json() == {"mean": d.mean, "std": d.std, "n": 3, "ci_low": d.ci_low, "ci_high": d.ci_high}
    assert "Student-t" in CI_METHOD


def test_describe_one_seed_and_none() -> None:
    d = describe([0.5])
    assert d == Describe(mean=0.5, std=0.0, n=1, ci_low=None, ci_high=None)
    assert describe([]) is None
    flat = describe([0.3, 0.3])  # s = 0 -> the interval collapses onto the mean
    assert flat is not None and flat.ci_low == flat.ci_high == pytest.approx(0.3)
    with pytest.raises(ValueError):
        describe([1.0, 2.0], confidence=1.5)


# ---------------------------------------------------------------------------------------------------- ItemStats


def test_item_stats_accuracy_and_pool() -> None:
    s = accuracy([1, 0, 1, 1])
    assert s.k == 2 and len(s) == 4
    assert s.score() == 0.75  # Σ = [3, 4] -> 3 / 4
    np.testing.assert_array_equal(s.scores(np.array([[3.0, 4.0], [1.0, 2.0]])), [0.75, 0.5])
    assert not s.values.flags.writeable

    pooled = pool([accuracy([1, 0]), accuracy([1, 1, 1])], prefixes=[0, 1])
    assert pooled.ids == ("0:test-0", "0:test-1", "1:test-0", "1:test-1", "1:test-2")
    assert pooled.score() == 0.8  # Σ = [1 + 3, 2 + 3] = [4, 5] -> 0.8, micro-averaged over both seeds
    both = accuracy([1]).concat([accuracy([0], prefix="dev")])
    assert both.ids == ("test-0", "dev-0") and both.score() == 0.5


def test_item_stats_validation() -> None:
    metric = lambda s: s[0]  # noqa: E731
    with pytest.raises(ValueError, match="unique"):
        ItemStats(("x", "x"), np.ones((2, 1)), metric)
    with pytest.raises(ValueError, match="ids for"):
        ItemStats(("x",), np.ones((2, 1)), metric)
    with pytest.raises(ValueError, match="2-D"):
        ItemStats(("x", "y"), np.ones(2), metric)
    with pytest.raises(ValueError, match="unique"):  # same ids from two seeds collide without prefixes
        accuracy([1]).concat([accuracy([0])])
    with pytest.raises(ValueError, match="prefixes"):
        pool([accuracy([1])], prefixes=[0, 1])
    with pytest.raises(ValueError, match="k="):
        accuracy([1]).concat([ItemStats(("z",), np.ones((1, 3)), metric)])


# ---------------------------------------------------------------------------------------------------- randomisation


def test_randomization_identical_is_one() -> None:
    a = accuracy([1, 0, 1, 1, 0, 1])
    r = paired_randomization(a, accuracy([1, 0, 1, 1, 0, 1]), resamples=500)
    # D = b − a = 0, so every resample has |Δ_r| = 0 ≥ |Δ_obs| = 0: p = (500 + 1) / (500 + 1)
    assert r == TestResult(r.method, 1.0, 0.0, 6, None)
    assert "500 resamples" in r.method


def test_randomization_large_gap() -> None:
    # a right on items 0–89, b on items 0–29: 60 discordant items. A resample moves Δ by ±1/100 per discordant
    # item, so |Δ_r| ≥ 0.6 needs all 60 swapped the same way: probability 2 / 2⁶⁰ -> p = (0 + 1) / 10001.
    a = accuracy([1] * 90 + [0] * 10)
    b = accuracy([1] * 30 + [0] * 70)
    r = paired_randomization(a, b)
    assert r.delta == pytest.approx(0.6)
    assert r.p_value == pytest.approx(1 / 10_001) and r.p_value < 0.001
    assert r.n == 100 and r.note is None
    assert paired_randomization(b, a).delta == pytest.approx(-0.6)


def test_randomization_tiny_gap() -> None:
    # One discordant item of 200: every resample gives |Δ_r| = 1/200 = |Δ_obs|, so p = 1.
    a = accuracy([1] * 101 + [0] * 99)
    b = accuracy([1] * 100 + [0] * 100)
    r = paired_randomization(a, b, resamples=2000)
    assert r.delta == pytest.approx(0.005)
    assert r.p_value > 0.5


def test_randomization_reproducible_and_seeded() -> None:
    rng = np.random.default_rng(7)
    a = accuracy(list(rng.integers(0, 2, 300)))
    b = accuracy(list(rng.integers(0, 2, 300)))
    first = paired_randomization(a, b, resamples=2000, seed=3)
    assert paired_randomization(a, b, resamples=2000, seed=3) == first
    assert 0 < first.p_value <= 1


def test_randomization_vectorized_matches_loop() -> None:
    # Entity-F1-style ratio metric over [tp, n_pred, n_gold]: F1 = 2·Σtp / (Σpred + Σgold), not a mean of item scores.
    rng = np.random.default_rng(11)
    gold = rng.integers(1, 4, size=(80, 1))
    rows_a = np.hstack([rng.integers(0, 2, size=(80, 1)), rng.integers(1, 4, size=(80, 1)), gold])
    rows_b = np.hstack([rng.integers(0, 3, size=(80, 1)), rng.integers(1, 4, size=(80, 1)), gold])
    ids = tuple(f"s{i}" for i in range(80))
    loop_a, loop_b = ItemStats(ids, rows_a, f1_metric), ItemStats(ids, rows_b, f1_metric)
    fast_a = ItemStats(ids, rows_a, f1_metric, f1_vectorized)
    fast_b = ItemStats(ids, rows_b, f1_metric, f1_vectorized)
    slow = paired_randomization(loop_a, loop_b, resamples=1000, seed=5)
    fast = paired_randomization(fast_a, fast_b, resamples=1000, seed=5)
    assert fast == slow
    assert slow.delta == pytest.approx(f1_metric(rows_a.sum(0)) - f1_metric(rows_b.sum(0)))


def test_randomization_partial_and_disjoint_ids() -> None:
    a = accuracy([1, 1, 0, 0])
    disjoint = paired_randomization(a, accuracy([1, 0], prefix="other"), resamples=100)
    assert disjoint.p_value is None and disjoint.delta is None and disjoint.n == 0 and disjoint.note
    partial = paired_randomization(a, accuracy([0, 0]), resamples=100)  # test-0 and test-1 pair
    assert partial.n == 2 and "paired 2 items" in partial.note
    assert partial.delta == 1.0  # a: [1, 1] -> 1.0; b: [0, 0] -> 0.0


def test_pooled_seeds_pair_by_seed_and_item() -> None:
    a = pool([accuracy([1, 1, 1]), accuracy([1, 1, 0])], prefixes=[0, 1])
    b = pool([accuracy([1, 0, 0]), accuracy([0, 1, 0])], prefixes=[0, 1])
    r = paired_randomization(a, b, resamples=200)
    assert r.n == 6 and r.note is None
    assert r.delta == pytest.approx(5 / 6 - 2 / 6)


# ---------------------------------------------------------------------------------------------------- welch


def test_welch_known_answer() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0, 10.0]
    # mean a = 2.5, s²a = (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3; mean b = 6, s²b = (16 + 4 + 0 + 4 + 16) / 4 = 10
    va, vb = (5 / 3) / 4, 10 / 5  # squared standard errors: 0.41667 and 2
    t = (2.5 - 6) / math.sqrt(va + vb)  # −3.5 / √2.41667 = −2.25144
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 4)  # Welch–Satterthwaite: 5.84028 / (0.05787 + 1) = 5.52079
    p = 2 * sps.t.sf(abs(t), df)  # ≈ 0.0691
    assert t == pytest.approx(-2.2514363, rel=1e-6) and df == pytest.approx(5.5207877, rel=1e-6)
    r = welch(a, b)
    assert r.p_value == pytest.approx(p, rel=1e-10) and r.p_value == pytest.approx(0.0691336, rel=1e-5)
    assert r.delta == pytest.approx(-3.5) and r.n == 4 and r.note is None
    assert "Welch" in r.method


def test_welch_too_few_and_no_variance() -> None:
    r = welch([0.9], [0.8, 0.7])
    assert r.p_value is None and r.note == "needs at least 2 seeds per side" and r.delta == pytest.approx(0.15)
    assert welch([], []).delta is None
    same = welch([0.5, 0.5], [0.5, 0.5, 0.5])
    assert same.p_value == 1.0 and same.delta == 0.0
    apart = welch([0.5, 0.5], [0.6, 0.6])
    assert apart.p_value is None and apart.note == "no variance across seeds"
    one_flat = welch([0.5, 0.5, 0.5], [0.6, 0.7, 0.8])  # one side's variance suffices for the t statistic
    assert one_flat.p_value is not None and 0 < one_flat.p_value < 1


# ---------------------------------------------------------------------------------------------------- holm


def test_holm_by_hand() -> None:
    # m = 3 (None does not count). Sorted: 0.01·3 = 0.03; 0.03·2 = 0.06; 0.04·1 = 0.04 -> running max 0.06.
    got = holm([0.01, 0.04, 0.03, None])
    assert got[0] == pytest.approx(0.03) and got[1] == pytest.approx(0.06) and got[2] == pytest.approx(0.06)
    assert got[3] is None
    # Capping: 0.4·3 = 1.2 -> 1; 0.5·2 = 1.0; 0.9·1 = 0.9 -> running max 1.
    assert holm([0.5, 0.4, 0.9]) == [1.0, 1.0, 1.0]
    assert holm([]) == [] and holm([None]) == [None]
    assert holm([0.2]) == [0.2]


def test_no_torch_import() -> None:
    code = "import sys, harness.report.stats; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_welch_sees_constant_seeds_whose_variance_has_rounding():
    from harness.report.stats import welch

    # 0.7 three times has a float variance of ~1e-33, not 0: without the equality check scipy returned p ~ 1e-32
    assert welch([0.7] * 3, [0.3] * 3).p_value is None
    assert welch([0.1] * 3, [0.2] * 3).note == "no variance across seeds"
    assert welch([0.1] * 3, [0.1] * 3).p_value == 1.0


def test_named_columns_are_aligned_before_pairing():
    """Macro-F1 counts of two cells that each saw a label the other did not: lined up by label, not by position."""
    from harness_plugins.classification.scores import item_statistics

    refs = ["a", "b", "a", "b"]
    one = [{"id": str(i), "reference": r, "prediction": p} for i, (r, p) in enumerate(zip(refs, "abcb", strict=True))]
    two = [{"id": str(i), "reference": r, "prediction": p} for i, (r, p) in enumerate(zip(refs, "abad", strict=True))]
    a, b = item_statistics(one, "macro_f1", {}), item_statistics(two, "macro_f1", {})
    assert a.k == b.k == 9 and a.columns != b.columns  # {a, b, c} vs {a, b, d}: same width, different labels
    from harness.api.itemstats import align, pool
    from harness.report.stats import paired_randomization

    x, y = align([a, b])
    assert x.columns == y.columns and x.k == 12
    assert x.score() == pytest.approx(a.score()) and y.score() == pytest.approx(b.score())  # zeros change nothing
    assert paired_randomization(a, b, resamples=200).p_value is not None
    assert pool([a, b], [0, 1]).k == 12
