"""Inequality and heavy tails of contributions: the Gini coefficient and a power-law fit
(Clauset, Shalizi and Newman 2009: maximum likelihood exponent, x_min chosen by the smallest
Kolmogorov-Smirnov distance)."""

from __future__ import annotations

import math
from collections.abc import Iterable


def gini(values: Iterable[float]) -> float | None:
    xs = sorted(float(v) for v in values)
    n, total = len(xs), sum(xs)
    if n == 0 or total <= 0:
        return None
    weighted = sum((i + 1) * x for i, x in enumerate(xs))
    return (2 * weighted) / (n * total) - (n + 1) / n


def powerlaw_fit(values: Iterable[float], min_tail: int = 10) -> dict[str, float] | None:
    """{"alpha", "xmin", "ks", "n_tail"} for the tail of positive integer-like counts, or None
    when there are too few points. Discrete data are fitted with the continuous estimator
    shifted by 1/2 (Clauset et al., eq. 3.7), good enough for x_min of a few and more."""
    xs = sorted(float(v) for v in values if v > 0)
    if len(xs) < min_tail:
        return None
    min_tail = max(min_tail, len(xs) // 20)  # a tail of a handful of points fits anything
    best: dict[str, float] | None = None
    for xmin in sorted(set(xs)):
        tail = [x for x in xs if x >= xmin]
        if len(tail) < min_tail:
            break
        denom = sum(math.log(x / (xmin - 0.5)) for x in tail)
        if denom <= 0:
            continue
        alpha = 1 + len(tail) / denom
        # KS distance between the empirical and the fitted CDF over the tail
        ks, n = 0.0, len(tail)
        for i, x in enumerate(tail):
            fitted = 1 - ((x - 0.5) / (xmin - 0.5)) ** (1 - alpha) if x > xmin else 0.0
            ks = max(ks, abs((i + 1) / n - fitted), abs(i / n - fitted))
        if best is None or ks < best["ks"]:
            best = {"alpha": alpha, "xmin": xmin, "ks": ks, "n_tail": float(n)}
    return best
