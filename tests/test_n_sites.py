"""Several samples in one site: ``ppl.gen(..., n=k)`` is k segments from one engine request,
and its factor in the target is the product of the segments' probabilities.

Checked exactly on tiny tabular LMs (docs/design.md §5): enumeration against a brute-force
listing of segment tuples; properly weighted importance sampling with a proposal (E[Ẑ] = Z,
invariant 5); SMC's evidence with an n-site between barriers (5); MH leaves π invariant (1).
The mutant that weighs an n-site's proposal correction by one segment only must fail, and
one n-site is one request of one engine call, whatever n.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from test_mcmc import kernel, stationarity_error

import ppl
from ppl import primitives
from ppl.algorithms import SMC, ImportanceSampling, enumerate_program
from ppl.backends.tabular import TabularLM
from ppl.interfaces import GenRequest

from tiny import expected_evidence

LM = TabularLM.random(["a", "b"], order=2, seed=3)
PROPOSAL = TabularLM.random(["a", "b"], order=2, seed=8, scale=1.0)
REWARD = {(): 0.3, (0,): -0.7, (1,): 1.1, (0, 0): 0.2, (0, 1): -1.5, (1, 0): 0.9, (1, 1): -0.4}


def segments_of(lm: TabularLM, max_tokens: int) -> dict[tuple[int, ...], float]:
    """Every one-segment outcome (tokens) with its log-probability, from the table directly."""
    out = {}
    eos = lm.eos_token_id
    for length in range(max_tokens + 1):
        for tokens in itertools.product(range(len(lm.vocab)), repeat=length):
            logp = sum(float(lm.next_logprobs(tokens[:i])[t]) for i, t in enumerate(tokens))
            if length < max_tokens:
                logp += float(lm.next_logprobs(tokens)[eos])
            out[tokens] = logp
    return out


def pair_program(proposal=None, n: int = 2):
    @ppl.program
    def pair(lm):
        xs = ppl.gen(lm, (), max_tokens=2, n=n, proposal=proposal)
        assert isinstance(xs, tuple) and len(xs) == n
        ppl.score(sum(REWARD[x.token_ids] for x in xs))
        return tuple(x.token_ids for x in xs)

    return pair


def brute_force(n: int) -> dict:
    """log γ of every n-tuple of segments: Σ log p(segment) + Σ reward."""
    single = segments_of(LM, 2)
    return {
        combination: sum(single[c] + REWARD[c] for c in combination)
        for combination in itertools.product(single, repeat=n)
    }


@pytest.mark.parametrize("n", [2, 3])
def test_enumeration_of_an_n_site_is_the_product_of_segment_probabilities(n):
    exact = enumerate_program(pair_program(n=n), (LM,))
    log_gamma = brute_force(n)
    log_z = float(np.logaddexp.reduce(list(log_gamma.values())))
    assert exact.log_evidence == pytest.approx(log_z, abs=1e-9)
    law = exact.distribution()
    assert set(law) == set(log_gamma)
    for combination, lg in log_gamma.items():
        assert law[combination] == pytest.approx(math.exp(lg - log_z), abs=1e-9)


def test_an_n_site_with_n_one_is_a_list_of_one():
    exact = enumerate_program(pair_program(n=1), (LM,))
    single = segments_of(LM, 2)
    log_z = float(np.logaddexp.reduce([lp + REWARD[s] for s, lp in single.items()]))
    assert exact.log_evidence == pytest.approx(log_z, abs=1e-9)
    assert all(len(v) == 1 for v in exact.distribution())


def is_law(program, particles: int):
    """The exact law of importance sampling's Posterior, its proposal drawn through the
    exhaustive source (the target LM only scores, deterministically)."""
    from ppl.randomness import FixedSource, exact_law

    def run(rng):
        return ImportanceSampling(particles).run(
            program(PROPOSAL.with_randomness(rng)), [(LM,)], randomness=FixedSource(rng)
        )[0]

    return exact_law(run)


def test_importance_sampling_with_a_proposal_is_properly_weighted_at_an_n_site():
    law = is_law(lambda q: pair_program(proposal=q), particles=1)
    log_z = float(np.logaddexp.reduce(list(brute_force(2).values())))
    assert expected_evidence(law) == pytest.approx(math.exp(log_z), rel=1e-9)
    # and the weighted law of the particle is π: E[w · 1(x)] / E[w] = π(x)
    log_gamma = brute_force(2)
    weighted = {}
    for probability, post in law:
        particle = post.particles[0]
        weighted[particle.value] = weighted.get(particle.value, 0.0) + probability * math.exp(
            particle.log_weight
        )
    for combination, lg in log_gamma.items():
        assert weighted[combination] == pytest.approx(math.exp(lg), rel=1e-9)


def test_mutant_n_site_weighted_as_one_segment_fails(monkeypatch):
    """Weighing an n-site's proposal correction by its first segment only is another target."""
    monkeypatch.setattr(
        primitives, "segments_log_weight", lambda targets, segments: targets[0] - segments[0].logprob
    )
    law = is_law(lambda q: pair_program(proposal=q), particles=1)
    log_z = float(np.logaddexp.reduce(list(brute_force(2).values())))
    assert abs(expected_evidence(law) / math.exp(log_z) - 1) > 1e-3


