"""Exact tests of SMC and importance sampling: the interpreters' own randomness enumerated.

Invariants (docs/design.md §5): 3 (zero reward gives the LM exactly: equal weights, Ẑ ≡ 1, no
resampling), 5 (E[Ẑ] = Z for every scheme and ESS threshold), 6 (E[log Ẑ] ≤ log Z),
7 (optimal twist and proposal: Ẑ = Z on every run), 14 (final weight = sum of the
incremental weights). Tolerance 1e-9 throughout: these are equalities in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ppl
from ppl.algorithms import SMC, ImportanceSampling
from ppl.backends.tabular import TabularLM

from tiny import Tiny, expected_evidence, smc_law, tinies

SCHEMES = ["multinomial", "stratified", "systematic", "residual"]
THRESHOLDS = [0.0, 0.5, 1.0]
TOL = 1e-9

# Small enough that the exact law of the whole run has at most a few thousand outcomes.
small_tinies = tinies(max_vocab=3, max_len=2)


def assert_unbiased(tiny: Tiny, algorithm) -> list:
    law = smc_law(tiny, algorithm)
    assert math.isclose(sum(p for p, _ in law), 1.0, abs_tol=TOL)
    assert expected_evidence(law) == pytest.approx(math.exp(tiny.log_z()), rel=TOL, abs=TOL)
    return law


@pytest.mark.parametrize("scheme", SCHEMES)
@settings(max_examples=20)
@given(tiny=small_tinies, particles=st.integers(1, 2), threshold=st.sampled_from(THRESHOLDS))
def test_smc_evidence_is_unbiased(scheme, tiny, particles, threshold):
    """Invariant 5 (and 6): E[Ẑ] = Z exactly; E[log Ẑ] ≤ log Z."""
    law = assert_unbiased(tiny, SMC(particles, resample=scheme, ess_threshold=threshold))
    expected_log = sum(p * post.log_evidence for p, post in law)
    assert expected_log <= tiny.log_z() + TOL


@pytest.mark.parametrize("scheme", SCHEMES)
def test_smc_evidence_is_unbiased_with_three_particles(scheme):
    """Invariant 5 at N = 3, where the schemes' offspring laws differ most."""
    tiny = Tiny.make(vocab_size=1, max_len=2, seed=7, beta=1.0, with_twist=True)
    assert_unbiased(tiny, SMC(3, resample=scheme, ess_threshold=1.0))


@settings(max_examples=15)
@given(tiny=small_tinies, particles=st.integers(1, 3))
def test_importance_sampling_evidence_is_unbiased(tiny, particles):
    if particles == 3:
        tiny = Tiny.make(1, tiny.max_len, 5, tiny.beta, tiny.twists is not None)
    assert_unbiased(tiny, ImportanceSampling(particles))


@settings(max_examples=15)
@given(
    tiny=tinies(max_vocab=2, max_len=2, betas=[math.inf], with_twist=False), scheme=st.sampled_from(SCHEMES)
)
def test_zero_reward_is_the_lm_exactly(tiny, scheme):
    """Invariant 3: with β = ∞ every weight stays equal, Ẑ ≡ 1 and nothing is resampled."""
    for _, post in smc_law(tiny, SMC(2, resample=scheme, ess_threshold=0.5)):
        assert post.log_evidence == pytest.approx(0.0, abs=TOL)
        assert np.allclose(post.log_weights, 0.0, atol=TOL)
        assert post.diagnostics.resampling_events == 0
        assert len(post.diagnostics.ess) == post.diagnostics.steps
        assert all(e == pytest.approx(2.0) for e in post.diagnostics.ess)


def optimal_proposal(tiny: Tiny):
    """The locally optimal proposal q*(v | x) ∝ p(v | x) V(x v) and twist ψ(x) = log V(x)."""
    eos = tiny.lm.eos_token_id
    size = len(tiny.lm.vocab)
    log_v = {}

    def value(prefix, finished):
        if finished or len(prefix) == tiny.max_len:
            return tiny.terminal(prefix)
        if prefix not in log_v:
            logp = tiny.lm.next_logprobs(prefix)
            terms = [logp[eos] + value(prefix, True)]
            terms += [logp[t] + value(prefix + (t,), False) for t in range(size)]
            log_v[prefix] = float(np.logaddexp.reduce(terms))
        return log_v[prefix]

    table = {}
    for prefix in [p for p in tiny.brute_force() if len(p) < tiny.max_len]:
        logp = tiny.lm.next_logprobs(prefix)
        table[prefix] = [logp[t] + value(prefix + (t,), False) for t in range(size)]
        table[prefix].append(logp[eos] + value(prefix, True))
    proposal = TabularLM(tiny.lm.vocab, table, order=tiny.max_len, name="optimal")
    twist = {p: v for p, v in log_v.items() if p}
    return proposal, twist, value((), False)


