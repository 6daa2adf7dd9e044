"""Invariant 8: resampling is unbiased — E[N_i] = N·W_i exactly — never picks a zero-weight
particle, and systematic resampling gives N_i ∈ {⌊N W_i⌋, ⌈N W_i⌉}. The offspring law of
each scheme is enumerated exactly from its own code (tolerance 1e-9), and cross-checked
against 5000 seeded draws (atol 0.02 on E[N_i] / N)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppl.algorithms.resampling import SCHEMES, normalized_weights
from ppl.randomness import SeededRandomness, exact_law

log_weight_lists = st.lists(st.one_of(st.floats(-4, 4), st.just(-math.inf)), min_size=1, max_size=4).filter(
    lambda ws: any(w > -math.inf for w in ws)
)


def offspring_law(scheme: str, log_weights, n: int | None = None):
    n = len(log_weights) if n is None else n
    return exact_law(
        lambda rng: np.bincount(SCHEMES[scheme](log_weights, n, rng), minlength=len(log_weights))
    )


def offspring_means(scheme: str, log_weights) -> np.ndarray:
    return sum(p * counts for p, counts in offspring_law(scheme, log_weights))


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@settings(max_examples=60)
@given(log_weights=log_weight_lists, extra=st.integers(0, 1))
def test_resampling_is_unbiased_exactly(scheme, log_weights, extra):
    n = len(log_weights) + extra
    weights = normalized_weights(log_weights)
    law = offspring_law(scheme, log_weights, n)
    assert sum(p for p, _ in law) == pytest.approx(1.0, abs=1e-10)
    means = sum(p * counts for p, counts in law)
    np.testing.assert_allclose(means, n * weights, atol=1e-9)
    for _, counts in law:
        assert counts.sum() == n
        assert np.all(counts[weights == 0] == 0), "a zero-weight particle was chosen"
        if scheme in ("systematic", "residual"):
            assert np.all(counts >= np.floor(n * weights - 1e-9))
        if scheme == "systematic":
            assert np.all(counts <= np.ceil(n * weights + 1e-9))


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_seeded_resampling_matches_the_exact_law(scheme):
    log_weights = np.log([0.5, 0.05, 0.3, 0.15])
    n, draws = 4, 5000
    totals = np.zeros(4)
    for seed in range(draws):
        totals += np.bincount(SCHEMES[scheme](log_weights, n, SeededRandomness(seed)), minlength=4)
    np.testing.assert_allclose(totals / draws / n, normalized_weights(log_weights), atol=0.02)


def test_resampling_all_zero_weights_is_an_error():
    with pytest.raises(ValueError, match="every weight is zero"):
        SCHEMES["multinomial"]([-math.inf, -math.inf], 2, SeededRandomness(0))


class _AtTheTop:
    """A 'random' source that always returns the largest float below one."""

    def uniform(self, breaks=None):
        return float(np.nextafter(1.0, 0.0))


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_zero_weights_at_the_end_are_never_chosen_even_at_u_near_one(scheme):
    """Rounding can leave the CDF just below one before trailing zero weights; a uniform
    draw in that sliver must still not pick them."""
    log_weights = [math.log(0.1)] * 10 + [-math.inf]
    assert np.cumsum(normalized_weights(log_weights))[-2] < 1.0  # the sliver exists
    ancestors = SCHEMES[scheme](log_weights, 11, _AtTheTop())
    assert ancestors.max() < 10


def test_scheme_names():
    assert sorted(SCHEMES) == ["multinomial", "residual", "stratified", "systematic"]
