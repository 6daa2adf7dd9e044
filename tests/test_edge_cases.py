"""Bad input and bad luck: each gets a clear error with its cause, and nothing computed is lost.

All particles dead is a reported outcome (log Ẑ = −∞, no NaN, queries explain why); a
program that raises kills only its particle and the reason is recorded; a backend that
fails stops the run with an EngineError that keeps the problems already finished; bad
settings are rejected with a ValueError before anything runs.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import numpyro.distributions as dist
import pytest

import ppl
from ppl.algorithms import SMC, ImportanceSampling
from ppl.backends import FunctionReward, TabularLM
from ppl.interfaces import GenRequest


@pytest.fixture
def lm():
    return TabularLM.random(["a", "b"], order=2, seed=0)


@ppl.program
def impossible(lm):
    for _ in ppl.steps(max=3):
        s = ppl.gen(lm, (), max_tokens=2)
        ppl.condition(len(s) > 5, "segments are never longer than 2 tokens")
    return s.text


@pytest.mark.parametrize("algorithm", [SMC(8), SMC(8, ess_threshold=1.0), ImportanceSampling(8)])
def test_all_particles_dead_is_a_reported_outcome(lm, algorithm):
    post = algorithm.run(impossible, [(lm,)], seed=0)[0]
    assert post.all_dead and post.log_evidence == -math.inf
    assert post.diagnostics.dead == 8
    assert not np.any(np.isnan(post.weights)) and not np.any(np.isnan(post.diagnostics.ess))
    assert post.diagnostics.deaths == ["segments are never longer than 2 tokens"] * 8
    with pytest.raises(ppl.AllParticlesDeadError, match="8× segments are never longer"):
        post.best()
    for query in (post.sample, post.majority, post.weighted_vote, post.distribution):
        with pytest.raises(ppl.AllParticlesDeadError):
            query()


def test_a_raising_particle_dies_and_the_run_goes_on(lm):
    @ppl.program
    def fragile(lm):
        ctx = ()
        for _ in ppl.steps(max=2):
            s = ppl.gen(lm, ctx, max_tokens=1)
            ctx += s.token_ids
            if s.text == "b":
                raise ZeroDivisionError("b is not allowed")
        return lm.decode(ctx)

    post = SMC(32).run(fragile, [(lm,)], seed=1)[0]
    dead = [p for p in post.particles if p.status == "dead"]
    assert 0 < len(dead) < 32
    assert all(p.error == "ZeroDivisionError: b is not allowed" and p.log_weight == -math.inf for p in dead)
    assert "b" not in post.best()
    assert post.log_evidence > -math.inf
    deaths = post.diagnostics.deaths
    assert len(deaths) >= len(dead) and set(deaths) == {"ZeroDivisionError: b is not allowed"}


def test_a_reward_model_that_fails_is_an_engine_error_that_keeps_finished_problems(lm):
    def flaky(text):
        if len(text) >= 3:
            raise ConnectionError("reward server went away")
        return 0.0

    reward_model = FunctionReward(flaky, name="flaky")

    @ppl.program
    def scored(lm, rm, prompt, steps):
        ctx = lm.encode(prompt)
        for _ in ppl.steps(max=steps):
            ctx += ppl.gen(lm, ctx, max_tokens=1, temperature=0).token_ids
            ppl.score(ppl.reward(rm, lm.decode(ctx)))
        return lm.decode(ctx)

    with pytest.raises(ppl.EngineError) as caught:
        SMC(4).run(scored, [(lm, reward_model, "a", 1), (lm, reward_model, "b", 3)], seed=0)
    error = caught.value
    assert error.backend == "flaky"
    assert "flaky.reward failed" in str(error) and "reward server went away" in str(error)
    assert isinstance(error.__cause__, ConnectionError)
    assert list(error.completed) == [0]
    assert error.completed[0].best().startswith("a")


def test_an_engine_returning_the_wrong_number_of_answers_is_an_engine_error(lm):
    class Truncating(TabularLM):
        def generate(self, requests):
            return super().generate(requests)[:-1]

    broken = Truncating(lm.vocab, lm._table, order=lm.order, name="truncating")

    @ppl.program
    def once(lm):
        return ppl.gen(lm, (), max_tokens=1).text

    with pytest.raises(ppl.EngineError, match="returned 1 answers for 2 requests"):
        ImportanceSampling(2).run(once, [(broken,)])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SMC(0), "particles must be an integer >= 1, got 0"),
        (lambda: SMC(-3), "particles must be an integer >= 1, got -3"),
        (lambda: SMC(2.5), "particles must be an integer >= 1"),
        (lambda: SMC(True), "particles must be an integer >= 1"),
        (lambda: ImportanceSampling(0), "particles must be an integer >= 1"),
        (lambda: SMC(4, resample="magic"), "unknown resampling scheme 'magic'"),
        (lambda: SMC(4, ess_threshold=-0.1), r"ess_threshold must be a number in \[0, 1\]"),
        (lambda: SMC(4, ess_threshold=2), r"ess_threshold must be a number in \[0, 1\]"),
    ],
)
def test_bad_settings_are_rejected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_run_arguments_are_rejected(lm):
    @ppl.program
    def one(lm):
        return ppl.gen(lm, (), max_tokens=1).text

    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        SMC(2).run(one, [(lm,)], seed=-1)
    with pytest.raises(TypeError, match=r"do not fit program one\(lm\)"):
        SMC(2).run(one, [(lm, "extra")])
    with pytest.raises(ValueError, match="ids must be 1 distinct integers"):
        SMC(2).run(one, [(lm,)], ids=[0, 1])
    with pytest.raises(TypeError, match="algorithm must be a ppl Algorithm"):
        ppl.infer(one, [(lm,)], "smc")
    assert SMC(2).run(one, []) == []


def test_primitive_misuse_is_explained(lm):
    with pytest.raises(TypeError, match="the context must be token ids, not text"):
        ppl.gen(lm, "hello", max_tokens=1)
    with pytest.raises(ValueError, match="max_tokens must be at least 1"):
        ppl.gen(lm, (), max_tokens=0)
    with pytest.raises(TypeError, match="score needs a number"):
        ppl.score("high")
    with pytest.raises(ValueError, match="finite log weight or -inf"):
        ppl.score(float("nan"))
    with pytest.raises(ValueError, match="steps"):
        list(ppl.steps(max=0))
    with pytest.raises(TypeError, match="NumPyro distribution"):
        ppl.sample([0.5, 0.5])
    with pytest.raises(ValueError, match="select needs at least one option"):
        ppl.select(lm, (), [])


def test_direct_execution_needs_randomness(lm):
    @ppl.program
    def one(lm):
        return ppl.gen(lm, (), max_tokens=1).text

    with pytest.raises(ppl.MissingRandomnessError, match=r"with ppl.seed\(rng_seed=0\)"):
        one(lm)
    with ppl.seed(rng_seed=3), ppl.trace() as tr:
        text = one(lm)
    assert tr.sites[0].kind == "gen" and tr.sites[0].value.text == text


def test_direct_execution_samples_and_weighs(lm):
    @ppl.program
    def model(lm):
        x = ppl.sample(dist.Normal(0.0, 1.0))
        ppl.observe(dist.Normal(x, 1.0), 0.3)
        ppl.twist(5.0)
        ppl.score(-1.0)
        return float(x)

    with ppl.seed(rng_seed=0), ppl.trace() as tr:
        x = model(lm)
    expected = float(dist.Normal(x, 1.0).log_prob(0.3)) - 1.0
    assert tr.log_weight == pytest.approx(expected, abs=1e-6)
    with ppl.seed(rng_seed=0):
        assert model(lm) == x


def _refusal(make):
    try:
        make()
    except ValueError as error:
        return str(error)
    return None


@pytest.mark.parametrize("field", ["max_tokens", "temperature", "n", "top_k", "top_p", "min_p"])
def test_a_generation_requests_quick_check_accepts_nothing_the_full_check_refuses(field):
    """``GenRequest`` recognises the common request in one pass and sends the rest to
    ``check``: for every value, the constructor refuses exactly what ``check`` refuses,
    booleans and NaN included (a fast path that said True == 1 would let them through)."""
    values = [True, False, 0, 1, 2, -1, 0.0, 1.0, 0.5, 2.0, -0.5, math.nan, math.inf, "1", None]
    base = GenRequest((1, 2), 4)
    for value in values:
        built = _refusal(lambda value=value: GenRequest((1, 2), **{"max_tokens": 4, field: value}))
        checked = _refusal(lambda value=value: _raw(base, field, value).check())
        assert built == checked, (field, value)


def _raw(request, field, value):
    """``request`` with one field set, unchecked (what ``check`` alone then says)."""
    raw = object.__new__(GenRequest)
    raw.__dict__.update(request.__dict__)
    raw.__dict__[field] = value
    return raw


def test_a_dispatched_request_equals_the_replaced_one():
    request = GenRequest((1, 2, 3), 5, stop=("\n",), temperature=0.7, top_p=0.9)
    sent = request.dispatched(1234, 7)
    assert sent == replace(request, seed=1234, group=7)
    assert hash(sent) == hash(replace(request, seed=1234, group=7))
    assert request.seed is None and request.group is None  # the original is untouched
    assert request.grouped(3) == replace(request, group=3)
