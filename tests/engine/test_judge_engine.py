"""The LM-as-judge's one-request verdicts on the real engine (the embedded SmolLM2): one
prefix-cached, one-token request per judged item (``logprob_token_ids = [Yes, No]``) gives
the scoring path's log odds (two ``prompt_logprobs`` passes per item).

Tolerance: the engine tier runs the model in float32 (tests/conftest.py), where the two paths —
different forward passes (a prompt scored with its answer token appended, in a different
batch, against a prefix-cached prompt ending at the answer) — agreed to 1e-4 on every item; we
allow 1e-3. (In bfloat16 they differ by up to two rounding steps of a logit, 0.25 at |logit| in
[16, 32): 3 of these 6 items did on the 2-core Xeon of 2026-12-02.) A wrong position or token
is off by whole units.
"""

from __future__ import annotations

import pytest

from ppl.backends.judge import Judge
from ppl.backends.prm import DEFAULT_QUESTION, JudgeSteps, ProcessReward
from ppl.interfaces import NextTokenRequest, RewardRequest, ScoreRequest

TOLERANCE = 1e-3

ITEMS = [
    ("What is 7 * 6?", "7 * 6 = 42"),
    ("What is 7 * 6?", "7 * 6 = 48, so the answer is 48."),
    ("What is 14 + 27?", "14 + 27 = 41"),
    ("What is 14 + 27?", "I think it is 31."),
    ("Tom has 5 apples and buys 7 more. How many apples does he have?", "He has 12 apples."),
    ("Tom has 5 apples and buys 7 more. How many apples does he have?", "5 - 7 = -2"),
]
# a problem long enough that its judge prompts' shared prefix fills a KV-cache block (128 tokens on
# CPU; with 8 repeats the shared prefix was 126 tokens and nothing was reused; 12 give 162)
LONG = (
    "A farmer keeps chickens, ducks and geese. "
    * 12
    + "On Monday she counts 12 chickens, 7 ducks and 5 geese; on Tuesday 3 more ducks arrive. "
    "How many birds does she have on Tuesday?"
)


def test_the_embedded_models_yes_and_no_are_one_token_each(default_lm):
    assert len(default_lm.encode("Yes")) == len(default_lm.encode("No")) == 1
    assert Judge(default_lm, DEFAULT_QUESTION).next_token


def test_one_request_verdicts_equal_the_scoring_path(default_lm):
    lm = default_lm
    fast, slow = Judge(lm, DEFAULT_QUESTION), Judge(lm, DEFAULT_QUESTION, next_token=False)
    assert fast.next_token and not slow.next_token
    before = lm.usage.requests
    new = fast.reward([RewardRequest(item) for item in ITEMS])
    assert lm.usage.requests - before == len(ITEMS)  # one engine request per judged item
    before = lm.usage.requests
    old = slow.reward([RewardRequest(item) for item in ITEMS])
    assert lm.usage.requests - before == 2 * len(ITEMS)
    differences = [abs(a - b) for a, b in zip(new, old)]
    print("one-request vs scoring, |difference| per item:", [f"{d:.4f}" for d in differences])
    assert max(differences) <= TOLERANCE, (new, old)
    assert len(set(old)) >= 2, "the items must not all get the same verdict"


def test_both_log_probabilities_are_the_models_next_token_ones(default_lm):
    lm = default_lm
    prompt = Judge(lm, DEFAULT_QUESTION).prompt(*ITEMS[0])
    yes, no = lm.encode("Yes")[0], lm.encode("No")[0]
    [(read_yes, read_no)] = lm.next_token_logprobs([NextTokenRequest(prompt, (yes, no))])
    scored_yes, scored_no = lm.logprob([ScoreRequest(prompt, (yes,)), ScoreRequest(prompt, (no,))])
    assert read_yes < 0 and read_no < 0
    assert read_yes == pytest.approx(scored_yes, abs=TOLERANCE)
    assert read_no == pytest.approx(scored_no, abs=TOLERANCE)


def test_a_problems_particles_share_its_cached_prefix(default_lm):
    lm = default_lm
    judge = Judge(lm, DEFAULT_QUESTION)
    judge.reward([RewardRequest((LONG, "She has 27 birds."))])  # the prefix enters the cache
    before = lm.usage.cached_prompt_tokens
    judge.reward([RewardRequest((LONG, answer)) for answer in ("27", "24 birds", "There are 25.")])
    assert lm.usage.cached_prompt_tokens - before >= 3 * 128


def test_judge_step_verdicts_take_one_request_per_prefix(default_lm):
    lm = default_lm
    steps = ["7 * 6 = 42.", "So the answer is 42."]
    fast = ProcessReward(JudgeSteps(Judge(lm, DEFAULT_QUESTION)), "prod")
    slow = ProcessReward(JudgeSteps(Judge(lm, DEFAULT_QUESTION, next_token=False)), "prod")
    before = lm.usage.requests
    [new] = fast.reward([RewardRequest(("What is 7 * 6?", steps))])
    assert lm.usage.requests - before == 2  # two prefixes, one request each
    [old] = slow.reward([RewardRequest(("What is 7 * 6?", steps))])
    assert new == pytest.approx(old, abs=2 * TOLERANCE)  # two verdicts, each within the tolerance
