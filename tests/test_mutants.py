"""Mutants must fail: deliberately broken interpreters are rejected by the same checks.

Each mutant patches one line's worth of behaviour — resampling with the wrong weights,
forgetting to divide a twist back out, adding an increment twice, not resetting weights
after resampling — and the exact unbiasedness check (invariant 5) or the resampling law
check (invariant 8) must see it. A distribution test that cannot fail is not a test.
"""

from __future__ import annotations

import math

import numpy as np

from ppl import scheduler
from ppl.algorithms import SMC, resampling
from ppl.algorithms import smc as smc_module

from test_resampling import offspring_means
from tiny import Tiny, expected_evidence, smc_law

CASES = [Tiny.make(2, 2, seed, 1.0, with_twist=True) for seed in range(4)]


def worst_bias(algorithm) -> float:
    """Largest |E[Ẑ] − Z| / Z over the fixed cases."""
    return max(
        abs(expected_evidence(smc_law(tiny, algorithm)) / math.exp(tiny.log_z()) - 1) for tiny in CASES
    )


def test_the_correct_interpreter_passes():
    assert worst_bias(SMC(2, resample="multinomial", ess_threshold=1.0)) < 1e-9


def test_mutant_resampling_with_uniform_weights_fails(monkeypatch):
    def uniform(log_weights):
        alive = np.isfinite(np.asarray(log_weights, dtype=float))
        return alive / alive.sum()

    monkeypatch.setattr(resampling, "normalized_weights", uniform)
    assert worst_bias(SMC(2, resample="multinomial", ess_threshold=1.0)) > 1e-3
    log_weights = [0.0, 1.0, -1.0]
    expected = 3 * np.exp(log_weights) / np.exp(log_weights).sum()
    assert np.max(np.abs(offspring_means("systematic", log_weights) - expected)) > 1e-3


def test_mutant_missing_final_untwist_fails(monkeypatch):
    monkeypatch.setattr(
        scheduler.Resume, "log_weight_at_end", lambda self: self.weights.total + self.weights.twist
    )
    assert worst_bias(SMC(2, resample="multinomial", ess_threshold=1.0)) > 1e-3


def test_keeping_twists_across_steps_only_changes_intermediate_targets(monkeypatch):
    """Not a mutant: twists that accumulate instead of being divided out at each barrier
    define other intermediate targets, and SMC stays unbiased as long as the end removes
    them. The check must not flag it — it would be a false alarm."""
    monkeypatch.setattr(scheduler.Resume, "untwist", lambda self: None)
    assert worst_bias(SMC(2, resample="multinomial", ess_threshold=1.0)) < 1e-9


def test_mutant_weight_added_twice_fails(monkeypatch):
    def twice(particle, total):
        increment = total - particle.anchor
        particle.log_weight += 2 * increment
        particle.anchor = total
        particle.increments.append(increment)

    monkeypatch.setattr(scheduler, "update_weight", twice)
    assert worst_bias(SMC(2, resample="multinomial", ess_threshold=0.5)) > 1e-3


def test_mutant_weights_not_reset_after_resampling_fails(monkeypatch):
    monkeypatch.setattr(smc_module, "log_mean_exp", lambda log_weights: 0.0)
    assert worst_bias(SMC(2, resample="systematic", ess_threshold=1.0)) > 1e-3
