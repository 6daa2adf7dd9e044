"""Programmatic verifiers: math-verify equivalence, regexes, writing constraints, reward use."""

from __future__ import annotations

import pytest

from ppl.backends.verifiers import (
    CHECKERS,
    bullets,
    check,
    checker,
    final_expression,
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


# ---- the math checker's extraction rules (the module's docstring states them) ----------------------


@pytest.mark.parametrize(
    "answer, expression",
    [
        ("The answer is \\boxed{\\frac{1}{2}}, not \\boxed{3}", "3"),  # the last \boxed{}
        ("so \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),  # braces balanced
        (" 5 + 9 = 14\nThe answer is 14.", "14"),  # after "answer is", final period dropped
        ("The answer is: 14 eggs.", "14"),  # a colon, trailing words (a unit)
        ("x = 6*7 = 42", "42"),  # after the last =
        ("$-17$", "-17"),
        ("3x + 1", "3x + 1"),  # single-letter variables
        ("\\sqrt{2}", "\\sqrt{2}"),
    ],
)
def test_math_reads_the_final_expression(answer, expression):
    assert final_expression(answer) == expression


@pytest.mark.parametrize(
    "answer",
    ["8`_@H&b>Cp", "8 apples", "Raj has 8 bags left.", "8@", "<8>", "no number here", "", "$ $", "8;"],
)
def test_garbage_around_a_number_is_not_an_answer(answer):
    assert final_expression(answer) is None
    assert not math_equal(answer, "8")
    assert not check("math", answer, "8")


def test_the_right_expression_passes_and_a_wrong_one_fails():
    assert math_equal("The answer is 8.", "8") and math_equal("\\boxed{8}", 8)
    assert not math_equal("The answer is 9.", "8")
    assert math_equal("so it is 0.5", "\\frac{1}{2}") is False  # a word before it: no final expression
    assert math_equal("= 0.5", "\\frac{1}{2}")
