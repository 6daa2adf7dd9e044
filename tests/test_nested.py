"""Nested inference: ``ppl.nested(program, args, algorithm)`` is a random choice whose law is
the inner interpreter's output law, drawn exactly — the outer weight is unchanged.

Checked exactly on tiny tabular LMs (docs/design.md §5): the inner interpreter's output law
is enumerated on its own (``exact_law`` of a standalone run), the outer target computed from
it by hand, and the outer interpreters — run with *all* randomness enumerated, inner runs
included — must be properly weighted (IS) and unbiased (SMC, with resampling) for it. The
mutant whose inner evidence leaks into the outer weight must fail. The inner runs' requests
share the outer scheduler's engine calls.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import ppl
from ppl.algorithms import SMC, Enumeration, ImportanceSampling, enumerate_program
from ppl.backends.tabular import TabularLM
from ppl.randomness import FixedSource, exact_law

from tiny import expected_evidence

R1 = {(): -0.4, (0,): 0.8, (1,): -1.2}
R2 = {(): 0.5, (0,): -0.6, (1,): 1.3, (0, 0): 0.1, (0, 1): -0.9, (1, 0): 0.7, (1, 1): -0.2}


@ppl.program
def draft(lm):
    x = ppl.gen(lm, (), max_tokens=1)
    ppl.score(R1[x.token_ids])
    return x.token_ids


def choose(inner_algorithm, steps: bool = False):
    @ppl.program
    def outer(lm):
        for t in ppl.steps(max=2) if steps else [0, 1]:
            if t == 0:
                pool = ppl.nested(draft, (lm,), inner_algorithm)
                best = pool.best()
                ppl.twist(0.7 * len(best) - 0.2 * pool.weights[0])
            else:
                y = ppl.gen(lm, best, max_tokens=1)
                ppl.score(R2[best + y.token_ids])
        return best, y.token_ids

    return outer


def inner_law(lm: TabularLM, algorithm) -> list:
    """The exact output law of the inner interpreter on its own: (probability, Answers)."""

    def run(rng):
        post = algorithm.run(draft, [(lm.with_randomness(rng),)], randomness=FixedSource(rng))[0]
        return ppl.Answers.of(post)

    return exact_law(run)


def outer_gamma(lm: TabularLM, algorithm) -> dict:
    """γ of the outer program, by hand: Σ over the inner law of P(answers) · p(y | best) · exp(R2)."""
    gamma: dict = {}
    for probability, answers in inner_law(lm, algorithm):
        best = answers.best()
        for y, logp in enumerate(lm.next_logprobs(best)):
            tokens = () if y == lm.eos_token_id else (y,)
            value = (best, tokens)
            gamma[value] = gamma.get(value, 0.0) + probability * math.exp(logp + R2[best + tokens])
    return gamma


def outer_law(lm, program, algorithm):
    def run(rng):
        return algorithm.run(program, [(lm.with_randomness(rng),)], randomness=FixedSource(rng))[0]

    return exact_law(run)


LM2 = TabularLM.random(["a", "b"], order=2, seed=2)
LM1 = TabularLM.random(["a"], order=2, seed=6)


def test_outer_importance_sampling_is_properly_weighted_for_the_inner_output_law():
    inner = ImportanceSampling(2)
    gamma = outer_gamma(LM2, inner)
    law = outer_law(LM2, choose(inner), ImportanceSampling(1))
    weighted: dict = {}
    for probability, post in law:
        particle = post.particles[0]
        weighted[particle.value] = weighted.get(particle.value, 0.0) + probability * math.exp(
            particle.log_weight
        )
    assert set(weighted) == set(gamma)
    for value, g in gamma.items():
        assert weighted[value] == pytest.approx(g, rel=1e-9)
    law2 = outer_law(LM2, choose(inner), ImportanceSampling(2))
    assert expected_evidence(law2) == pytest.approx(sum(gamma.values()), rel=1e-9)


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_outer_smc_evidence_is_unbiased_with_a_nested_site_before_a_barrier(threshold):
    inner = ImportanceSampling(2)
    z = sum(outer_gamma(LM1, inner).values())
    law = outer_law(LM1, choose(inner, steps=True), SMC(2, resample="multinomial", ess_threshold=threshold))
    assert expected_evidence(law) == pytest.approx(z, rel=1e-9)
    if threshold == 1.0:
        assert any(post.diagnostics.resampled and post.diagnostics.resampled[0] for _, post in law)


def test_inner_smc_output_law_is_what_the_outer_sees():
    inner = SMC(2, resample="multinomial", ess_threshold=1.0)
    z = sum(outer_gamma(LM1, inner).values())
    law = outer_law(LM1, choose(inner), ImportanceSampling(2))
    assert expected_evidence(law) == pytest.approx(z, rel=1e-9)


def leaky_nested(program, args, algorithm):
    """The mutant of ``ppl.nested`` whose inner Ẑ multiplies the outer weight."""
    from ppl.handlers import Done, Message, Need, apply_stack
    from ppl.nested import InferRequest, SubRun

    request = InferRequest(program, args, algorithm)

    def resolve(results):
        if not results:
            return Need(SubRun(), request)
        return Done(results[0], results[0].log_evidence)  # the inner Ẑ multiplies the outer weight

    return apply_stack(Message("infer", {}, resolve))


def test_mutant_nested_weights_leaking_into_the_outer_weight_fails(monkeypatch):
    monkeypatch.setattr(ppl, "nested", leaky_nested)
    inner = ImportanceSampling(2)
    z = sum(outer_gamma(LM1, inner).values())
    law = outer_law(LM1, choose(inner), ImportanceSampling(2))
    assert abs(expected_evidence(law) / z - 1) > 1e-3


def test_exact_enumeration_nests_an_exact_inner_interpreter_only():
    exact_inner = enumerate_program(draft, (LM2,))
    expected = ppl.Answers.of(exact_inner)
    post = enumerate_program(choose(Enumeration()), (LM2,))
    values = {best for best, _ in post.distribution()}
    assert values == {expected.best()}
    for s in post.particles[0].trace:
        if s.kind == "infer":
            assert s.value == expected and s.log_weight == 0.0
    with pytest.raises(ppl.NotEnumerableError, match="needs an exact inner interpreter"):
        enumerate_program(choose(ImportanceSampling(2)), (LM2,))


def test_inner_particles_share_the_outer_engine_calls():
    problems, outer_particles, inner_particles = 3, 4, 5
    lm = TabularLM.random(["a", "b"], order=2, seed=1)
    results = ImportanceSampling(outer_particles).run(
        choose(ImportanceSampling(inner_particles)), [(lm,)] * problems, seed=0
    )
    assert results.stats.calls[("tabular", "generate")] == 2
    assert results.stats.batch_sizes[("tabular", "generate")] == [
        problems * outer_particles * inner_particles,
        problems * outer_particles,
    ]
    for post in results:
        assert post.diagnostics.tokens_out > problems * outer_particles  # the inner tokens counted
        assert all(p.status == "finished" for p in post.particles)


def test_a_nested_run_is_the_same_whatever_else_is_in_flight():
    lm = TabularLM.random(["a", "b"], order=2, seed=1)
    program = choose(SMC(3, resample="systematic", ess_threshold=1.0), steps=True)
    together = SMC(3, resample="systematic").run(program, [(lm,)] * 3, seed=4)
    alone = SMC(3, resample="systematic").run(program, [(lm,)], seed=4, ids=[1])
    inner = [s.value for p in together[1].particles for s in p.trace if s.kind == "infer"]
    assert inner == [s.value for p in alone[0].particles for s in p.trace if s.kind == "infer"]


def test_direct_execution_runs_the_inner_interpreter_as_a_sub_run():
    lm = TabularLM.random(["a", "b"], order=2, seed=1)
    with ppl.seed(rng_seed=3), ppl.trace() as tr:
        best, _ = choose(ImportanceSampling(4))(lm)
    (site,) = [s for s in tr.sites if s.kind == "infer"]
    assert isinstance(site.value, ppl.Answers) and len(site.value) == 4 and site.log_weight == 0.0
    assert best == site.value.best()
    assert sum(site.value.weights) == pytest.approx(1.0)


def test_nested_refuses_inputs_that_do_not_fit():
    with ppl.seed(rng_seed=0), pytest.raises(TypeError, match=r"do not fit program draft"):
        ppl.nested(draft, (1, 2), ImportanceSampling(2))
    with ppl.seed(rng_seed=0), pytest.raises(TypeError, match=r"nested needs a ppl Algorithm"):
        ppl.nested(draft, (LM1,), "importance")


def test_streamed_and_batched_engines_give_the_same_nested_runs():
    """Invariant 15 with nested sites and n-sites: a streaming engine (continuous-batching
    completion order) changes nothing but the order of calls."""
    from ppl.backends.stepwise import Stepwise

    lm = TabularLM.random(["a", "b"], order=2, seed=1)

    @ppl.program
    def several(lm):
        pool = ppl.nested(draft, (lm,), SMC(2, resample="systematic", ess_threshold=1.0))
        xs = ppl.gen(lm, pool.best(), max_tokens=3, n=3)
        ppl.score(-0.3 * sum(len(x) for x in xs))
        return pool.best(), tuple(x.token_ids for x in xs)

    algorithm = SMC(3, resample="systematic")
    batched = algorithm.run(several, [(lm,)] * 3, seed=5)
    streamed = algorithm.run(several, [(Stepwise(lm, max_num_seqs=4),)] * 3, seed=5)
    for a, b in zip(batched, streamed):
        assert [(p.value, p.log_weight) for p in a.particles] == [
            (p.value, p.log_weight) for p in b.particles
        ]
        assert a.log_evidence == b.log_evidence


def test_nested_runs_nest():
    """A nested run whose program nests another: keys stay non-negative and independent of
    what else is in flight, and the innermost generations still share the engine calls."""
    lm = TabularLM.random(["a", "b"], order=2, seed=1)

    @ppl.program
    def middle(lm):
        pool = ppl.nested(draft, (lm,), ImportanceSampling(2))
        return pool.majority()

    @ppl.program
    def top(lm):
        pool = ppl.nested(middle, (lm,), SMC(2, resample="systematic", ess_threshold=1.0))
        return pool.best()

    together = ImportanceSampling(3).run(top, [(lm,)] * 2, seed=1)
    alone = ImportanceSampling(3).run(top, [(lm,)], seed=1, ids=[1])
    assert together.stats.batch_sizes[("tabular", "generate")] == [2 * 3 * 2 * 2]
    assert all(p.status == "finished" for post in together for p in post.particles)
    assert [p.value for p in together[1].particles] == [p.value for p in alone[0].particles]
    inner = [s.value for p in together[1].particles for s in p.trace if s.kind == "infer"]
    assert inner == [s.value for p in alone[0].particles for s in p.trace if s.kind == "infer"]


@pytest.mark.parametrize(
    "inner", [ImportanceSampling(5), SMC(2, resample="systematic"), Enumeration()], ids=repr
)
def test_an_outer_problem_counts_its_nested_runs_engine_calls_and_tokens(inner):
    """The outer problem's diagnostics count every engine call its requests or its nested
    runs' went into (a call shared by both once) and every token either generated: with one
    problem, the run's own totals."""
    lm = TabularLM.random(["a", "b"], order=2, seed=1)
    results = ImportanceSampling(4).run(choose(inner), [(lm,)], seed=0)
    (post,) = results
    outer_tokens = sum(len(s.value) + s.value.eos for p in post.particles for s in p.trace if s.kind == "gen")
    if isinstance(inner, Enumeration):  # an exact inner run is a sub-run: its calls are its own
        exact = enumerate_program(draft, (lm,)).diagnostics
        assert results.stats.calls[("tabular", "generate")] == 1
        assert post.diagnostics.engine_calls == 1 + 4 * exact.engine_calls
        assert post.diagnostics.tokens_out == outer_tokens + 4 * exact.tokens_out
    else:
        assert post.diagnostics.tokens_out == results.stats.tokens_out > outer_tokens
        assert post.diagnostics.engine_calls == sum(results.stats.calls.values()) == 2
    several = ImportanceSampling(4).run(choose(inner), [(lm,)] * 3, seed=0)
    assert [p.diagnostics.engine_calls for p in several] == [post.diagnostics.engine_calls] * 3


