"""Confidence intervals shared by the quality reports: every number a user acts on comes with one.

A prompt change that moves gold accuracy from 0.82 to 0.85 on 60 items is noise; the same move
on 5,000 items is not. So metrics are reported as intervals, computed the cheapest honest way:
Wilson for a proportion (exact enough at any n, never outside [0, 1]), the Poisson-binomial
distribution for "how many of these posteriors will be right", and a vectorized bootstrap
(items resampled with replacement, as count weights) for everything else.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.stats import norm

FloatArray = NDArray[np.float64]

EXACT_POISSON_BINOMIAL_MAX = 3000  # above this the normal approximation is exact to 3 decimals


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval (NaN when there is nothing to estimate)."""

    estimate: float
    low: float
    high: float
    n: int = 0

    def __str__(self) -> str:
        if math.isnan(self.estimate):
            return "-"
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def as_dict(self) -> dict[str, float | int | None]:
        def clean(x: float) -> float | None:
            return None if math.isnan(x) else round(float(x), 6)

        return {"estimate": clean(self.estimate), "low": clean(self.low), "high": clean(self.high), "n": self.n}


NAN_INTERVAL = Interval(math.nan, math.nan, math.nan, 0)


def z_value(confidence: float) -> float:
    return float(norm.ppf(0.5 + confidence / 2))


def wilson_interval(correct: float, total: float, confidence: float = 0.95) -> Interval:
    """Wilson score interval of a proportion."""
    if total <= 0:
        return NAN_INTERVAL
    z = z_value(confidence)
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    margin = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return Interval(p, max(0.0, centre - margin), min(1.0, centre + margin), int(total))


def poisson_binomial_interval(p: FloatArray, confidence: float = 0.95) -> Interval:
    """Share of successes among independent trials with success probabilities ``p``.

    Used for "what accuracy do these posteriors promise": if each final item is right with
    its posterior, the number right is Poisson-binomial. Exact (by convolution) up to
    ``EXACT_POISSON_BINOMIAL_MAX`` trials, normal beyond (where it is indistinguishable).
    """
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    n = p.shape[0]
    if n == 0:
        return NAN_INTERVAL
    mean = float(p.mean())
    tail = (1 - confidence) / 2
    if n <= EXACT_POISSON_BINOMIAL_MAX:
        pmf = np.zeros(n + 1)
        pmf[0] = 1.0
        for i, pi in enumerate(p):  # pmf of the count after i+1 trials, in place
            pmf[1 : i + 2] = pmf[1 : i + 2] * (1 - pi) + pmf[: i + 1] * pi
            pmf[0] *= 1 - pi
        cdf = np.cumsum(pmf)
        low = int(np.searchsorted(cdf, tail - 1e-12))
        high = int(np.searchsorted(cdf, 1 - tail - 1e-12))
        # the share right is discrete: keep its expectation inside the interval
        return Interval(mean, min(low / n, mean), max(min(high, n) / n, mean), n)
    sd = math.sqrt(float((p * (1 - p)).sum())) / n
    z = z_value(confidence)
    return Interval(mean, max(0.0, mean - z * sd), min(1.0, mean + z * sd), n)


def percentile_interval(estimate: float, samples: FloatArray, n: int, confidence: float = 0.95) -> Interval:
    """Percentile bootstrap interval around ``estimate``; resamples where the statistic is
    undefined (NaN, e.g. no pair of raters) are left out."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[~np.isnan(s)]
    if math.isnan(estimate) or s.size == 0:
        return Interval(estimate, math.nan, math.nan, n)
    tail = (1 - confidence) / 2
    low, high = np.quantile(s, [tail, 1 - tail])
    return Interval(float(estimate), float(low), float(high), n)


def bootstrap_weights(n: int, n_boot: int, seed: int = 0, chunk_cells: int = 4_000_000) -> Iterator[FloatArray]:
    """Bootstrap resamples of ``n`` items as count weights, in chunks of rows.

    A resample drawn as indices then turned into counts (how often each item was drawn) lets
    every statistic that is a sum over items be computed as one matrix product for a whole
    chunk of resamples; the chunk size keeps (rows × n) under ``chunk_cells``.
    """
    rng = np.random.default_rng(seed)
    rows = max(1, min(n_boot, chunk_cells // max(n, 1)))
    done = 0
    while done < n_boot:
        b = min(rows, n_boot - done)
        draws = rng.integers(0, n, size=(b, n), dtype=np.int32) if n else np.zeros((b, 0), dtype=np.int32)
        offsets = (np.arange(b, dtype=np.int64) * n)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=b * n).reshape(b, n)
        yield counts.astype(np.float64)
        done += b


def affordable_boot(n_boot: int, n_units: int, *, budget: float = 2e7, minimum: int = 100) -> int:
    """Resamples to draw so that resamples × units stays near ``budget`` (but at least
    ``minimum``): a thousand resamples of a million items would cost more than the report, and
    at that size the interval is a few thousandths wide, which a hundred resamples place well."""
    return int(min(n_boot, max(minimum, budget // max(n_units, 1))))
