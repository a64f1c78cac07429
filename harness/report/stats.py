"""Statistics behind ``harness report``: seed summaries, paired significance tests and multiple-comparison control.

Every number a report prints comes from one of the methods below; a paper can cite them as written here.

Summary over seeds (:func:`describe`)
    Mean, sample standard deviation (Bessel-corrected, ``ddof=1``; 0 for a single seed) and a two-sided Student-t
    confidence interval ``mean ± t_{(1+c)/2, n-1} · s / √n`` (default ``c = 0.95``; quantile from
    ``scipy.stats.t.ppf``). No interval for fewer than 2 seeds. See :data:`CI_METHOD`.

Paired approximate randomisation over test items (:func:`paired_randomization`)
    Two-sided approximate randomisation test (Noreen 1989), as used for MT/NLP metrics that are not means of
    per-item scores (Riezler & Maxwell 2005; Dror et al. 2018). Each test item contributes a row of additive
    sufficient statistics (:class:`ItemStats`, e.g. ``[correct, 1]`` for accuracy, ``[tp, n_pred, n_gold]`` for
    entity F1, sacreBLEU's sentence statistics for corpus BLEU); a metric maps the column sums to the score, so the
    corpus-level metric is recomputed exactly in every resample. Items are paired by id across the two systems;
    under H0 the two systems' rows of each pair are exchangeable, so each resample swaps every pair's rows with
    probability 1/2 (independently, from ``numpy.random.default_rng(seed)``) and recomputes
    ``|Δ| = |metric(Σa) − metric(Σb)|``. The p-value is ``(#{r : |Δ_r| ≥ |Δ_obs|} + 1) / (R + 1)`` (the add-one
    estimate of Phipson & Smyth 2010, never 0), with ties within 1e-12 absolute or 1e-9 relative counted as at least as
    extreme, and a resample whose metric is undefined (NaN) counted as extreme (conservative). Several seeds are
    tested together by pooling their items as (seed, item) units (:func:`harness.api.itemstats.pool`): the pooled
    metric is then the metric over all seeds' predictions together (e.g. micro-averaged), not the mean of per-seed metrics.
    Default 10,000 resamples, giving a Monte-Carlo standard error of at most 0.005 on the p-value.

Welch's t-test over seeds (:func:`welch`)
    Two-sided unequal-variances t-test (Welch 1947) on one value per seed, via
    ``scipy.stats.ttest_ind(equal_var=False)`` (Welch–Satterthwaite degrees of freedom). Needs 2 seeds per side.

Holm–Bonferroni adjustment (:func:`holm`)
    Step-down adjusted p-values (Holm 1979) for the family of comparisons in one report: sort the m available
    p-values ascending, ``p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j))``; controls the family-wise error rate
    under any dependence between the tests.

References
    Noreen, E. W. (1989). *Computer-Intensive Methods for Testing Hypotheses: An Introduction.* Wiley.
    Riezler, S. & Maxwell, J. T. (2005). On some pitfalls in automatic evaluation and significance testing for MT.
    *ACL Workshop on Intrinsic and Extrinsic Evaluation Measures for MT and/or Summarization*, 57–64.
    Dror, R., Baumer, G., Shlomov, S. & Reichart, R. (2018). The hitchhiker's guide to testing statistical
    significance in natural language processing. *ACL 2018*, 1383–1392.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. *Statistical Applications in
    Genetics and Molecular Biology* 9(1), article 39.
    Welch, B. L. (1947). The generalization of "Student's" problem when several different population variances
    are involved. *Biometrika* 34(1–2), 28–35.
    Holm, S. (1979). A simple sequentially rejective multiple test procedure. *Scandinavian Journal of
    Statistics* 6(2), 65–70.

Only numpy and scipy are used (no torch), so reports run anywhere.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as _sps

from harness.api.itemstats import ItemStats, align

CI_METHOD = "95% Student-t interval over seeds (mean ± t(0.975, n-1)·s/√n)"
DEFAULT_RESAMPLES = 10_000
#: Format with ``resamples=R``; :func:`paired_randomization` puts the formatted text in ``TestResult.method``.
RANDOMIZATION_METHOD = "paired approximate randomisation, {resamples:,} resamples, two-sided"
WELCH_METHOD = "Welch's t-test over seeds, two-sided"
HOLM_METHOD = "Holm–Bonferroni step-down adjustment"

#: Memory for one chunk of resamples (swap masks as float64 plus their packed random bits), bytes.
_CHUNK_BYTES = 32 * 2**20
_ABS_TOL = 1e-12
_REL_TOL = 1e-9


@dataclass(frozen=True)
class Describe:
    """Mean, sample standard deviation and Student-t confidence interval of one value per seed."""

    mean: float
    std: float
    n: int
    ci_low: float | None
    ci_high: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def describe(values: Sequence[float], confidence: float = 0.95) -> Describe | None:
    """Summarise ``values`` (one per seed); None when there are none. See the module docstring for the method."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    x = np.asarray(values, dtype=np.float64).ravel()
    n = int(x.size)
    if n == 0:
        return None
    mean = float(x.mean())
    if n < 2:
        return Describe(mean=mean, std=0.0, n=n, ci_low=None, ci_high=None)
    std = float(x.std(ddof=1))
    half = float(_sps.t.ppf((1.0 + confidence) / 2.0, n - 1)) * std / math.sqrt(n)
    return Describe(mean=mean, std=std, n=n, ci_low=mean - half, ci_high=mean + half)


@dataclass(frozen=True)
class TestResult:
    """Outcome of one two-sided test of strategy a against strategy b.

    ``delta`` is a − b (metric on the paired items, or mean over seeds for :func:`welch`); ``n`` is the number of
    paired items (randomisation) or the smaller side's number of seeds (Welch); ``note`` explains a missing p-value
    or a partial pairing.
    """

    __test__ = False  # not a pytest test class

    method: str
    p_value: float | None
    delta: float | None
    n: int
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def paired_randomization(a: ItemStats, b: ItemStats, resamples: int = DEFAULT_RESAMPLES,
                         seed: int = 0) -> TestResult:
    """Two-sided paired approximate randomisation test of ``a``'s metric against ``b``'s on items paired by id.

    Items are the ids in both (``a``'s order); ``a``'s metric scores both sides. Reproducible for a given ``seed``.
    Implemented with numpy rather than ``scipy.stats.permutation_test(permutation_type="samples")``: scipy permutes
    scalar observations and reduces over the item axis, so vector-valued rows need an index-array workaround, and its
    "samples" path loops over the items in Python per batch (about 20 s for 20,000 items × 10,000 resamples, against
    well under a second here). Here, with swap masks ``M`` (R × n of 0/1) and ``D = b − a`` (n × k),
    ``Σa' = Σa + M D`` and ``Σb' = Σb − M D``, in chunks of about 32 MiB.
    """
    method = RANDOMIZATION_METHOD.format(resamples=resamples)
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    a, b = align([a, b])
    if a.k != b.k:
        raise ValueError(f"a has k={a.k} statistics per item but b has k={b.k}")
    b_ids = set(b.ids)
    common = [i for i in a.ids if i in b_ids]
    if not common:
        return TestResult(method, None, None, 0, note=f"no test items in common ({len(a)} vs {len(b)} items)")
    note = None
    if len(common) < len(a) or len(common) < len(b):
        note = f"paired {len(common)} items by id of {len(a)} (a) and {len(b)} (b)"
    pa, pb = a.select(common), b.select(common)
    sum_a, sum_b = pa.values.sum(axis=0), pb.values.sum(axis=0)
    delta = float(pa.metric(sum_a)) - float(pa.metric(sum_b))
    observed_pair = pa.scores(np.stack([sum_a, sum_b]))
    observed = abs(float(observed_pair[0] - observed_pair[1]))
    if not math.isfinite(observed):
        return TestResult(method, None, None if not math.isfinite(delta) else delta, len(common),
                          note="metric undefined on the paired items")

    diff = pb.values - pa.values  # (n, k)
    n = len(common)
    threshold = observed - max(_ABS_TOL, _REL_TOL * observed)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, _CHUNK_BYTES // (9 * n)))
    buffer = np.empty((chunk, n), dtype=np.float64)
    extreme = 0
    done = 0
    while done < resamples:
        r = min(chunk, resamples - done)
        # One fair random bit per (resample, item): 1 swaps that item's rows between a and b.
        bits = np.unpackbits(rng.integers(0, 256, size=(r, (n + 7) // 8), dtype=np.uint8), axis=1, count=n)
        masks = buffer[:r]
        np.copyto(masks, bits)
        shift = masks @ diff  # (r, k)
        scores = pa.scores(np.concatenate([sum_a + shift, sum_b - shift], axis=0))
        null = np.abs(scores[:r] - scores[r:])
        extreme += int(np.count_nonzero(~(null < threshold)))  # NaN counts as extreme
        done += r
    return TestResult(method, (extreme + 1) / (resamples + 1), delta, n, note)


def welch(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Welch's two-sided t-test of ``a``'s seed values against ``b``'s; ``delta = mean(a) − mean(b)``."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    n = int(min(x.size, y.size))
    delta = float(x.mean() - y.mean()) if x.size and y.size else None
    if x.size < 2 or y.size < 2:
        return TestResult(WELCH_METHOD, None, delta, n, note="needs at least 2 seeds per side")
    # constant sides by equality, not by var() == 0: equal values can carry rounding in their variance
    x_constant, y_constant = bool(np.all(x == x[0])), bool(np.all(y == y[0]))
    if x_constant and y_constant:
        if x[0] == y[0]:
            return TestResult(WELCH_METHOD, 1.0, delta, n, note="no variance across seeds; equal means")
        return TestResult(WELCH_METHOD, None, delta, n, note="no variance across seeds")
    with warnings.catch_warnings():
        if x_constant or y_constant:  # one constant side is exact; scipy still warns of precision loss
            warnings.simplefilter("ignore", RuntimeWarning)
        p = float(_sps.ttest_ind(x, y, equal_var=False).pvalue)
    if not math.isfinite(p):
        return TestResult(WELCH_METHOD, None, delta, n, note="t-test undefined for these values")
    return TestResult(WELCH_METHOD, p, delta, n)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values, in input order; None stays None and does not count towards m.

    scipy has no Holm adjustment (``scipy.stats.false_discovery_control`` is Benjamini–Hochberg/Yekutieli only) and
    statsmodels is not a dependency, hence these few lines.
    """
    present = [(p, i) for i, p in enumerate(p_values) if p is not None]
    m = len(present)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present, key=lambda t: t[0])):
        running = max(running, min(1.0, (m - rank) * float(p)))
        out[i] = running
    return out