# ---- MH invariance with a nested site (invariant 1) ------------------------------------------


def pooled(inner_algorithm):
    @ppl.program
    def program(lm):
        pool = ppl.nested(draft, (lm,), inner_algorithm)
        best = pool.best()
        y = ppl.gen(lm, best, max_tokens=1)
        ppl.score(R2[best + y.token_ids])
        return pool, y.token_ids

    return program


def nested_target(lm, inner_algorithm) -> dict:
    """π of ``pooled`` by hand, from the inner run's output law on its own: π(A, y) ∝
    P_inner(A) · p(y | best(A)) · exp(R2) — the nested site is a choice drawn from that law."""
    gamma: dict = {}
    for probability, answers in inner_law(lm, inner_algorithm):
        best = answers.best()
        for y, logp in enumerate(lm.next_logprobs(best)):
            tokens = () if y == lm.eos_token_id else (y,)
            value = (answers, tokens)
            gamma[value] = gamma.get(value, 0.0) + probability * math.exp(logp + R2[best + tokens])
    total = sum(gamma.values())
    return {value: g / total for value, g in gamma.items()}


def nested_kernel(lm, program, states: dict, proposal: str):
    """K[i, j] = P(state j after one MH step from state i), with every draw enumerated — the
    position, the regenerated suffix, the inner run it reruns, the acceptance."""
    from test_mcmc import planted

    from ppl.algorithms import MH

    values = list(states)
    index = {v: i for i, v in enumerate(values)}
    matrix = np.zeros((len(values), len(values)))
    for i, value in enumerate(values):
        algorithm = planted(MH, states[value])(chains=1, steps=1, proposal=proposal)

        def run(rng, algorithm=algorithm):
            twin = lm.with_randomness(rng)
            return algorithm.run(program, [(twin,)], randomness=FixedSource(rng))[0].particles[-1].value

        for probability, reached in exact_law(run):
            matrix[i, index[reached]] += probability
    return values, matrix


