"""Resampling schemes: given log weights, choose N ancestor indices.

All four are unbiased — E[N_i] = N·W_i — and never choose a zero-weight particle. They
draw only through ``rng.uniform(breaks)``, naming the points where the result changes, so
their exact offspring law can be enumerated (``ppl.randomness.exact_law``).

* multinomial: N independent draws from W;
* stratified: one draw in each stratum [j/N, (j+1)/N);
* systematic: one shared offset u, positions (j+u)/N — N_i ∈ {⌊N W_i⌋, ⌈N W_i⌉};
* residual: ⌊N W_i⌋ copies each, the remaining R drawn multinomially from the residuals.
"""

from __future__ import annotations

import math

import numpy as np

from ppl.randomness import Randomness


def normalized_weights(log_weights) -> np.ndarray:
    """W_i = exp(log w_i) / Σ exp(log w_j); requires one positive weight."""
    log_weights = np.asarray(log_weights, dtype=np.float64)
    top = np.max(log_weights)
    if top == -math.inf or np.isnan(top):
        raise ValueError("cannot resample: every weight is zero")
    weights = np.exp(log_weights - top)
    return weights / weights.sum()


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    cdf[int(np.flatnonzero(weights > 0)[-1]) :] = 1.0
    return cdf


def _locate(cdf: np.ndarray, positions) -> np.ndarray:
    """Index i with cdf[i-1] <= position < cdf[i]; a position rounded up to 1.0 (possible for
    (j + u) / N with u just below one) goes to the last particle of positive weight."""
    last = int(np.searchsorted(cdf, 1.0, side="left"))
    return np.minimum(np.searchsorted(cdf, positions, side="right"), last)


def multinomial(log_weights, n: int, rng: Randomness) -> np.ndarray:
    cdf = _cdf(normalized_weights(log_weights))
    return np.array([_locate(cdf, rng.uniform(cdf[:-1])) for _ in range(n)], dtype=np.int64)


def stratified(log_weights, n: int, rng: Randomness) -> np.ndarray:
    cdf = _cdf(normalized_weights(log_weights))
    ancestors = []
    for j in range(n):
        breaks = n * cdf[:-1] - j
        u = rng.uniform(breaks[(breaks > 0) & (breaks < 1)])
        ancestors.append(_locate(cdf, (j + u) / n))
    return np.array(ancestors, dtype=np.int64)


def systematic(log_weights, n: int, rng: Randomness) -> np.ndarray:
    cdf = _cdf(normalized_weights(log_weights))
    scaled = n * cdf[:-1]
    u = rng.uniform(scaled - np.floor(scaled))
    return _locate(cdf, (np.arange(n) + u) / n).astype(np.int64)


def residual(log_weights, n: int, rng: Randomness) -> np.ndarray:
    weights = normalized_weights(log_weights)
    copies = np.floor(n * weights).astype(np.int64)
    ancestors = list(np.repeat(np.arange(len(weights)), copies))
    remaining = n - int(copies.sum())
    if remaining:
        residuals = n * weights - copies
        with np.errstate(divide="ignore"):
            ancestors.extend(multinomial(np.log(residuals), remaining, rng))
    return np.array(ancestors, dtype=np.int64)


SCHEMES = {
    "multinomial": multinomial,
    "stratified": stratified,
    "systematic": systematic,
    "residual": residual,
}
