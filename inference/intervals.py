"""95% intervals for pass-rates and gains (pure maths: numpy only).

- ``rate_interval(passes, groups)``: a pass-rate over prompts, by a bootstrap over prompts that
  resamples within each group (task), so every resample keeps the set's task balance.
- ``paired_gain(before, after, groups)``: ``mean(after) - mean(before)`` on the same prompts, by a
  paired bootstrap: one resample of prompts scores both models, so what the prompts share cancels.
- ``seed_interval(values)``: mean, min, max and a Student-t interval of one figure across seeds.

Bootstraps are percentile intervals with a fixed seed (the same inputs give the same interval).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 4000
# two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


def _strata(groups: Optional[Sequence[str]], n: int) -> list[np.ndarray]:
    if groups is None:
        return [np.arange(n)]
    if len(groups) != n:
        raise ValueError(f"{n} values but {len(groups)} groups")
    by: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by.setdefault(g, []).append(i)
    return [np.array(v) for _, v in sorted(by.items())]


def _resampled_means(values: np.ndarray, strata: list[np.ndarray], resamples: int, seed: int) -> np.ndarray:
    """[resamples]: the mean of ``values`` [n] or of each column pair's difference, over resamples that
    draw each stratum's indices with replacement (stratum sizes kept)."""
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    for idx in strata:
        draw = rng.integers(0, len(idx), size=(resamples, len(idx)))
        total += values[idx][draw].sum(1)
    return total / len(values)


def _percentiles(means: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def rate_interval(passes: Sequence[float], groups: Optional[Sequence[str]] = None, level: float = LEVEL,
                  resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """(lo, hi) of the mean of ``passes`` (0/1 per prompt), bootstrapped within ``groups``."""
    v = np.asarray(passes, dtype=float)
    if v.size == 0:
        raise ValueError("no prompts to put an interval on")
    return _percentiles(_resampled_means(v, _strata(groups, v.size), resamples, seed), level)


def paired_gain(before: Sequence[float], after: Sequence[float], groups: Optional[Sequence[str]] = None,
                level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """{gain, lo, hi, n}: ``mean(after) - mean(before)`` over the same prompts (in the same order) with a
    paired bootstrap interval."""
    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if b.shape != a.shape or b.size == 0:
        raise ValueError(f"paired gain needs two equally long non-empty score lists, got {b.size} and {a.size}")
    d = a - b
    lo, hi = _percentiles(_resampled_means(d, _strata(groups, d.size), resamples, seed), level)
    return {"gain": float(d.mean()), "lo": lo, "hi": hi, "n": int(d.size)}


def seed_interval(values: Sequence[float]) -> dict:
    """{mean, min, max, n, lo, hi}: a figure over seeds, with mean +- t(0.975, n-1) * sd / sqrt(n)
    (lo = hi = mean for one seed: no spread to read)."""
    v = [float(x) for x in values]
    if not v:
        raise ValueError("no values")
    n, mean = len(v), sum(v) / len(v)
    out = {"mean": mean, "min": min(v), "max": max(v), "n": n, "lo": mean, "hi": mean}
    if n > 1:
        sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
        t = _T975[n - 2] if n - 1 <= len(_T975) else 1.960
        out["lo"], out["hi"] = mean - t * sd / math.sqrt(n), mean + t * sd / math.sqrt(n)
    return out


def interval_text(lo: float, hi: float, signed: bool = False) -> str:
    """``[lo, hi]`` in points: ``+2.5 .. +11.3`` for gains, ``31.2 .. 40.1`` for rates."""
    f = (lambda x: f"{100 * x:+.1f}") if signed else (lambda x: f"{100 * x:.1f}")
    return f"{f(lo)} .. {f(hi)}"
