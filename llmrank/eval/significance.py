"""Paired significance tests on per-query scores, and Holm's correction across comparisons.

- :func:`paired_t_test`: Student's paired t-test, two-sided (``scipy.stats.ttest_rel`` when scipy is
  installed; otherwise the same statistic with the t distribution's CDF from the regularised incomplete
  beta function, computed here).
- :func:`paired_randomization_test`: Fisher's sign-flip randomization test on the mean paired difference
  (Smucker, Allan & Carterette, CIKM 2007, recommend it for IR): exact over all 2^n sign assignments for
  n ≤ ``exact_max`` queries, otherwise ``n_resamples`` random assignments with p = (1 + hits) / (1 + R).
- :func:`holm`: Holm–Bonferroni step-down adjusted p-values (Holm 1979), controlling the family-wise
  error over the rows compared against one baseline.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from llmrank.errors import LlmrankError


def _diffs(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise LlmrankError(f"paired test: the two score lists must have one value per query each ({a.shape} vs {b.shape})")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise LlmrankError("paired test: per-query scores contain NaN or infinity")
    return a - b


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) by Lentz's continued fraction (Numerical Recipes §6.4)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return math.exp(lbeta) * h / a


def t_sf_two_sided(t: float, df: int) -> float:
    """P(|T| ≥ |t|) for Student's t with ``df`` degrees of freedom."""
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def paired_t_test(a, b) -> tuple[float, float]:
    """``(t, p)`` of the two-sided paired t-test of mean(a − b) = 0. Identical lists give ``(0, 1)``;
    a constant non-zero difference gives ``(±inf, 0)``."""
    d = _diffs(a, b)
    n = len(d)
    if n < 2:
        raise LlmrankError(f"paired t-test: needs at least 2 queries, got {n}")
    sd = d.std(ddof=1)
    mean = d.mean()
    if sd == 0.0:
        return (0.0, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
    try:
        from scipy import stats
    except ImportError:
        t = float(mean / (sd / math.sqrt(n)))
        return t, float(t_sf_two_sided(t, n - 1))
    res = stats.ttest_rel(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return float(res.statistic), float(res.pvalue)


def paired_randomization_test(a, b, n_resamples: int = 10000, seed: int = 0, exact_max: int = 16) -> float:
    """Two-sided p-value of the sign-flip randomization test on mean(a − b): the share of sign assignments
    whose |mean| is at least the observed |mean| (the observed assignment counts)."""
    d = _diffs(a, b)
    n = len(d)
    if n == 0:
        raise LlmrankError("randomization test: no queries")
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, observed)
    if n <= exact_max:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        means = np.abs(signs @ d) / n
        return float(np.mean(means >= observed - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_resamples, 4096):
        m = min(4096, n_resamples - start)
        signs = rng.choice((1.0, -1.0), size=(m, n))
        hits += int(np.sum(np.abs(signs @ d) / n >= observed - tol))
    return (1 + hits) / (1 + n_resamples)


def holm(pvalues) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order: sorted ascending, the i-th (0-based) of m
    is multiplied by (m − i), made monotone non-decreasing, capped at 1."""
    p = [float(x) for x in pvalues]
    if any(not (0.0 <= x <= 1.0) for x in p):
        raise LlmrankError(f"Holm correction: p-values must lie in [0, 1], got {p}")
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted
