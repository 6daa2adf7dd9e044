"""Particle Gibbs (conditional SMC), checked against its exact enumerated sweep kernel.

From every reference path x, one sweep of the real ``ParticleGibbs`` code is run with all
of its randomness enumerated; the law of the next reference is the sweep kernel K(x, ·).
Invariant 10 (docs/design.md §5): π K = π for N ≥ 2, to 1e-10 — with twists, rewards at several
β, early EOS (finished references) and rejuvenation moves. The mutant that weights the
reference by its *final* weight at every barrier (a real bug in a peer library) must fail
by more than 1e-3.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import ppl
from ppl.algorithms import ParticleGibbs, enumerate_program
from ppl.algorithms.gibbs import sweep_key
from ppl.randomness import FixedSource, exact_law
from ppl.scheduler import Particle

from tiny import Tiny

TOL = 1e-10
CASES = [
    Tiny.make(2, 2, 0, 1.0, with_twist=True),
    Tiny.make(2, 2, 1, 0.25, with_twist=False),
    Tiny.make(1, 3, 2, 1.0, with_twist=True),
]


def states_of(tiny: Tiny) -> list[tuple]:
    exact = enumerate_program(tiny.program(), (tiny.lm,))
    return [
        (p.value, [[s.value] for s in p.trace if s.kind == "gen"], p.log_weight)
        for p in exact.particles
        if p.log_weight > -math.inf
    ]


def sweep_kernel(tiny: Tiny, particles: int = 2, rejuvenate: int = 0):
    states = states_of(tiny)
    index = {v: i for i, (v, _, _) in enumerate(states)}
    log_gamma = np.array([g for _, _, g in states])
    pi = np.exp(log_gamma - np.logaddexp.reduce(log_gamma))
    matrix = np.zeros((len(states), len(states)))
    program = tiny.program()
    for i, (value, records, _) in enumerate(states):

        class Planted(ParticleGibbs):
            def initial_reference(self, run, source, records=records, value=value):
                key = sweep_key(run.index, 0, 0, 0)
                reference = Particle(run.index, key, source(*key), records=[list(r) for r in records])
                reference.anchor = tiny.terminal(value)  # its final log weight w(x)
                return reference

        algorithm = Planted(particles=particles, sweeps=1, rejuvenate=rejuvenate)

        def run(rng, algorithm=algorithm):
            twin = tiny.lm.with_randomness(rng)
            return algorithm.run(program, [(twin,)], randomness=FixedSource(rng))[0].particles[-1].value

        for probability, new in exact_law(run):
            matrix[i, index[new]] += probability
    return states, pi, matrix


def error(pi, matrix) -> float:
    return float(np.max(np.abs(pi @ matrix - pi)))


KERNELS = [(tiny, 2) for tiny in CASES] + [(Tiny.make(1, 2, 9, 1.0, with_twist=True), 3)]


@pytest.mark.parametrize("case", range(len(KERNELS)))
def test_sweep_leaves_the_posterior_invariant(case):
    """Invariant 10: the exact sweep kernel of the code keeps π, 1e-10 (N = 2, and N = 3)."""
    tiny, particles = KERNELS[case]
    states, pi, matrix = sweep_kernel(tiny, particles)
    assert np.allclose(pi, [tiny.posterior()[v] for v, _, _ in states], atol=TOL)
    assert np.allclose(matrix.sum(axis=1), 1.0, atol=TOL)
    assert error(pi, matrix) < TOL
    assert np.min(np.diag(matrix)) < 1 - 1e-6  # the reference does move


def test_rejuvenation_keeps_the_posterior_invariant():
    states, pi, matrix = sweep_kernel(CASES[0], particles=2, rejuvenate=1)
    assert error(pi, matrix) < TOL


def test_mutant_reference_weighted_by_its_final_weight_fails(monkeypatch):
    """its_hub's bug: the reference weighted by its final score at every step."""
    monkeypatch.setattr(
        ParticleGibbs, "reference_log_weight", lambda self, run, reference: run.state.reference_total
    )
    errors = [error(*sweep_kernel(tiny)[1:]) for tiny in CASES[:2]]
    assert max(errors) > 1e-3, errors


def test_the_reference_asks_the_engine_for_nothing():
    """A conditional sweep generates only for the N − 1 free particles."""
    tiny = Tiny.make(2, 3, 3, 1.0)
    lm = tiny.lm
    post = ParticleGibbs(particles=4, sweeps=3).run(tiny.program(), [(lm,)], seed=0)[0]
    d = post.diagnostics
    assert d.extra["sweeps"] == 3 and len(post.particles) == 3
    assert d.tokens_out == lm.usage.generated_tokens
    assert post.log_evidence is not None and math.isfinite(post.log_evidence)
    assert all(d.resampled) and len(d.ess) == len(d.resampled)


def test_batched_sweeps_follow_the_exact_finite_step_law():
    """Invariant 2 for particle Gibbs: the reference after sweep 2 of 2000 seeded problems vs
    μ₀ K, with μ₀ the exact law of the first (unconditional) sweep's draw; TV below
    ε = sqrt((k ln 2 + ln 1e6) / 2M)."""
    tiny = CASES[0]
    states, _, matrix = sweep_kernel(tiny)
    index = {v: i for i, (v, _, _) in enumerate(states)}
    program = tiny.program()

    def first_sweep(rng):
        twin = tiny.lm.with_randomness(rng)
        return ParticleGibbs(2, sweeps=1).run(program, [(twin,)], randomness=FixedSource(rng))[0].particles[0]

    mu0 = np.zeros(len(states))
    for probability, particle in exact_law(first_sweep):
        mu0[index[particle.value]] += probability
    expected = mu0 @ matrix
    runs = 2000
    results = ParticleGibbs(2, sweeps=2).run(program, [(tiny.lm,)] * runs, seed=0)
    counts = np.bincount([index[post.particles[-1].value] for post in results], minlength=len(states)) / runs
    epsilon = math.sqrt((len(states) * math.log(2) + math.log(1e6)) / (2 * runs))
    tv = 0.5 * np.abs(counts - expected).sum()
    assert tv < epsilon, (tv, epsilon)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="particles must be an integer >= 2"):
        ParticleGibbs(particles=1)
    with pytest.raises(ValueError, match="burn"):
        ParticleGibbs(particles=2, sweeps=2, burn=2)
    assert isinstance(ParticleGibbs(2, 2).run(CASES[0].program(), [(CASES[0].lm,)])[0], ppl.Posterior)
