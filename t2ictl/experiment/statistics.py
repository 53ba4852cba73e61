"""Seed statistics of an experiment: mean and standard deviation per arm, and a paired t-test of each arm against
the first, seed by seed (the same seed gives both arms the same data order, initial draws and noise keys)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # sample standard deviation (n - 1); nan for one seed
    n: int


@dataclass(frozen=True)
class Paired:
    """Arm minus baseline over the seeds both have."""
    difference: float  # mean of the per-seed differences
    relative: float  # difference / baseline mean
    low: float  # 95% confidence interval of the mean difference
    high: float
    p_value: float  # two-sided paired t-test; nan below two seeds
    n: int


def summarize(values: list[float]) -> Summary:
    x = np.asarray(values, np.float64)
    return Summary(float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan, len(x))


def paired(arm: dict[int, float], baseline: dict[int, float]) -> Paired | None:
    """Paired by seed; None when the two share no seed."""
    seeds = sorted(arm.keys() & baseline.keys())
    if not seeds:
        return None
    d = np.array([arm[s] - baseline[s] for s in seeds], np.float64)
    base = float(np.mean([baseline[s] for s in seeds]))
    relative = float(d.mean() / abs(base)) if base else math.nan
    n = len(d)
    if n < 2:
        return Paired(float(d.mean()), relative, math.nan, math.nan, math.nan, n)
    error = d.std(ddof=1) / math.sqrt(n)
    half = stats.t.ppf(0.975, n - 1) * error
    if error == 0:
        p = 1.0 if d.mean() == 0 else 0.0
    else:
        p = float(2 * stats.t.sf(abs(d.mean() / error), n - 1))
    return Paired(float(d.mean()), relative, float(d.mean() - half), float(d.mean() + half), p, n)


def smallest_detectable(n: int) -> float:
    """How many standard errors a mean paired difference must lie from zero to reach p < 0.05 with n seeds."""
    return float(stats.t.ppf(0.975, n - 1)) if n > 1 else math.inf
