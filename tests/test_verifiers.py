"""Programmatic verifiers: math-verify equivalence, regexes, writing constraints, reward use."""

from __future__ import annotations

import pytest

from ppl.backends.verifiers import (
    CHECKERS,
    bullets,
    check,
    checker,
    include_words,
    math_equal,
    regex_match,
    verifier,
    word_count,
)
from ppl.interfaces import RewardModel, RewardRequest


@pytest.mark.parametrize(
    "answer, reference",
    [
        ("42", "42"),
        ("The answer is \\boxed{42}.", "42"),
        ("So 6 * 7 = 42", 42),
        ("0.5", "\\frac{1}{2}"),
        ("$\\frac{2}{4}$", "0.5"),
        ("x = 3", "3"),
        ("-17", "-17"),
    ],
)
def test_math_equal_accepts_equivalent_answers(answer, reference):
    assert math_equal(answer, reference)


@pytest.mark.parametrize(
    "answer, reference",
    [("41", "42"), ("The answer is \\boxed{24}.", "42"), ("no number here", "42"), ("", "7"), ("17", "-17")],
)
def test_math_equal_rejects_wrong_answers(answer, reference):
    assert not math_equal(answer, reference)


def test_math_equal_reports_an_unreadable_reference():
    with pytest.raises(ValueError, match="reference"):
        math_equal("1", "")


def test_regex_is_full_match_by_default():
    assert regex_match("  Answer: 12 ", r"Answer: \d+")
    assert not regex_match("The Answer: 12", r"Answer: \d+")
    assert regex_match("The Answer: 12", r"Answer: \d+", full=False)
    with pytest.raises(ValueError, match="regular expression"):
        regex_match("x", "(")


def test_writing_checkers():
    assert include_words("The Fox jumped over a red fence.", ["fox", "red"])
    assert not include_words("The foxes jumped.", ["fox"])  # whole words only
    assert word_count("It's a well-known fact, isn't it?", 6)
    assert not word_count("one two", 3)
    assert bullets("- one\n- two\n\n- three\n", 3)
    assert not bullets("- one\n* two", 2)
    assert not bullets("- one\n-\n", 2)
    for bad in (lambda: include_words("x", "fox"), lambda: word_count("x", -1), lambda: bullets("x", 0)):
        with pytest.raises(ValueError):
            bad()


def test_check_by_name_and_no_answer():
    assert check("exact", " Paris ", "paris")
    assert not check("math", None, "3")
    with pytest.raises(ValueError, match="the checkers are"):
        checker("nope")
    assert set(CHECKERS) >= {"math", "regex", "include_words", "word_count", "bullets", "python_tests"}


def test_verifier_is_a_batched_memoised_reward_model():
    reward = verifier("math")
    assert isinstance(reward, RewardModel)
    requests = [
        RewardRequest(("\\boxed{42}", "42")),
        RewardRequest(("41", "42")),
        RewardRequest(("\\boxed{42}", "42")),
    ]
    assert reward.reward(requests) == [1.0, 0.0, 1.0]
    assert reward.usage.calls == 1 and reward.usage.requests == 2


def test_verifier_inside_a_program():
    import ppl
    from ppl.algorithms import ImportanceSampling
    from ppl.backends import TabularLM

    lm = TabularLM.bigram({"<s>": {"4": 1, "5": 1}, "4": {"<eos>": 1}, "5": {"<eos>": 1}})
    right = verifier("exact")

    @ppl.program
    def guess(lm):
        ctx = ()
        for _ in ppl.steps(max=1):
            ctx += ppl.gen(lm, ctx, max_tokens=2).token_ids
        text = lm.decode(ctx)
        ppl.condition(ppl.reward(right, text, "4") > 0)
        return text

    posterior = ppl.infer(guess, [(lm,)], ImportanceSampling(8), seed=0)[0]
    assert posterior.distribution() == {"4": 1.0}
