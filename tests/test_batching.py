"""The batching scheduler: one engine call per round for all particles of all problems,
and invariant 15 — batch size, particle order and the problems in flight change nothing
(on the tabular backend, not even the outputs for a fixed seed)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ppl
from ppl.algorithms import SMC, ImportanceSampling
from ppl.backends import FunctionReward, TabularLM

from tiny import Tiny


def fixed_steps(steps: int):
    @ppl.program
    def program(lm, reward_model, prompt):
        ctx = lm.encode(prompt)
        for _ in ppl.steps(max=steps):
            s = ppl.gen(lm, ctx, max_tokens=2)
            ctx += s.token_ids
            ppl.twist(ppl.reward(reward_model, ctx))
        return lm.decode(ctx)

    return program


@settings(max_examples=20)
@given(particles=st.integers(1, 12), problems=st.integers(1, 5), steps=st.integers(1, 4))
def test_one_generate_call_per_round_whatever_n_and_p(particles, problems, steps):
    lm = TabularLM.random(["a", "b", "c"], order=2, seed=0)
    reward_model = FunctionReward(lambda ids: 0.1 * len(ids), name="length")
    prompts = [(lm, reward_model, "ab"[: 1 + i % 2]) for i in range(problems)]
    results = SMC(particles).run(fixed_steps(steps), prompts, seed=0)
    stats = results.stats
    # every particle generates in every step (the program never stops early), all in one call
    assert stats.calls[("tabular", "generate")] == steps
    assert stats.batch_sizes[("tabular", "generate")] == [particles * problems] * steps
    assert stats.calls[("length", "reward")] == steps
    assert lm.usage.calls == steps and lm.usage.requests == particles * problems * steps
    assert all(post.diagnostics.engine_calls == 2 * steps for post in results)


def test_finished_particles_are_not_extended():
    """Particles that ended (EOS) ask for nothing more: requests = Σ steps taken."""
    tiny = Tiny.make(vocab_size=2, max_len=3, seed=3, beta=1.0)
    lm = tiny.lm
    post = SMC(64, ess_threshold=0.0).run(tiny.program(), [(lm,)], seed=0)[0]
    steps_taken = sum(min(len(v) + 1, tiny.max_len) for v in post.values)
    assert lm.usage.requests == steps_taken
    assert post.diagnostics.tokens_out == steps_taken


def values_and_weights(results):
    return [(post.values, [round(w, 12) for w in post.log_weights]) for post in results]


@pytest.mark.parametrize(
    "algorithm", [SMC(6, resample="systematic"), SMC(5, ess_threshold=1.0), ImportanceSampling(7)]
)
def test_problems_in_flight_do_not_change_outputs(algorithm):
    """Invariant 15: a problem's result is the same alone or among others, in any order."""
    lms = [Tiny.make(3, 3, seed, 1.0, with_twist=True) for seed in range(4)]
    problems = [(t.lm,) for t in lms]
    programs = {id(t.lm): t.program() for t in lms}

    @ppl.program
    def dispatch(lm):
        return programs[id(lm)].fn(lm)

    together = algorithm.run(dispatch, problems, seed=9)
    order = [2, 0, 3, 1]
    shuffled = algorithm.run(dispatch, [problems[i] for i in order], seed=9, ids=order)
    for position, index in enumerate(order):
        assert values_and_weights([shuffled[position]]) == values_and_weights([together[index]])
        alone = algorithm.run(dispatch, [problems[index]], seed=9, ids=[index])
        assert values_and_weights(alone) == values_and_weights([together[index]])


def test_backend_answers_do_not_depend_on_batch_order():
    lm = TabularLM.random(["a", "b", "c"], order=2, seed=1)
    requests = [ppl.GenRequest(lm.encode("ab"[: i % 2 + 1]), max_tokens=4, seed=i) for i in range(20)]
    answers = lm.generate(requests)
    permutation = list(range(20))
    random.Random(0).shuffle(permutation)
    shuffled = lm.generate([requests[i] for i in permutation])
    for position, index in enumerate(permutation):
        assert shuffled[position] == answers[index]
    assert lm.generate(requests[3:4])[0] == answers[3]


def test_seeds_reproduce_and_differ():
    tiny = Tiny.make(3, 3, 4, 1.0)
    a = SMC(16).run(tiny.program(), [(tiny.lm,)], seed=1)[0]
    b = SMC(16).run(tiny.program(), [(tiny.lm,)], seed=1)[0]
    c = SMC(16).run(tiny.program(), [(tiny.lm,)], seed=2)[0]
    assert a.values == b.values
    assert a.values != c.values
