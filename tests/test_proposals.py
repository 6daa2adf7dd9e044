"""Proposals other than the program's own, and truncation.

Invariant 4: one extend step is properly weighted for any proposal,
Σ_v q(v)·w(v)·1[v = x] = γ(x) (exact, 1e-9), computed by enumerating the real
interpreter's draws. Invariant 12: max-tokens truncation — conditioning on the LM having
ended makes the target π conditioned on length ≤ max (exact weight identity).
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ppl
from ppl.algorithms import SMC, ImportanceSampling, enumerate_program
from ppl.backends.tabular import TabularLM
from ppl.randomness import FixedSource, exact_law


@settings(max_examples=30)
@given(
    size=st.integers(1, 3),
    max_tokens=st.integers(1, 3),
    seeds=st.tuples(st.integers(0, 999), st.integers(0, 999)),
    temperature=st.sampled_from([0.5, 1.0, 2.0]),
    score=st.floats(-2, 2),
)
def test_one_step_is_properly_weighted_for_any_proposal(size, max_tokens, seeds, temperature, score):
    vocab = ["a", "b", "c"][:size]
    target = TabularLM.random(vocab, order=3, seed=seeds[0], name="target")
    proposal = TabularLM.random(vocab, order=3, seed=seeds[1], name="proposal")

    @ppl.program
    def step(lm, q):
        s = ppl.gen(lm, (), max_tokens=max_tokens, temperature=temperature, proposal=q)
        ppl.score(score * len(s))
        return s.token_ids, s.finish_reason

    def run(rng):
        post = ImportanceSampling(1).run(
            step, [(target, proposal.with_randomness(rng))], randomness=FixedSource(rng)
        )
        return post[0].particles[0]

    weighted = {}
    for q, particle in exact_law(run):
        weighted[particle.value] = weighted.get(particle.value, 0.0) + q * math.exp(particle.log_weight)
    request = ppl.GenRequest((), max_tokens, temperature=temperature)
    gamma = {
        (s.token_ids, s.finish_reason): math.exp(s.logprob + score * len(s)) for s in target.support(request)
    }
    assert set(weighted) == set(gamma)
    for x, value in gamma.items():
        assert weighted[x] == pytest.approx(value, rel=1e-9, abs=1e-12)


@settings(max_examples=30)
@given(size=st.integers(1, 3), max_tokens=st.integers(1, 4), seed=st.integers(0, 999))
def test_truncation_conditions_on_length(size, max_tokens, seed):
    lm = TabularLM.random(["a", "b", "c"][:size], order=4, seed=seed)

    @ppl.program
    def finished(lm):
        s = ppl.gen(lm, (), max_tokens=max_tokens)
        ppl.condition(s.eos, "truncated by max_tokens")
        return s.token_ids

    # p(y) for every y with |y| + EOS <= max_tokens, straight from the table
    p = {}
    for n in range(max_tokens):
        for y in itertools.product(range(size), repeat=n):
            logp = (
                sum(lm.next_logprobs(y[:i])[t] for i, t in enumerate(y))
                + lm.next_logprobs(y)[lm.eos_token_id]
            )
            p[y] = math.exp(logp)
    z = sum(p.values())
    post = enumerate_program(finished, (lm,))
    assert math.exp(post.log_evidence) == pytest.approx(z, rel=1e-9)
    for y, probability in post.distribution().items():
        assert probability == pytest.approx(p[y] / z, rel=1e-9)
    # the interpreter's weights: 1 for sequences that ended, 0 for truncated ones
    sampled = SMC(50, ess_threshold=0.0).run(finished, [(lm,)], seed=seed)[0]
    for particle in sampled.particles:
        if particle.status == "dead":
            assert particle.error == "truncated by max_tokens"
            assert len(particle.trace[0].value) == max_tokens
        else:
            assert particle.log_weight == 0.0 and len(particle.value) < max_tokens


def test_gen_with_proposal_needs_one_scoring_call_per_round():
    target = TabularLM.random(["a", "b"], order=2, seed=1, name="target")
    proposal = TabularLM.random(["a", "b"], order=2, seed=2, name="proposal")

    @ppl.program
    def two_steps(lm, q):
        ctx = ()
        for _ in ppl.steps(max=2):
            ctx += ppl.gen(lm, ctx, max_tokens=1, proposal=q).token_ids
        return ctx

    results = SMC(8).run(two_steps, [(target, proposal)] * 3, seed=0)
    assert results.stats.calls[("proposal", "generate")] == 2
    assert results.stats.calls[("target", "logprob")] == 2
    assert results.stats.batch_sizes[("proposal", "generate")][0] == 24
