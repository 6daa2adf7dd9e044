"""What only the tabular LM offers, beyond the backend contract (test_contract.py runs it too):
an exact support that sums to one and that sampling agrees with, greedy decoding that is the
table's argmax, a tokenizer over its vocabulary and no chat roles, and tables checked when
they are built."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppl import GenRequest
from ppl.backends import TabularLM

WORDS = [" the", " cat", " sat", ".", " on", " mat"]


@pytest.fixture
def lm():
    return TabularLM.random(WORDS, order=2, seed=0, scale=1.0)


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


def test_greedy_is_the_tables_argmax(lm):
    prompt = lm.encode(" the cat")
    (segment,) = lm.generate([GenRequest(prompt, max_tokens=6, temperature=0.0)])[0]
    context = prompt
    for token in segment.token_ids + ((lm.eos_token_id,) if segment.eos else ()):
        assert token == int(np.argmax(lm.next_logprobs(context)))
        context += (token,)


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
