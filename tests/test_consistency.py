"""Seeded Monte Carlo checks with sound tolerances (docs/design.md §5, technique 3).

Invariant 9: the weighted particle law approaches π as N grows. Invariant 3 (samples):
with zero reward, SMC's outputs follow the LM. For n iid draws over K outcomes, the total
variation to the true law is below ε = sqrt((K ln 2 + ln(1/δ)) / (2n)) with probability
1 − δ; δ = 1e-6 here. Fixed seeds, so these never flake.
"""

from __future__ import annotations

import math

import pytest

from ppl.algorithms import SMC, ImportanceSampling

from tiny import Tiny, total_variation, weighted_law

DELTA = 1e-6


def epsilon(k: int, n: int) -> float:
    return math.sqrt((k * math.log(2) + math.log(1 / DELTA)) / (2 * n))


def sampled_law(posteriors) -> dict:
    """One draw ∝ weight from each independent run: iid draws from SMC's output law."""
    law: dict = {}
    for post in posteriors:
        value = post.sample(1, seed=0)[0]
        law[value] = law.get(value, 0) + 1 / len(posteriors)
    return law


@pytest.mark.parametrize("scheme", ["multinomial", "systematic", "stratified", "residual"])
def test_weighted_particles_approach_the_posterior(scheme):
    """Invariant 9: TV(weighted law, π) shrinks from N = 16 to N = 1024 (≈ 1/√N: by about
    8×; we require 4×) and ends small. The twists here are random, so the ESS falls to
    ~65 of 1024 at the second step: the N = 1024 law is pooled over 4 runs."""
    tiny = Tiny.make(vocab_size=3, max_len=3, seed=21, beta=1.0, with_twist=True)
    exact = tiny.posterior()
    program = tiny.program()
    small = SMC(16, resample=scheme).run(program, [(tiny.lm,)] * 200, seed=1)
    large = SMC(1024, resample=scheme).run(program, [(tiny.lm,)] * 4, seed=2)
    tv_small = sum(total_variation(weighted_law([p]), exact) for p in small) / len(small)
    tv_large = total_variation(weighted_law(list(large)), exact)
    assert tv_large < 0.1, tv_large
    assert tv_large < tv_small / 4, (tv_small, tv_large)


def test_smc_output_law_is_the_posterior():
    """One draw per independent SMC run (N = 8): iid from SMC's output law; within ε of π + O(1/N)."""
    tiny = Tiny.make(vocab_size=2, max_len=3, seed=5, beta=1.0, with_twist=True)
    exact = tiny.posterior()
    runs = 3000
    law = sampled_law(SMC(8, resample="systematic").run(tiny.program(), [(tiny.lm,)] * runs, seed=3))
    bias_allowance = 0.05  # SMC's output law is π only as N → ∞; at N = 8 the bias is small
    assert total_variation(law, exact) < epsilon(len(exact), runs) + bias_allowance


def test_zero_reward_samples_follow_the_lm():
    """Invariant 3: with β = ∞, particles are exact draws from the LM (χ²-free TV bound)."""
    tiny = Tiny.make(vocab_size=3, max_len=3, seed=8, beta=math.inf)
    exact = tiny.posterior()
    post = SMC(4000, resample="multinomial").run(tiny.program(), [(tiny.lm,)], seed=4)[0]
    empirical: dict = {}
    for value in post.values:
        empirical[value] = empirical.get(value, 0) + 1 / len(post.values)
    assert post.diagnostics.resampling_events == 0
    assert total_variation(empirical, exact) < epsilon(len(exact), 4000)


def test_mutant_uniform_resampling_is_inconsistent(monkeypatch):
    """The consistency check sees resampling that ignores the weights."""
    import numpy as np

    from ppl.algorithms import resampling

    tiny = Tiny.make(vocab_size=3, max_len=3, seed=21, beta=1.0, with_twist=True)
    exact = tiny.posterior()
    algorithm = SMC(1024, ess_threshold=1.0)
    correct = algorithm.run(tiny.program(), [(tiny.lm,)] * 4, seed=2)
    assert total_variation(weighted_law(list(correct)), exact) < 0.1
    monkeypatch.setattr(resampling, "normalized_weights", lambda lw: np.ones(len(lw)) / len(lw))
    mutant = algorithm.run(tiny.program(), [(tiny.lm,)] * 4, seed=2)
    assert total_variation(weighted_law(list(mutant)), exact) > 0.15


def test_importance_sampling_is_consistent():
    tiny = Tiny.make(vocab_size=2, max_len=3, seed=9, beta=1.0)
    post = ImportanceSampling(4000).run(tiny.program(), [(tiny.lm,)], seed=6)[0]
    assert total_variation(weighted_law([post]), tiny.posterior()) < 0.05
