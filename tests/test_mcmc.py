"""Metropolis–Hastings over completions, checked against its exact enumerated kernel.

The real ``MH`` interpreter runs one step from every state x of a tiny program with all
of its randomness enumerated (``exact_law``): that is the exact transition kernel K(x, ·)
of the code, not of a model of it. Invariants (docs/design.md §5):

* 1 — π K = π and detailed balance π(x)K(x,y) = π(y)K(y,x), to 1e-10;
* 2 — M seeded chains × T steps of the batched run vs μ₀ Kᵀ: total variation below
  ε = sqrt((k ln 2 + ln(1/δ)) / 2M) with δ = 1e-6 (docs/design.md §5, technique 3);
* 12 — a max-tokens truncation: the chain's law is π conditioned on length ≤ max, to 1e-10;
* 13 — power sampling p^α with a tempered proposal and the exact correction, to 1e-10.

Mutants that must fail (by more than 1e-3): MH without the |y|/|y′| factor, and MH with a
tempered proposal but no correction. And one engine call per round for P problems × C chains.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import ppl
from ppl.algorithms import MH, enumerate_program, power_gen
from ppl.algorithms.mh import chain_key
from ppl.backends import FunctionReward, TabularLM
from ppl.randomness import FixedSource, exact_law
from ppl.scheduler import Particle

from tiny import Tiny

TOL = 1e-10
CASES = [Tiny.make(2, 2, seed, beta, with_twist=True) for seed, beta in [(0, 1.0), (1, 0.25), (2, 4.0)]]
CASES.append(Tiny.make(3, 2, 5, 1.0))


def states_of(program, lm) -> list[tuple]:
    """Every run of ``program`` as (value, record, log γ): the states a chain can be in."""
    exact = enumerate_program(program, (lm,))
    states = []
    for particle in exact.particles:
        if particle.log_weight == -math.inf:
            continue
        records = [[site.value] for site in particle.trace if site.kind in ("gen", "logprob", "reward")]
        states.append((particle.value, records, particle.log_weight))
    return states


def planted(algorithm_class, records):
    class Planted(algorithm_class):
        def initial_state(self, run, source, chain):
            key = chain_key(run.index, chain, 0)
            return Particle(run.index, key, source(*key), records=[list(r) for r in records])

    return Planted


def kernel(program, lm, algorithm_class=MH, **settings) -> tuple[list, np.ndarray, np.ndarray]:
    """(states, π, K) with K[i, j] = P(state j after one MH step from state i), exactly."""
    states = states_of(program, lm)
    index = {value: i for i, (value, _, _) in enumerate(states)}
    log_gamma = np.array([g for _, _, g in states])
    pi = np.exp(log_gamma - np.logaddexp.reduce(log_gamma))
    matrix = np.zeros((len(states), len(states)))
    for i, (_, records, _) in enumerate(states):
        algorithm = planted(algorithm_class, records)(chains=1, steps=1, **settings)

        def run(rng, algorithm=algorithm):
            twin = lm.with_randomness(rng)
            return algorithm.run(program, [(twin,)], randomness=FixedSource(rng))[0].particles[-1].value

        for probability, value in exact_law(run):
            matrix[i, index[value]] += probability
    return states, pi, matrix


def stationarity_error(pi, matrix) -> float:
    return float(np.max(np.abs(pi @ matrix - pi)))


@pytest.mark.parametrize("proposal", ["suffix", "independent"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_mh_leaves_the_posterior_invariant_exactly(case, proposal):
    """Invariant 1: π K = π and detailed balance, 1e-10; π from a brute-force listing."""
    tiny = CASES[case]
    states, pi, matrix = kernel(tiny.program(), tiny.lm, proposal=proposal)
    brute = tiny.posterior()
    assert np.allclose(pi, [brute[v] for v, _, _ in states], atol=TOL)
    assert np.allclose(matrix.sum(axis=1), 1.0, atol=TOL)
    assert stationarity_error(pi, matrix) < TOL
    flow = pi[:, None] * matrix
    assert np.max(np.abs(flow - flow.T)) < TOL
    if proposal == "suffix":
        assert np.min(np.diag(matrix)) < 1 - 1e-6  # the chain does move


def test_mutant_mh_without_length_factor_fails(monkeypatch):
    """Dropping |y|/|y′| breaks invariance (the suffix move's reverse probability)."""
    monkeypatch.setattr(MH, "log_length_ratio", lambda self, current, proposed: 0.0)
    errors = [stationarity_error(*kernel(t.program(), t.lm, proposal="suffix")[1:]) for t in CASES]
    assert max(errors) > 1e-3, errors


def power_program(max_len: int, alpha: float, corrected: bool = True):
    @ppl.program
    def tokens(lm):
        ctx = ()
        for _ in ppl.steps(max=max_len):
            if corrected:
                s = power_gen(lm, ctx, alpha, max_tokens=1)
            else:  # the mutant: a tempered proposal with no correction (QAlign's README at T = 0.7)
                s = ppl.gen(lm, ctx, max_tokens=1, temperature=1 / alpha)
            ctx += s.token_ids
            if s.eos:
                break
        return ctx

    return tokens


def power_target(tiny: Tiny, alpha: float) -> dict:
    """p_LM(x)^α normalised over the truncated sequences, from the next-token table."""
    lm_only = Tiny(tiny.lm, tiny.max_len, tiny.rewards, math.inf)
    log_p = {x: alpha * lp for x, lp in lm_only.brute_force().items()}
    log_z = np.logaddexp.reduce(list(log_p.values()))
    return {x: math.exp(v - log_z) for x, v in log_p.items()}


@pytest.mark.parametrize("alpha", [0.5, 2.0, 4.0])
def test_power_sampling_targets_p_alpha_exactly(alpha):
    """Invariant 13: gen at temperature 1/α + the exact correction has target p^α; MH keeps it."""
    tiny = Tiny.make(3, 2, 8, 1.0)
    target = power_target(tiny, alpha)
    program = power_program(tiny.max_len, alpha)
    law = enumerate_program(program, (tiny.lm,)).distribution()
    assert max(abs(law[x] - target[x]) for x in target) < TOL
    states, pi, matrix = kernel(program, tiny.lm, proposal="suffix")
    assert np.allclose(pi, [target[v] for v, _, _ in states], atol=TOL)
    assert stationarity_error(pi, matrix) < TOL


def test_mutant_tempered_proposal_without_correction_fails():
    """Invariant 13's mutant: without the correction the chain's law is not p^α."""
    tiny = Tiny.make(3, 2, 8, 1.0)
    alpha = 4.0
    target = power_target(tiny, alpha)
    states, _, matrix = kernel(
        power_program(tiny.max_len, alpha, corrected=False), tiny.lm, proposal="suffix"
    )
    pi = np.array([target[v] for v, _, _ in states])
    assert stationarity_error(pi, matrix) > 1e-3
    law = enumerate_program(power_program(tiny.max_len, alpha, False), (tiny.lm,)).distribution()
    assert max(abs(law[x] - target[x]) for x in target) > 1e-3


def test_truncation_conditions_on_length():
    """Invariant 12: one multi-token segment cut at max_tokens; the chain's stationary law is
    p_LM(y) exp(r(y)) over y of length ≤ max (a cut y counts as its prefix), exactly."""
    lm = TabularLM.random(["a", "b"], order=3, seed=4, scale=2.0)
    rewards = {(): 0.3, (0,): -1.0, (1,): 0.5, (0, 0): 1.0, (0, 1): -0.5, (1, 0): 0.0, (1, 1): 2.0}

    @ppl.program
    def one_segment(lm):
        s = ppl.gen(lm, (), max_tokens=2)
        ppl.score(rewards[s.token_ids])
        return s.token_ids

    brute = {}
    for y, r in rewards.items():
        logp = sum(lm.next_logprobs(y[:i])[t] for i, t in enumerate(y))
        if len(y) < 2:
            logp += lm.next_logprobs(y)[lm.eos_token_id]
        brute[y] = math.exp(logp + r)
    total = sum(brute.values())
    states, pi, matrix = kernel(one_segment, lm, proposal="suffix")
    assert np.allclose(pi, [brute[v] / total for v, _, _ in states], atol=TOL)
    assert stationarity_error(pi, matrix) < TOL


def test_batched_chains_follow_the_exact_finite_step_law():
    """Invariant 2: the final states of M = 3000 seeded chains after T = 2 steps vs μ₀ K²."""
    tiny = CASES[0]
    states, pi, matrix = kernel(tiny.program(), tiny.lm, proposal="suffix")
    lm_only = Tiny(tiny.lm, tiny.max_len, tiny.rewards, math.inf).posterior()
    mu0 = np.array([lm_only[v] for v, _, _ in states])  # a fresh run of the program
    expected = mu0 @ matrix @ matrix
    chains, steps = 3000, 2
    post = MH(chains=chains, steps=steps).run(tiny.program(), [(tiny.lm,)], seed=0)[0]
    finals = [post.particles[(c + 1) * steps - 1].value for c in range(chains)]
    index = {v: i for i, (v, _, _) in enumerate(states)}
    counts = np.bincount([index[v] for v in finals], minlength=len(states)) / chains
    epsilon = math.sqrt((len(states) * math.log(2) + math.log(1e6)) / (2 * chains))
    tv = 0.5 * np.abs(counts - expected).sum()
    assert tv < epsilon, (tv, epsilon)
    rates = post.diagnostics.extra["acceptance"]
    assert len(rates) == chains and all(0 <= r <= 1 for r in rates)


def fixed_steps(steps: int):
    @ppl.program
    def program(lm, reward_model, prompt):
        ctx = lm.encode(prompt)
        for _ in ppl.steps(max=steps):
            s = ppl.gen(lm, ctx, max_tokens=2)
            ctx += s.token_ids
        ppl.score(ppl.reward(reward_model, ctx))
        return lm.decode(ctx)

    return program


@pytest.mark.parametrize("proposal", ["independent", "suffix"])
def test_one_engine_call_per_round_for_all_chains_of_all_problems(proposal):
    """P problems × C chains: every round sends all waiting requests in one generate call."""
    lm = TabularLM.random(["a", "b", "c"], order=2, seed=0)
    reward_model = FunctionReward(lambda ids: 0.1 * len(ids), name="length")
    problems, chains, steps, sites = 3, 5, 4, 3
    prompts = [(lm, reward_model, "ab"[: 1 + i % 2]) for i in range(problems)]
    results = MH(chains=chains, steps=steps, proposal=proposal).run(fixed_steps(sites), prompts, seed=0)
    stats = results.stats
    calls = stats.calls[("tabular", "generate")]
    assert calls <= stats.rounds
    assert sum(stats.batch_sizes[("tabular", "generate")]) == lm.usage.requests
    if proposal == "independent":
        # every MH round regenerates every site of every chain of every problem together
        assert calls == sites * (steps + 1)
        assert stats.batch_sizes[("tabular", "generate")] == [problems * chains] * calls
    else:
        # chains keep different prefixes, so rounds differ in size, but never more than one call
        assert max(stats.batch_sizes[("tabular", "generate")]) == problems * chains
        assert lm.usage.requests < problems * chains * sites * (steps + 1)
    for post in results:
        assert len(post.diagnostics.extra["acceptance"]) == chains
        assert len(post.particles) == chains * steps
