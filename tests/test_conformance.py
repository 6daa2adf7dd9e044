"""One conformance suite for every interpreter (Lark's habit: the same tests for every parser).

Every interpreter runs the same checks on the tabular backend: the result types and
diagnostics of the common contract, values inside the program's exact support, seeds that
reproduce, batch-order invariance (invariant 15: the problems in flight and their order do
not change a problem's result, not even its outputs for a fixed seed), bad settings
rejected with a clear ValueError, and all-dead or raising programs handled — a reported
outcome, no NaN, no crash. ``tests/engine/test_conformance_engine.py`` runs each
interpreter once on the default model.
"""

from __future__ import annotations

import math

import numpy as np
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
from ppl.errors import AllParticlesDeadError

from tiny import Tiny

# name → (factory, properly weighted evidence?, bad settings that must be rejected)
INTERPRETERS = {
    "importance": (lambda: ImportanceSampling(4), True, [dict(particles=0)]),
    "smc": (
        lambda: SMC(4, resample="systematic"),
        True,
        [dict(particles=-1), dict(particles=2, resample="wild"), dict(particles=2, ess_threshold=2)],
    ),
    "enumeration": (lambda: Enumeration(), True, []),
    "beam": (lambda: BeamSearch(beams=2, expand=2), False, [dict(beams=0), dict(expand=1.5)]),
    "dvts": (lambda: DVTS(subtrees=2, expand=2), False, [dict(subtrees=0), dict(expand=True)]),
    "particle_gibbs": (
        lambda: ParticleGibbs(particles=3, sweeps=2),
        True,
        [dict(particles=1), dict(sweeps=0), dict(particles=2, sweeps=2, burn=5), dict(rejuvenate=-1)],
    ),
    "mh_suffix": (
        lambda: MH(chains=3, steps=3),
        False,
        [dict(chains=0), dict(steps=0), dict(proposal="gibbs"), dict(steps=2, burn=2)],
    ),
    "mh_independent": (lambda: MH(chains=3, steps=3, proposal="independent"), False, [dict(burn=-1)]),
}
NAMES = sorted(INTERPRETERS)
CLASSES = {
    "importance": ImportanceSampling,
    "smc": SMC,
    "enumeration": Enumeration,
    "beam": BeamSearch,
    "dvts": DVTS,
    "particle_gibbs": ParticleGibbs,
    "mh_suffix": MH,
    "mh_independent": MH,
}

TINIES = [Tiny.make(3, 3, seed, 1.0, with_twist=True) for seed in range(4)]


def make(name):
    return INTERPRETERS[name][0]()


