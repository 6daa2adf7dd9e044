"""Constrained generation on the real vLLM engine (docs/design.md, "Constrained generation").

* The correction the engine's answers give — log p(x) from a prompt-log-probability scoring
  call minus the masked log-probability the sampler reported — equals the mass the mask
  allowed computed independently: transformers' float32 logits on the same model and
  prompt, masked with xgrammar's bitmask for the same grammar, token by token. The engine
  runs in bfloat16, so they agree to bf16 resolution, not to float64.
* Constrained outputs always match their regex, grammar, schema or choice.
* What the engine cannot weight exactly is refused with the reason.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

import ppl
from ppl.algorithms import SMC
from ppl.constraints import Constraint
from ppl.interfaces import GenRequest, ScoreRequest

CASES = [
    ("regex", r"The answer is [0-9]{1,3}\."),
    ("grammar", 'start: "yes" | "no" | "maybe " WORD\nWORD: /[a-z]+/'),
    ("json_schema", {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}),
    ("choice", ["Paris", "London", "Rome"]),
]
QUESTIONS = {
    "regex": "Answer briefly: what is 6 times 7?",
    "grammar": "Is the sky blue? Answer yes, no or maybe.",
    "json_schema": "Give the number 42 as JSON with the key n.",
    "choice": "What is the capital of Italy?",
}


def member(kind, value, text: str) -> bool:
    """Membership by other means than xgrammar: Python's re, json, the choice list."""
    if kind == "regex":
        return re.fullmatch(value, text) is not None
    if kind == "grammar":
        return re.fullmatch(r"yes|no|maybe [a-z]+", text) is not None
    if kind == "json_schema":
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            return False
        return isinstance(parsed, dict) and isinstance(parsed.get("n"), int)
    return text in value


@pytest.fixture(scope="module")
def hf_model(default_lm):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(default_lm.path, torch_dtype=torch.float32)
    model.eval()
    return model


def allowed_logmass_from_transformers(default_lm, model, prompt, segment, constraint) -> tuple[float, float]:
    """(Σ log allowed mass, Σ log masked probability of the sampled tokens) from float32 logits."""
    import torch
    import xgrammar as xgr

    tokens = list(segment.token_ids) + ([default_lm.eos_token_id] if segment.eos else [])
    with torch.no_grad():
        logits = model(torch.tensor([list(prompt) + tokens])).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1).numpy()
    info = xgr.TokenizerInfo.from_huggingface(default_lm.tokenizer, vocab_size=logprobs.shape[-1])
    matcher = xgr.GrammarMatcher(xgr.GrammarCompiler(info).compile_grammar(constraint.grammar()))
    bitmask = xgr.allocate_token_bitmask(1, info.vocab_size)
    ids = np.arange(logprobs.shape[-1])
    mass, masked = 0.0, 0.0
    for i, token in enumerate(tokens):
        matcher.fill_next_token_bitmask(bitmask)
        words = bitmask[0].numpy().astype(np.uint32)
        allowed = ((words[ids // 32] >> (ids % 32).astype(np.uint32)) & 1).astype(bool)
        row = logprobs[len(prompt) - 1 + i]
        log_allowed = float(np.logaddexp.reduce(row[allowed]))
        assert allowed[token], f"the engine sampled token {token}, which the mask forbids"
        mass += log_allowed
        masked += float(row[token]) - log_allowed
        assert matcher.accept_token(int(token))
    return mass, masked


@pytest.mark.parametrize("kind, value", CASES, ids=[c[0] for c in CASES])
def test_the_engines_correction_is_the_allowed_mass(default_lm, hf_model, kind, value):
    constraint = Constraint.of(**{kind: value})
    prompt = default_lm.chat(user=QUESTIONS[kind])
    requests = [GenRequest(prompt, 24, seed=s, constraint=constraint) for s in range(3)]
    for segments in default_lm.generate(requests):
        segment = segments[0]
        assert segment.allowed_logmass is None  # the engine cannot report it: gen scores
        score = default_lm.logprob([ScoreRequest(prompt, segment.token_ids, segment.eos)])[0]
        engine_correction = score - segment.logprob
        mass, masked = allowed_logmass_from_transformers(default_lm, hf_model, prompt, segment, constraint)
        positions = len(segment) + segment.eos
        # bfloat16 (8 significant bits) against float32: a few hundredths of a nat per
        # position, and ~2 % of a log-mass far from zero (an unlikely constrained answer's
        # log-probabilities are differences of large logits, each off by ~2^-8 of itself)
        tolerance = 0.05 * positions + 0.05 + 0.02 * abs(mass)
        assert engine_correction == pytest.approx(mass, abs=tolerance), (segment.text, positions)
        assert segment.logprob == pytest.approx(masked, abs=tolerance)
        assert engine_correction <= 1e-6 + tolerance  # a mass is at most 1


@ppl.program
def constrained_answer(lm, kind, value):
    ctx = lm.chat(user="Answer briefly: what is the capital of France, and 6 times 7?")
    s = ppl.gen(lm, ctx, max_tokens=24, **{kind: value})
    ppl.score(-0.05 * len(s))
    return s.text


@pytest.mark.parametrize("kind, value", CASES, ids=[c[0] for c in CASES])
def test_constrained_outputs_match_their_language(default_lm, kind, value):
    post = SMC(4).run(constrained_answer, [(default_lm, kind, value)], seed=1)[0]
    finished = [p for p in post.particles if p.status == "finished"]
    assert finished, post.diagnostics.deaths
    for particle in finished:
        assert member(kind, value, particle.value), particle.value
        gen = next(s for s in particle.trace if s.kind == "gen")
        assert gen.log_weight <= 0.05 * 25 and math.isfinite(gen.log_weight)
    for reason in post.diagnostics.deaths:  # only max_tokens can end a segment early
        assert "before it matched" in reason


def test_what_the_engine_cannot_weight_is_refused(default_lm):
    ctx = default_lm.chat(user="Say yes or no.")
    for settings, why in [({"temperature": 0.7}, "needs temperature 1"), ({"top_p": 0.9}, "top_k / top_p")]:

        @ppl.program
        def program(lm, settings=settings):
            return ppl.gen(lm, ctx, max_tokens=4, choice=["yes", "no"], **settings).text

        post = SMC(2).run(program, [(default_lm,)], seed=0)[0]
        assert post.all_dead and all(why in reason for reason in post.diagnostics.deaths)


def test_truncation_is_the_distribution_the_engine_reports(default_lm):
    """top_k / top_p / min_p go to vLLM's sampler, whose processed log-probabilities include
    them: with top_k = 1 every token has probability 1 under the truncated LM (log 0), while
    the same tokens score below 0 under the untruncated LM; scoring under a truncation is
    refused (prompt log-probabilities are untruncated)."""
    prompt = default_lm.chat(user="Name a colour.")
    request = GenRequest(prompt, 8, seed=0, top_k=1)
    segment = default_lm.generate([request])[0][0]
    assert all(abs(lp) < 1e-4 for lp in segment.token_logprobs), segment.token_logprobs
    nucleus = default_lm.generate([GenRequest(prompt, 8, seed=0, top_p=0.5, min_p=0.05)])[0][0]
    untruncated = default_lm.logprob([ScoreRequest(prompt, nucleus.token_ids, nucleus.eos)])[0]
    assert nucleus.logprob >= untruncated - 0.05 * (len(nucleus) + 1)  # renormalised: never less likely
    with pytest.raises(ValueError, match="untruncated LM only"):
        default_lm.logprob([ScoreRequest(prompt, segment.token_ids, segment.eos, top_p=0.9)])
