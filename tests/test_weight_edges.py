"""Weights at their edges, the same under every interpreter (docs/design.md, "Weights").

Found by an audit against the public API, each with a test here:

- particle Gibbs's ``log_evidence`` is its first sweep's unbiased log Ẑ (E[Ẑ] = Z exactly,
  the randomness enumerated); the mutant that resets weights to zero after resampling fails;
- ``twist(-inf)`` kills the particle with a reason, as ``condition(False)`` does, under
  every interpreter — never a NaN weight, a crash or an empty result;
- scores that are each finite but sum past the float range kill the particle with a
  reason, never a NaN log Ẑ or a crash in resampling;
- beam search returns the highest-weight runs, not the mode of π;
- silent coercions are refused: ``ess_threshold=True``, ``score("1.5")``, ``max_tokens=2.9``.
"""

from __future__ import annotations

import math

import pytest

import ppl
from ppl.algorithms import (
    DVTS,
    MH,
    SMC,
    BeamSearch,
    Enumeration,
    ImportanceSampling,
    ParticleGibbs,
    enumerate_program,
)
from ppl.backends import TabularLM
from ppl.randomness import FixedSource, exact_law

TOL = 1e-9


def coin() -> TabularLM:
    """Fair coin tokens "a"/"b", never ending on its own."""
    row = {"a": 1, "b": 1}
    return TabularLM.bigram({"<s>": row, "a": row, "b": row}, name="coin")


@ppl.program
def two_coins(lm):
    ctx = ()
    for _ in ppl.steps(max=2):
        s = ppl.gen(lm, ctx, max_tokens=1)
        ctx += s.token_ids
        ppl.score(1.0 if s.text == "a" else 0.0)
    return lm.decode(ctx)


def exact_expected_evidence(algorithm, program, lm) -> float:
    def run(rng):
        return algorithm.run(program, [(lm.with_randomness(rng),)], randomness=FixedSource(rng))[0]

    return sum(p * math.exp(post.log_evidence) for p, post in exact_law(run))


# --- particle Gibbs's evidence ------------------------------------------------------------


def test_the_coin_example_has_the_stated_evidence():
    assert enumerate_program(two_coins, (coin(),)).log_evidence == pytest.approx(1.2402, abs=1e-4)


@pytest.mark.parametrize("particles", [2, 3])
def test_particle_gibbs_log_evidence_is_the_first_sweeps_unbiased_estimate(particles):
    lm = coin()
    z = math.exp(enumerate_program(two_coins, (lm,)).log_evidence)
    assert exact_expected_evidence(ParticleGibbs(particles, sweeps=1), two_coins, lm) == pytest.approx(
        z, rel=TOL
    )


def test_resetting_weights_to_zero_after_resampling_is_caught():
    """The bug the audit found: children's weights set to 0, only the last step averaged."""

    class ResetToZero(ParticleGibbs):
        def resampled_weight(self, log_weights, conditional):
            return 0.0

    lm = coin()
    z = math.exp(enumerate_program(two_coins, (lm,)).log_evidence)
    assert abs(exact_expected_evidence(ResetToZero(2, sweeps=1), two_coins, lm) - z) > 0.1


def test_particle_gibbs_evidence_is_close_to_log_z_with_many_particles():
    post = ParticleGibbs(4000, sweeps=1).run(two_coins, [(coin(),)], seed=0)[0]
    assert post.log_evidence == pytest.approx(1.2402, abs=0.03)


# --- twist(-inf) -------------------------------------------------------------------------------


@ppl.program
def no_b_first(lm):
    """A twist of −∞ on every prefix that starts with "b": only "a…" runs are valid."""
    ctx = ()
    for _ in ppl.steps(max=2):
        s = ppl.gen(lm, ctx, max_tokens=1)
        ctx += s.token_ids
        ppl.twist(-math.inf if lm.decode(ctx).startswith("b") else 0.0)
        ppl.score(0.5 if s.text == "a" else 0.0)
    return lm.decode(ctx)


INTERPRETERS = [
    ImportanceSampling(16),
    SMC(16, ess_threshold=1.0),
    SMC(16, ess_threshold=0.0),
    ParticleGibbs(4, sweeps=3),
    ParticleGibbs(4, sweeps=2, rejuvenate=2),
    MH(chains=4, steps=6),
    MH(chains=4, steps=6, proposal="independent"),
    BeamSearch(beams=2, expand=2),
    DVTS(subtrees=2, expand=2),
]