def run(name, program, problems, **kwargs):
    return make(name).run(program, problems, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_result_types_and_diagnostics(name):
    tiny = TINIES[0]
    algorithm = make(name)
    results = ppl.infer(tiny.program(), [(tiny.lm,), (tiny.lm,)], algorithm, seed=0)
    support = set(enumerate_program(tiny.program(), (tiny.lm,)).values)
    assert isinstance(results, ppl.Results) and len(results) == 2
    for post in results:
        assert isinstance(post, ppl.Posterior)
        assert post.particles and all(isinstance(p, ppl.WeightedParticle) for p in post.particles)
        assert not np.any(np.isnan(post.log_weights))
        assert math.isclose(float(post.weights.sum()), 1.0)
        assert set(post.values) <= support
        assert post.best() in support
        d = post.diagnostics
        assert isinstance(d, ppl.Diagnostics) and d.algorithm == algorithm.name
        assert d.particles == len(post.particles) and d.dead == 0 and d.wall_time >= 0
        if INTERPRETERS[name][1]:
            assert isinstance(post.log_evidence, float) and math.isfinite(post.log_evidence)
        else:
            assert post.log_evidence is None
        if name != "enumeration":
            assert d.engine_calls >= 1 and d.tokens_out >= 1 and d.tokens_in >= 0
    if name != "enumeration":
        assert results.stats.total_calls("generate") >= 1
    if name.startswith("mh"):
        assert len(results[0].diagnostics.extra["acceptance"]) == 3


@pytest.mark.parametrize("name", NAMES)
def test_seeds_reproduce(name):
    tiny = TINIES[1]
    a = run(name, tiny.program(), [(tiny.lm,)], seed=4)[0]
    b = run(name, tiny.program(), [(tiny.lm,)], seed=4)[0]
    assert a.values == b.values
    assert list(a.log_weights) == list(b.log_weights)
    if name != "enumeration":
        others = [run(name, tiny.program(), [(tiny.lm,)], seed=s)[0].values for s in range(5, 10)]
        assert any(values != a.values for values in others)


def outputs(results):
    return [(post.values, [round(w, 12) for w in post.log_weights], post.log_evidence) for post in results]


@pytest.mark.parametrize("name", NAMES)
def test_batch_order_and_problems_in_flight_change_nothing(name):
    """Invariant 15 for every interpreter: alone, together, or shuffled — the same outputs."""
    programs = {id(t.lm): t.program() for t in TINIES}

    @ppl.program
    def dispatch(lm):
        return programs[id(lm)].fn(lm)

    problems = [(t.lm,) for t in TINIES]
    together = run(name, dispatch, problems, seed=9)
    order = [2, 0, 3, 1]
    shuffled = run(name, dispatch, [problems[i] for i in order], seed=9, ids=order)
    for position, index in enumerate(order):
        assert outputs([shuffled[position]]) == outputs([together[index]])
    alone = run(name, dispatch, [problems[3]], seed=9, ids=[3])
    assert outputs(alone) == outputs([together[3]])


@pytest.mark.parametrize("name", [n for n in NAMES if INTERPRETERS[n][2]])
def test_bad_settings_are_rejected_clearly(name):
    for bad in INTERPRETERS[name][2]:
        with pytest.raises(ValueError) as caught:
            CLASSES[name](**bad)
        message = str(caught.value)
        # the message names the setting or the value that is wrong
        assert any(key in message or repr(value) in message for key, value in bad.items()), (bad, message)


def always_dead():
    @ppl.program
    def program(lm):
        ctx = ()
        for _ in ppl.steps(max=2):
            ctx += ppl.gen(lm, ctx, max_tokens=1).token_ids
            ppl.condition(False, reason="never satisfied")
        return ctx

    return program


def raising():
    @ppl.program
    def program(lm):
        ctx = ppl.gen(lm, (), max_tokens=2).token_ids
        raise ValueError(f"no luck with {ctx}")

    return program


@pytest.mark.parametrize("make_program, reason", [(always_dead, "never satisfied"), (raising, "ValueError")])
@pytest.mark.parametrize("name", NAMES)
def test_all_dead_and_raising_programs_are_reported(name, make_program, reason):
    lm = TINIES[0].lm
    post = run(name, make_program(), [(lm,)], seed=0)[0]
    assert post.all_dead
    assert not np.any(np.isnan(post.log_weights))
    assert post.log_evidence is None or post.log_evidence == -math.inf
    assert post.diagnostics.dead == len(post.particles) >= 1
    assert post.diagnostics.deaths and all(reason in d for d in post.diagnostics.deaths)
    with pytest.raises(AllParticlesDeadError):
        post.best()


@pytest.mark.parametrize("name", NAMES)
def test_some_runs_raising_do_not_stop_the_others(name):
    lm = TINIES[2].lm

    @ppl.program
    def fragile(lm):
        ctx = ()
        for _ in ppl.steps(max=2):
            s = ppl.gen(lm, ctx, max_tokens=1)
            ctx += s.token_ids
            if ctx[:1] == (0,):
                raise RuntimeError("token a is cursed")
            if s.eos:
                break
        return ctx

    post = run(name, fragile, [(lm,)] * 3, seed=1)[2]
    assert not post.all_dead
    assert all(v[:1] != (0,) for v, w in zip(post.values, post.weights) if w > 0)