@settings(max_examples=25)
@given(tiny=tinies(max_vocab=3, max_len=3, betas=[0.25, 1.0, 4.0], with_twist=False))
def test_optimal_twist_gives_exact_evidence_every_run(tiny):
    """Invariant 7: with the optimal twist and proposal, Ẑ = Z on every run (N = 4, 3 seeds)."""
    proposal, twist, log_z = optimal_proposal(tiny)
    assert log_z == pytest.approx(tiny.log_z(), abs=TOL)
    program = tiny.program(proposal=proposal, twist=twist)
    for seed in range(3):
        post = SMC(4, resample="systematic", ess_threshold=1.0).run(program, [(tiny.lm,)], seed=seed)[0]
        assert post.log_evidence == pytest.approx(log_z, abs=TOL)
        assert np.allclose(post.log_weights, log_z, atol=TOL)


@settings(max_examples=25)
@given(tiny=tinies(with_twist=True), seed=st.integers(0, 1000), threshold=st.sampled_from(THRESHOLDS))
def test_twist_bookkeeping(tiny, seed, threshold):
    """Invariant 14: final weight = weight after the last resampling + its increments, and
    without resampling = Σ increments = the terminal score (twists cancel out)."""
    post = SMC(4, ess_threshold=threshold).run(tiny.program(), [(tiny.lm,)], seed=seed)[0]
    for particle in post.particles:
        terminal = sum(s.log_weight for s in particle.trace if s.kind == "score")
        assert terminal == pytest.approx(tiny.terminal(particle.value), abs=TOL)
        if threshold == 0.0:
            assert particle.log_weight == pytest.approx(terminal, abs=TOL)


def test_increments_sum_to_the_weight_without_resampling():
    tiny = Tiny.make(vocab_size=2, max_len=3, seed=11, beta=1.0, with_twist=True)
    algorithm = SMC(8, ess_threshold=0.0)
    scheduler_particles = []

    class Keep(SMC):
        def finish(self, run):
            scheduler_particles.extend(run.particles)
            return super().finish(run)

    Keep(8, ess_threshold=0.0).run(tiny.program(), [(tiny.lm,)], seed=3)
    assert algorithm.particles == len(scheduler_particles)
    for particle in scheduler_particles:
        assert particle.log_weight == pytest.approx(sum(particle.increments), abs=TOL)
        twists = [tiny.twists[particle.value[: i + 1]] for i in range(len(particle.value))]
        if len(particle.value) > 1:
            # the first increment carries the first step's twist, which the next one removes
            assert particle.increments[0] == pytest.approx(twists[0], abs=TOL)


def test_exact_law_enumerates_the_real_interpreter():
    """The enumerated law agrees with seeded runs of the same interpreter (χ²-free check)."""
    tiny = Tiny.make(vocab_size=2, max_len=2, seed=3, beta=1.0)
    algorithm = SMC(2, resample="multinomial", ess_threshold=1.0)
    law = smc_law(tiny, algorithm)
    exact = {}
    for p, post in law:
        key = round(post.log_evidence, 9)
        exact[key] = exact.get(key, 0.0) + p
    runs = 4000
    counts = {}
    for post in algorithm.run(tiny.program(), [(tiny.lm,)] * runs, seed=0):
        key = round(post.log_evidence, 9)
        counts[key] = counts.get(key, 0) + 1
    k = len(exact)
    epsilon = math.sqrt((k * math.log(2) + math.log(1e6)) / (2 * runs))
    tv = 0.5 * sum(abs(exact.get(x, 0) - counts.get(x, 0) / runs) for x in set(exact) | set(counts))
    assert set(counts) <= set(exact)
    assert tv < epsilon, (tv, epsilon)


def test_program_and_interpreter_state_is_not_shared_between_runs():
    tiny = Tiny.make(vocab_size=2, max_len=2, seed=3, beta=1.0)
    a = SMC(3).run(tiny.program(), [(tiny.lm,)], seed=5)[0]
    b = SMC(3).run(tiny.program(), [(tiny.lm,)], seed=5)[0]
    assert a.values == b.values and list(a.log_weights) == list(b.log_weights)
    assert isinstance(a, ppl.Posterior)


@pytest.mark.parametrize("threshold, expected", [(0.0, [False, False]), (1.0, [True, True])])
def test_diagnostics_record_every_barrier(threshold, expected):
    """One ESS and one resampling decision per step barrier, in order."""
    tiny = Tiny.make(vocab_size=3, max_len=3, seed=2, beta=1.0, with_twist=True)
    post = SMC(64, resample="residual", ess_threshold=threshold).run(tiny.program(), [(tiny.lm,)], seed=0)[0]
    d = post.diagnostics
    assert d.algorithm == "smc" and d.particles == 64
    assert d.steps == 2 and d.resampled == expected and d.resampling_events == sum(expected)
    assert len(d.ess) == 2 and all(0 < e <= 64 for e in d.ess)
