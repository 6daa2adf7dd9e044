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
from interpreters import INTERPRETERS, NAMES

import ppl
from ppl.algorithms import ALGORITHMS, Enumeration, enumerate_program
from ppl.errors import AllParticlesDeadError

from tiny import Tiny

TINIES = [Tiny.make(3, 3, seed, 1.0, with_twist=True) for seed in range(4)]


def make(name):
    return INTERPRETERS[name].build()


def run(name, program, problems, **kwargs):
    return make(name).run(program, problems, **kwargs)


def test_every_interpreter_of_the_registry_is_in_the_table():
    """A new interpreter in ``ppl.algorithms.ALGORITHMS`` cannot be left out of the suites."""
    specs = {spec.name for spec in ALGORITHMS.values()}  # aliases name the same spec
    assert specs == {entry.spec for entry in INTERPRETERS.values()}
    for name in NAMES:
        entry = INTERPRETERS[name]
        assert isinstance(make(name), entry.algorithm_spec.factory)
        if entry.engine_settings is not None:
            assert isinstance(entry.build(engine=True), entry.algorithm_spec.factory)
    assert isinstance(make("enumeration"), Enumeration)


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
        d = post.diagnostics
        pruned = d.extra.get("pruned", 0)  # runs an interpreter cut on purpose (restarts)
        assert set(p.value for p in post.particles if p.error is None) <= support
        assert post.best() in support
        assert isinstance(d, ppl.Diagnostics) and d.algorithm == algorithm.name
        assert d.particles == len(post.particles) and d.dead == pruned and d.wall_time >= 0
        if INTERPRETERS[name].weighted:
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


@pytest.mark.parametrize("name", [n for n in NAMES if INTERPRETERS[n].bad])
def test_bad_settings_are_rejected_clearly(name):
    for bad in INTERPRETERS[name].bad:
        with pytest.raises(ValueError) as caught:
            INTERPRETERS[name].algorithm_spec.factory(**bad)
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


def progress_and_ids_problems():
    programs = {id(t.lm): t.program() for t in TINIES}

    @ppl.program
    def dispatch(lm):
        return programs[id(lm)].fn(lm)

    return dispatch, [(t.lm,) for t in TINIES]


@pytest.mark.parametrize("name", NAMES)
def test_progress_and_ids_are_honoured(name):
    """Every interpreter reports each problem once through ``progress(id, posterior)`` with
    the caller's ids and the very Posteriors it returns, and a problem's result depends only
    on its id and the seed: permuted or offset ids, or the problem alone, change nothing."""
    dispatch, problems = progress_and_ids_problems()
    ids = [7, 3, 11, 5]
    reported = []
    results = run(name, dispatch, problems, seed=2, ids=ids, progress=lambda i, p: reported.append((i, p)))
    assert len(reported) == len(problems) and sorted(i for i, _ in reported) == sorted(ids)
    by_id = dict(reported)
    assert len(results) == len(problems)
    assert all(by_id[i] is post for i, post in zip(ids, results))  # the same objects, in order

    for position, i in enumerate(ids):  # each problem alone, with its id
        alone = run(name, dispatch, [problems[position]], seed=2, ids=[i])
        assert outputs(alone) == outputs([results[position]])

    order = [2, 0, 3, 1]  # problems permuted, each keeping its id
    permuted = run(name, dispatch, [problems[k] for k in order], seed=2, ids=[ids[k] for k in order])
    for position, k in enumerate(order):
        assert outputs([permuted[position]]) == outputs([results[k]])

    offset = [i + 100 for i in ids]  # other ids: each problem is its own run with its new id
    reported.clear()
    moved = run(name, dispatch, problems, seed=2, ids=offset, progress=lambda i, p: reported.append((i, p)))
    assert sorted(i for i, _ in reported) == sorted(offset)
    assert all(dict(reported)[i] is post for i, post in zip(offset, moved))
    alone = run(name, dispatch, [problems[1]], seed=2, ids=[offset[1]])
    assert outputs(alone) == outputs([moved[1]])
    if name != "enumeration":  # the id keys the randomness (exact enumeration has none)
        assert outputs(moved) != outputs(results)

    reported.clear()  # ppl.infer: the ids are the positions
    inferred = ppl.infer(
        dispatch, problems, make(name), seed=2, progress=lambda i, p: reported.append((i, p))
    )
    assert sorted(i for i, _ in reported) == [0, 1, 2, 3]
    assert all(dict(reported)[i] is post for i, post in enumerate(inferred))