def stepped(n: int = 2):
    """Two steps; each draws n one-token segments in one site and continues the first one."""

    @ppl.program
    def grow(lm):
        ctx = ()
        for _ in ppl.steps(max=2):
            xs = ppl.gen(lm, ctx, max_tokens=1, n=n)
            ppl.twist(0.5 * sum(len(x) for x in xs) - 0.3 * sum(x.eos for x in xs))
            ctx += xs[0].token_ids
            ppl.score(REWARD.get(ctx, 0.0) * 0.5)
            if xs[0].eos:
                break
        return ctx

    return grow


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_smc_evidence_is_unbiased_with_an_n_site_between_barriers(threshold):
    from ppl.randomness import FixedSource, exact_law

    lm = TabularLM.random(["a"], order=2, seed=5)
    program = stepped()
    log_z = enumerate_program(program, (lm,)).log_evidence

    def run(rng):
        algorithm = SMC(2, resample="multinomial", ess_threshold=threshold)
        return algorithm.run(program, [(lm.with_randomness(rng),)], randomness=FixedSource(rng))[0]

    law = exact_law(run)
    assert expected_evidence(law) == pytest.approx(math.exp(log_z), rel=1e-9)
    if threshold == 1.0:
        assert any(post.diagnostics.resampled and post.diagnostics.resampled[0] for _, post in law)


@pytest.mark.parametrize("proposal", ["suffix", "independent"])
def test_mh_leaves_the_posterior_invariant_with_an_n_site(proposal):
    lm = TabularLM.random(["a", "b"], order=2, seed=11)

    @ppl.program
    def two_then_one(lm):
        xs = ppl.gen(lm, (), max_tokens=1, n=2)
        y = ppl.gen(lm, xs[1].token_ids, max_tokens=1)
        ppl.score(REWARD[xs[0].token_ids] + 0.5 * REWARD[y.token_ids])
        return tuple(x.token_ids for x in xs) + (y.token_ids,)

    states, pi, matrix = kernel(two_then_one, lm, proposal=proposal)
    assert len(states) == 27
    assert stationarity_error(pi, matrix) < 1e-10


def test_one_n_site_is_one_request_of_one_engine_call():
    lm = TabularLM.random(["a", "b"], order=2, seed=1)
    results = ImportanceSampling(4).run(pair_program(n=8), [(lm,), (lm,), (lm,)], seed=0)
    assert results.stats.calls[("tabular", "generate")] == 1
    assert results.stats.batch_sizes[("tabular", "generate")] == [12]
    for post in results:
        assert all(len(p.value) == 8 for p in post.particles)
        gen_sites = [s for s in post.particles[0].trace if s.kind == "gen"]
        assert len(gen_sites) == 1 and gen_sites[0].args["request"].n == 8


def test_the_tabular_lm_draws_n_distinct_streams_in_one_request():
    lm = TabularLM.random(["a", "b"], order=2, seed=1)
    (segments,) = lm.generate([GenRequest((), max_tokens=4, n=16, seed=7)])
    assert len(segments) == 16 and len({s.token_ids for s in segments}) > 1
    assert GenRequest((), max_tokens=4, n=16).take([segments]) == tuple(segments)


def test_n_must_be_a_whole_number():
    lm = TabularLM.random(["a"], order=1, seed=0)

    @ppl.program
    def bad(lm):
        return ppl.gen(lm, (), n=0)

    with (
        ppl.seed(rng_seed=0),
        pytest.raises(ValueError, match=r"n must be at least 1 \(a whole number\), got 0"),
    ):
        bad(lm)