@pytest.mark.parametrize("algorithm", INTERPRETERS, ids=repr)
def test_a_twist_of_minus_infinity_kills_the_particle_with_a_reason(algorithm):
    post = algorithm.run(no_b_first, [(coin(),)], seed=3)[0]
    log_weights = [p.log_weight for p in post.particles]
    assert post.particles, "a result with no particles"
    assert not any(math.isnan(w) for w in log_weights)
    assert post.log_evidence is None or not math.isnan(post.log_evidence)
    for particle in post.particles:
        if particle.log_weight > -math.inf:
            assert particle.value.startswith("a")
        else:
            assert "twist" in particle.error
    assert all("twist" in reason for reason in post.diagnostics.deaths)
    assert any(w > -math.inf for w in log_weights)


def test_a_twist_of_minus_infinity_is_a_zero_under_exact_enumeration_too():
    exact = Enumeration().run(no_b_first, [(coin(),)])[0]
    alive = {p.value for p in exact.particles if p.log_weight > -math.inf}
    assert alive == {"aa", "ab"}
    assert all("twist" in p.error for p in exact.particles if p.log_weight == -math.inf)
    # the twist of a valid prefix is divided back out: Z is that of the "a…" runs alone
    assert exact.log_evidence == pytest.approx(math.log(0.5 * math.exp(0.5) * (0.5 * math.exp(0.5) + 0.5)))


def test_a_twist_of_minus_infinity_zeroes_a_direct_run():
    lm = coin()
    for seed in range(8):
        with ppl.seed(rng_seed=seed), ppl.trace() as tr:
            value = no_b_first(lm)
        assert (tr.log_weight == -math.inf) == value.startswith("b")
        assert (tr.death is not None) == value.startswith("b")


# --- scores that overflow ----------------------------------------------------------------------


@ppl.program
def huge_scores(lm):
    ctx = ()
    for _ in ppl.steps(max=3):
        s = ppl.gen(lm, ctx, max_tokens=1)
        ctx += s.token_ids
        ppl.score(1e308)
    return lm.decode(ctx)


@pytest.mark.parametrize("algorithm", INTERPRETERS, ids=repr)
def test_scores_summing_to_infinity_are_a_reported_death(algorithm):
    post = algorithm.run(huge_scores, [(coin(),)], seed=0)[0]
    assert post.particles
    assert all(p.log_weight == -math.inf for p in post.particles)
    assert post.log_evidence is None or post.log_evidence == -math.inf
    assert post.diagnostics.deaths and all("overflowed" in r for r in post.diagnostics.deaths)
    assert post.all_dead


def test_scores_summing_to_infinity_under_enumeration():
    exact = Enumeration().run(huge_scores, [(coin(),)])[0]
    assert exact.log_evidence == -math.inf
    assert all("overflowed" in p.error for p in exact.particles)


# --- beam search's answer ------------------------------------------------------------------------


def test_beam_search_returns_the_highest_weight_run_not_the_mode_of_pi():
    """p("a") = 0.9, p("b") = 0.1, score 0.5 for "b": π(a) ∝ 0.9 > π(b) ∝ 0.1·e^0.5 ≈ 0.165,
    but with the program's own proposal the weight is exp(score) alone, so beam picks "b"."""
    lm = TabularLM.bigram({"<s>": {"a": 9, "b": 1}, "a": {"<eos>": 1}, "b": {"<eos>": 1}})

    @ppl.program
    def one_word(lm):
        s = ppl.gen(lm, (), max_tokens=1)
        ppl.score(0.5 if s.text == "b" else 0.0)
        return s.text

    exact = enumerate_program(one_word, (lm,))
    assert exact.best() == "a"  # the mode of π
    beam = BeamSearch(beams=4, expand=8).run(one_word, [(lm,)], seed=0)[0]
    assert beam.best() == "b"


# --- silent coercions ----------------------------------------------------------------------------


def test_settings_and_primitives_refuse_what_they_used_to_coerce():
    lm = coin()
    with pytest.raises(ValueError, match="ess_threshold must be a number in"):
        SMC(4, ess_threshold=True)
    with pytest.raises(TypeError, match="score needs a number"):
        ppl.score("1.5")
    with pytest.raises(TypeError, match="twist needs a number"):
        ppl.twist(True)
    with pytest.raises(ValueError, match="max_tokens must be at least 1"):
        ppl.gen(lm, (), max_tokens=2.9)
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        ppl.gen(lm, (), max_tokens=1, temperature=True)
    with pytest.raises(ValueError, match="particles must be an integer >= 1, got 4.0"):
        ImportanceSampling(4.0)
