"""The conformance suite's engine tier: every interpreter once, tiny, on the default model.

The same contract as ``tests/test_conformance.py`` — Posterior types and diagnostics, no
NaN, evidence where the interpreter defines it, one generate call per scheduler round for
all particles, beams or chains of all problems — on the real vLLM engine. Exact seeds are a
tabular-backend property (TESTING.md), so reproducibility is not asserted here. The
interpreters and their engine-tier settings come from the shared table, ``tests/interpreters.py``
(every interpreter but exact enumeration, which must refuse a real model: tested below).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from interpreters import ENGINE_NAMES, INTERPRETERS

import ppl
from ppl.algorithms import MH, Enumeration, power_gen
from ppl.errors import NotEnumerableError


@ppl.program
def short_answer(lm, question):
    prompt = lm.chat(user=question, system="Answer in one short sentence.")
    out = ()
    for _ in ppl.steps(max=2):
        s = ppl.gen(lm, prompt + out, max_tokens=4, temperature=0.8)
        out += s.token_ids
        ppl.twist(-0.1 * len(out))
        if s.eos:
            break
    ppl.score(-0.05 * len(out))
    return lm.decode(out)


QUESTIONS = [("What is 2 + 3?",), ("Name a colour.",)]


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_every_interpreter_on_the_default_model(default_lm, name):
    weighted = INTERPRETERS[name].weighted
    algorithm = INTERPRETERS[name].build(engine=True)
    results = algorithm.run(short_answer, [(default_lm, *q) for q in QUESTIONS], seed=0)
    assert len(results) == 2
    stats = results.stats
    assert 1 <= stats.calls[(default_lm.name, "generate")] <= stats.rounds
    for post in results:
        assert isinstance(post, ppl.Posterior) and not post.all_dead
        assert not np.any(np.isnan(post.log_weights))
        assert isinstance(post.best(), str)
        d = post.diagnostics
        assert d.algorithm == algorithm.name and d.tokens_out >= 1 and d.engine_calls >= 1
        if weighted:
            assert math.isfinite(post.log_evidence)
        else:
            assert post.log_evidence is None


def test_power_sampling_scores_on_the_engine(default_lm):
    """The p^α correction needs a temperature-1 scoring call: the engine answers it."""

    @ppl.program
    def powered(lm, question):
        return power_gen(lm, lm.chat(user=question), 4.0, max_tokens=4).text

    post = MH(chains=2, steps=1).run(powered, [(default_lm, "Say hi.")], seed=0)[0]
    assert not post.all_dead and len(post.particles) == 2


def test_enumeration_refuses_a_real_model_clearly(default_lm):
    with pytest.raises(NotEnumerableError, match="tabular"):
        Enumeration().run(short_answer, [(default_lm, "Hi?")])