def nested_states(lm, program) -> dict:
    """Every state of ``program`` (value → its record of answers), from runs of the real code."""
    states = {}
    for _, post in outer_law(lm, program, ImportanceSampling(1)):
        particle = post.particles[0]
        states[particle.value] = [[s.value] for s in particle.trace if s.kind in ("infer", "gen")]
    return states


@pytest.mark.parametrize("proposal", ["suffix", "independent"])
def test_mh_leaves_the_posterior_invariant_with_a_nested_site(proposal):
    """Invariant 1 with a nested site: π K = π to 1e-10, π from the inner output law by hand;
    the suffix move re-draws the nested site (a fresh inner run) or keeps it."""
    inner = ImportanceSampling(2)
    program = pooled(inner)
    pi = nested_target(LM2, inner)
    states = nested_states(LM2, program)
    assert set(states) == set(pi) and len(pi) == 27
    values, matrix = nested_kernel(LM2, program, states, proposal)
    target = np.array([pi[v] for v in values])
    assert np.allclose(matrix.sum(axis=1), 1.0, atol=1e-10)
    assert float(np.max(np.abs(target @ matrix - target))) < 1e-10
    flow = target[:, None] * matrix
    assert np.max(np.abs(flow - flow.T)) < 1e-10  # detailed balance
    assert np.min(np.diag(matrix)) < 1 - 1e-6  # the chain does move


def test_mutant_mh_with_nested_weights_leaking_into_the_outer_weight_fails(monkeypatch):
    inner = ImportanceSampling(2)
    program = pooled(inner)
    pi = nested_target(LM2, inner)
    states = nested_states(LM2, program)  # the records, from the real code

    monkeypatch.setattr(ppl, "nested", leaky_nested)
    values, matrix = nested_kernel(LM2, program, states, "suffix")
    target = np.array([pi[v] for v in values])
    assert float(np.max(np.abs(target @ matrix - target))) > 1e-3
