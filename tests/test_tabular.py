"""The tabular LM honours the backend contract the real engines will: stop strings, max
tokens, temperature (0 = greedy), seeds, n, sampled-token log-probabilities that agree with
``logprob``, an exact support that sums to one, a tokenizer, and usage counters."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppl import GenRequest, ScoreRequest
from ppl.backends import TabularLM
from ppl.interfaces import LanguageModel

WORDS = [" the", " cat", " sat", ".", " on", " mat"]


@pytest.fixture
def lm():
    return TabularLM.random(WORDS, order=2, seed=0, scale=1.0)


def test_it_is_a_language_model(lm):
    assert isinstance(lm, LanguageModel)


@settings(max_examples=50)
@given(
    max_tokens=st.integers(1, 6),
    stop=st.sampled_from([(), (".",), (" cat",), (".", " mat")]),
    temperature=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    seed=st.integers(0, 10_000),
)
def test_generation_contract(max_tokens, stop, temperature, seed):
    lm = TabularLM.random(WORDS, order=2, seed=1, scale=1.0)
    prompt = lm.encode(" the cat")
    request = GenRequest(prompt, max_tokens=max_tokens, stop=stop, temperature=temperature, seed=seed, n=3)
    segments = lm.generate([request])[0]
    assert len(segments) == 3
    for s in segments:
        assert s.text == lm.decode(s.token_ids)
        assert len(s) + s.eos <= max_tokens
        assert s.finish_reason in ("eos", "stop", "length")
        if s.finish_reason == "stop":
            assert any(s.text.endswith(x) for x in stop)
        if s.finish_reason == "length":
            assert len(s) == max_tokens
        # no stop string before the end
        assert not any(x in lm.decode(s.token_ids[:-1]) for x in stop)
        assert len(s.token_logprobs) == len(s) + s.eos
        assert s.logprob == pytest.approx(sum(s.token_logprobs), abs=1e-12)
        scored = lm.logprob([ScoreRequest(prompt, s.token_ids, s.eos, temperature)])[0]
        assert scored == pytest.approx(s.logprob, abs=1e-9)
    assert lm.generate([request])[0] == segments  # same seed, same answer
    if temperature == 0:
        assert len({s.token_ids for s in segments}) == 1


@settings(max_examples=30)
@given(
    max_tokens=st.integers(1, 4),
    temperature=st.sampled_from([0.0, 0.7, 1.0]),
    stop=st.sampled_from([(), (".",)]),
)
def test_support_is_exact(max_tokens, temperature, stop):
    lm = TabularLM.random(WORDS[:3] + ["."], order=2, seed=2)
    request = GenRequest((), max_tokens=max_tokens, stop=stop, temperature=temperature)
    support = lm.support(request)
    assert math.fsum(math.exp(s.logprob) for s in support) == pytest.approx(1.0, abs=1e-12)
    assert len({(s.token_ids, s.finish_reason) for s in support}) == len(support)
    # sampling frequencies agree with the support (TV bound, δ = 1e-6)
    draws = 3000
    counts: dict = {}
    for i in range(draws):
        s = lm.generate([GenRequest((), max_tokens, stop, temperature, seed=i)])[0][0]
        counts[s.token_ids] = counts.get(s.token_ids, 0) + 1
    law = {s.token_ids: math.exp(s.logprob) for s in support}
    epsilon = math.sqrt((len(law) * math.log(2) + math.log(1e6)) / (2 * draws))
    tv = 0.5 * sum(abs(law.get(k, 0) - counts.get(k, 0) / draws) for k in set(law) | set(counts))
    assert tv < epsilon


def test_usage_counters_add_up(lm):
    requests = [GenRequest(lm.encode(" the"), max_tokens=3, seed=i, n=2) for i in range(5)]
    answers = lm.generate(requests)
    lm.logprob([ScoreRequest(lm.encode(" the"), lm.encode(" cat sat"))])
    assert lm.usage.calls == 2 and lm.usage.batch_sizes == [5, 1]
    assert lm.usage.requests == 6
    assert lm.usage.generated_tokens == sum(len(s) + s.eos for a in answers for s in a)
    assert lm.usage.prompt_tokens == 5 * 2 * 1 + 3


def test_tokenizer_and_chat(lm):
    ids = lm.encode(" the cat sat on the mat.")
    assert lm.decode(ids) == " the cat sat on the mat."
    assert lm.chat(user=" the cat", system=" the") == lm.encode(" the the cat")
    with pytest.raises(ValueError, match="cannot tokenise ' dog'"):
        lm.encode(" the dog")


def test_bad_tables_and_requests_are_rejected():
    with pytest.raises(ValueError, match="distinct non-empty strings"):
        TabularLM(["a", "a"], {(): [0, 0, 0]}, order=0)
    with pytest.raises(ValueError, match="must have 3 entries"):
        TabularLM(["a", "b"], {(): [0, 0]}, order=0)
    with pytest.raises(ValueError, match="finite or -inf"):
        TabularLM(["a"], {(): [np.nan, 0]}, order=0)
    lm = TabularLM(["a"], {(): [0.0, 0.0]}, order=1)
    with pytest.raises(KeyError, match=r"no next-token distribution for context \(0,\)"):
        lm.generate([GenRequest((0,), max_tokens=1, seed=0)])
    for bad in (
        dict(max_tokens=0),
        dict(max_tokens=1, temperature=-1),
        dict(max_tokens=1, n=0),
        dict(max_tokens=1, stop=("",)),
    ):
        with pytest.raises(ValueError):
            GenRequest((), **bad)
