"""The vLLM backend on the embedded default model: what only the in-process engine offers.

The backend contract (tokenizer, chat prompt, stop strings, max tokens, n, seeds, greedy
decoding, sampled log-probabilities against scores, usage counters, refused requests) runs
on this backend in tests/backends/test_contract.py; here: the engine's start, one generate
call per scheduler round, prefix-cache counters, and a round larger than the token budget.
"""

from __future__ import annotations

import math

import ppl
from ppl import GenRequest
from ppl.algorithms import SMC, ImportanceSampling


def test_the_engine_starts_once_and_says_how_long_it_took(default_lm):
    assert default_lm.engine_start_seconds is not None


@ppl.program
def short_answer(lm, question):
    """SMC over sentences: twist towards short segments, finish at EOS."""
    ctx = lm.chat(user=question, system="Answer in one short sentence.")
    for _ in ppl.steps(max=3):
        s = ppl.gen(lm, ctx, stop=[". "], max_tokens=12, temperature=0.8)
        ctx += s.token_ids
        ppl.twist(-0.1 * len(s))
        if s.eos:
            break
    ppl.condition("zebra" not in lm.decode(ctx).lower(), "mentioned a zebra")
    return lm.decode(ctx[len(lm.chat(user=question, system="Answer in one short sentence.")) :])


def test_smc_makes_one_generate_call_per_round_on_the_engine(default_lm):
    before = default_lm.usage.calls
    questions = ["What colour is the sky?", "What do cows drink?"]
    results = SMC(4, resample="systematic").run(short_answer, [(default_lm, q) for q in questions], seed=0)
    stats = results.stats
    calls = stats.calls[(default_lm.name, "generate")]
    assert default_lm.usage.calls - before == calls
    # one submission per barrier round of each problem: barriers are per problem, so when one
    # problem's barrier releases its particles a poll before the other's (timing, under load),
    # their rounds are two submissions; both problems' first particles always go in one
    assert calls <= 3 * len(questions) and stats.batch_sizes[(default_lm.name, "generate")][0] == 8
    for post in results:
        assert len(post.particles) == 4 and not post.all_dead
        assert isinstance(post.best(), str) and post.best()
        assert post.diagnostics.tokens_out > 0
    assert math.isfinite(results[0].log_evidence)


def test_usage_counters_add_up(default_lm):
    """The engine's counters and the per-problem diagnostics count the same tokens; the
    particles' shared chat prompt is served from the prefix cache."""
    before = (
        default_lm.usage.generated_tokens,
        default_lm.usage.prompt_tokens,
        default_lm.usage.cached_prompt_tokens,
    )
    problems = [(default_lm, "Tell me a fact about the sea. " * 20), (default_lm, "Name a big city.")]
    results = ImportanceSampling(6).run(short_answer, problems, seed=1)
    assert default_lm.usage.generated_tokens - before[0] == sum(p.diagnostics.tokens_out for p in results)
    assert default_lm.usage.prompt_tokens - before[1] == sum(p.diagnostics.tokens_in for p in results)
    assert default_lm.usage.cached_prompt_tokens - before[2] > 0


def test_a_round_larger_than_the_token_budget_with_seeds(default_lm):
    """Regression: seeded requests whose prompts exceed max_num_batched_tokens together used
    to crash vLLM's CPU runner when chunked prefill split them (off by default here)."""
    prompt = default_lm.chat(user="Tell me about dragons. " * 40)
    assert len(prompt) * 24 > default_lm.engine_settings["max_num_batched_tokens"]
    requests = [GenRequest(prompt + (i,), max_tokens=3, temperature=1.0, seed=i) for i in range(24)]
    answers = default_lm.generate(requests)
    assert len(answers) == 24 and all(len(a[0]) + a[0].eos >= 1 for a in answers)
