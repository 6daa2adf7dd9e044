"""The reference semantics: exact enumeration agrees with a brute-force listing of
sequences straight from the LM's table (1e-9), for random tiny models and programs."""

from __future__ import annotations

import math

import numpyro.distributions as dist
import pytest
from hypothesis import given, settings

import ppl
from ppl.algorithms import Enumeration, enumerate_program
from ppl.backends.tabular import TabularLM

from tiny import tinies


@settings(max_examples=40)
@given(tiny=tinies())
def test_enumeration_matches_brute_force(tiny):
    post = enumerate_program(tiny.program(), (tiny.lm,))
    assert post.log_evidence == pytest.approx(tiny.log_z(), abs=1e-9)
    exact = tiny.posterior()
    law = post.distribution()
    assert set(law) == {s for s, p in exact.items() if p > 0}
    for sequence, probability in exact.items():
        assert law.get(sequence, 0.0) == pytest.approx(probability, abs=1e-9)


def test_enumeration_of_select_sample_and_observe():
    lm = TabularLM.random(["a", "b"], order=2, seed=4)

    @ppl.program
    def mixed(lm):
        word = ppl.select(lm, (), ["a", "bb", "ab"])
        coin = ppl.sample(dist.Bernoulli(probs=0.3))
        ppl.observe(dist.Normal(0.0, 1.0), 0.5 if coin else -1.0)
        return word, int(coin)

    post = enumerate_program(mixed, (lm,))
    scores = {o: math.exp(lm.logprob([ppl.ScoreRequest((), lm.encode(o))])[0]) for o in ["a", "bb", "ab"]}
    total = sum(scores.values())
    normal = {1: math.exp(-0.5 * 0.25), 0: math.exp(-0.5)}
    z = sum(0.3 * normal[1] + 0.7 * normal[0] for _ in [0]) / math.sqrt(2 * math.pi)
    assert post.log_evidence == pytest.approx(math.log(z), abs=1e-6)
    law = post.distribution()
    for (word, coin), probability in law.items():
        expected = scores[word] / total * (0.3 if coin else 0.7) * normal[coin] / math.sqrt(2 * math.pi) / z
        assert probability == pytest.approx(expected, abs=1e-6)


def test_enumeration_rejects_continuous_choices():
    @ppl.program
    def continuous():
        return ppl.sample(dist.Normal(0.0, 1.0))

    with pytest.raises(ppl.NotEnumerableError, match="Normal has no finite support"):
        enumerate_program(continuous)


def test_enumeration_records_raising_traces_with_zero_weight():
    lm = TabularLM.random(["a", "b"], order=1, seed=0)

    @ppl.program
    def fragile(lm):
        s = ppl.gen(lm, (), max_tokens=1)
        if s.text == "b":
            raise RuntimeError("no b please")
        return s.text

    post = Enumeration().run(fragile, [(lm,)])[0]
    assert "RuntimeError: no b please" in post.diagnostics.deaths
    assert set(post.distribution()) <= {"a", ""}
